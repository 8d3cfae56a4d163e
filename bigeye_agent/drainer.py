"""The retired release's drainer, started by `compose upgrade`.

Job runs stay on the release queue of the orchestrator release that took them
(orchestrator/releases.py).
When an upgrade replaces release N by N+1, N's runs still need an N worker: the drainer is the
old image, run as the old container was (same user, environment, mounts, networks, hardening),
with the command `drain`. It finishes N's runs and exits 0 once none is left; stopped earlier
it exits non-zero, so that its `on-failure` restart policy brings it back after a reboot.

It is a plain container of the stack's project (by label, not a Compose service: its image is
the *old* image id, which the compose file no longer names): `compose status` lists it,
`compose down` stops it, `compose up` resumes it, and the next `upgrade` removes it once done.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bigeye_agent import checks

DRAINER_LABEL = "com.bigeye.orchestrator.drains-version"
PROJECT_LABEL = "com.bigeye.orchestrator.compose-project"
VERSION_LABEL = "org.opencontainers.image.version"
DRAIN_COMMAND = "drain"
RESTART_POLICY = "on-failure"

Print = Callable[[str], None]


@dataclass(frozen=True)
class Release:
    """The orchestrator container that runs now, as `docker inspect` shows it."""

    inspect: dict[str, Any]
    version: str | None

    @property
    def image_id(self) -> str:
        return str(self.inspect.get("Image") or "")


@dataclass(frozen=True)
class Drainer:
    name: str
    version: str
    state: str  # Docker's: running, exited, restarting, …
    exit_code: int

    @property
    def finished(self) -> bool:
        return self.state == "exited" and self.exit_code == 0

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "drains_version": self.version,
            "state": self.state,
            "finished": self.finished,
        }


def drainer_name(project: str, version: str) -> str:
    return f"{project}-drain-{re.sub(r'[^A-Za-z0-9_.-]', '-', version)}"


def needs_drainer(before: Release | None, after_version: str | None) -> bool:
    """A drainer only when the release changed: the same version is the same release queue,
    whose runs the new container serves itself."""
    return (
        before is not None
        and before.version is not None
        and after_version is not None
        and before.version != after_version
    )


def create_argv(release: Release, project: str, env_file: Path) -> tuple[list[str], list[str]]:
    """`docker create …` for the release's drainer, and the networks to join before start.

    Pure: everything comes from the old container's inspect output, never from the compose
    file (which names the new image and may have changed with it).
    """
    config: dict[str, Any] = release.inspect.get("Config") or {}
    host: dict[str, Any] = release.inspect.get("HostConfig") or {}
    version = release.version or "unknown"
    argv = [
        "create",
        "--name", drainer_name(project, version),
        "--label", f"{DRAINER_LABEL}={version}",
        "--label", f"{PROJECT_LABEL}={project}",
        "--env-file", str(env_file),
        "--restart", RESTART_POLICY,
    ]  # fmt: skip
    if config.get("User"):
        argv += ["--user", str(config["User"])]
    if config.get("StopTimeout") is not None:
        argv += ["--stop-timeout", str(config["StopTimeout"])]
    if host.get("ReadonlyRootfs"):
        argv.append("--read-only")
    if host.get("Init"):
        argv.append("--init")
    for path, options in sorted((host.get("Tmpfs") or {}).items()):
        argv += ["--tmpfs", f"{path}:{options}" if options else path]
    for mount in release.inspect.get("Mounts") or []:
        argv += ["--mount", _mount_spec(mount)]
    for flag, key in (
        ("--cap-drop", "CapDrop"),
        ("--cap-add", "CapAdd"),
        ("--security-opt", "SecurityOpt"),
        ("--group-add", "GroupAdd"),
        ("--add-host", "ExtraHosts"),
        ("--dns", "Dns"),
    ):
        for value in host.get(key) or []:
            argv += [flag, str(value)]
    log_config = host.get("LogConfig") or {}
    if log_config.get("Type"):
        argv += ["--log-driver", str(log_config["Type"])]
        for key, value in sorted((log_config.get("Config") or {}).items()):
            argv += ["--log-opt", f"{key}={value}"]
    for flag, key in (("--memory", "Memory"), ("--pids-limit", "PidsLimit")):
        if host.get(key):
            argv += [flag, str(host[key])]
    if host.get("NanoCpus"):
        argv += ["--cpus", f"{host['NanoCpus'] / 1e9:g}"]
    networks = sorted((release.inspect.get("NetworkSettings") or {}).get("Networks") or {})
    if networks:
        argv += ["--network", networks[0]]
    argv += [release.image_id, DRAIN_COMMAND]
    return argv, networks[1:]


def _mount_spec(mount: dict[str, Any]) -> str:
    kind = str(mount.get("Type") or "bind")
    source = mount.get("Name") if kind == "volume" else mount.get("Source")
    spec = f"type={kind},source={source},target={mount.get('Destination')}"
    return spec if mount.get("RW", True) else spec + ",readonly"


def env_lines(release: Release) -> str:
    """The old container's environment, for `--env-file` (kept off the command line)."""
    config: dict[str, Any] = release.inspect.get("Config") or {}
    return "".join(f"{item}\n" for item in config.get("Env") or [] if "\n" not in item)


def parse_drainers(lines: str) -> list[Drainer]:
    """`docker inspect` output of the drainer containers → what status and upgrade need."""
    try:
        data = json.loads(lines or "[]")
    except ValueError:
        return []
    found = []
    for item in data if isinstance(data, list) else []:
        labels = (item.get("Config") or {}).get("Labels") or {}
        state = item.get("State") or {}
        found.append(
            Drainer(
                name=str(item.get("Name", "")).lstrip("/"),
                version=str(labels.get(DRAINER_LABEL, "")),
                state=str(state.get("Status", "")),
                exit_code=int(state.get("ExitCode") or 0),
            )
        )
    return sorted(found, key=lambda d: d.name)


# ---- the docker calls ---------------------------------------------------------------------


def drainers(project: str, env: Mapping[str, str]) -> list[Drainer]:
    """The project's drainer containers, in any state."""
    done = checks.docker(
        ["ps", "-aq", "--filter", f"label={PROJECT_LABEL}={project}",
         "--filter", f"label={DRAINER_LABEL}"],
        env,
    )  # fmt: skip
    ids = done.stdout.split() if done.returncode == 0 else []
    if not ids:
        return []
    return parse_drainers(checks.docker(["inspect", *ids], env).stdout)


def create(release: Release, project: str, env: Mapping[str, str]) -> str | None:
    """Create (not start) the release's drainer, joined to all its networks. Done before the
    stack is recreated, so that a drainer that cannot exist stops the upgrade while nothing
    has changed. Returns the problem, or None."""
    name = drainer_name(project, release.version or "unknown")
    existing = {d.name: d for d in drainers(project, env)}
    if name in existing and not existing[name].finished:
        return None  # an earlier upgrade's drainer of this release: it carries on
    if name in existing:
        checks.docker(["rm", name], env)
    with tempfile.TemporaryDirectory(prefix="bigeye-drain-") as directory:
        env_file = Path(directory) / "env"
        env_file.touch(mode=0o600)
        env_file.write_text(env_lines(release))
        argv, more_networks = create_argv(release, project, env_file)
        created = checks.docker(argv, env)
    if created.returncode != 0:
        return _first_line(created.stderr)
    for network in more_networks:
        joined = checks.docker(["network", "connect", network, name], env)
        if joined.returncode != 0:
            checks.docker(["rm", "-f", name], env)
            return _first_line(joined.stderr)
    return None


def start(release: Release, project: str, env: Mapping[str, str]) -> str | None:
    """Start the drainer `create` made (a no-op when it runs). Returns the problem, or None."""
    started = checks.docker(["start", drainer_name(project, release.version or "unknown")], env)
    return None if started.returncode == 0 else _first_line(started.stderr)


def retire(project: str, env: Mapping[str, str], *, keep_version: str | None) -> list[str]:
    """Remove finished drainers, and those of `keep_version`'s release (the running
    orchestrator serves its own runs): stopped gracefully first. Returns the names removed."""
    removed = []
    for drainer in drainers(project, env):
        if drainer.finished or drainer.version == keep_version:
            if not drainer.finished:
                checks.docker(["stop", drainer.name], env, timeout=60)
            if checks.docker(["rm", drainer.name], env).returncode == 0:
                removed.append(drainer.name)
    return removed


def stop_all(project: str, env: Mapping[str, str]) -> None:
    """`compose down`: stop (never remove) the drainers; `compose up` resumes them."""
    for drainer in drainers(project, env):
        if drainer.state in ("running", "restarting"):
            checks.docker(["stop", drainer.name], env, timeout=60)


def resume_all(project: str, env: Mapping[str, str]) -> None:
    """`compose up`: start again the drainers that were stopped before they finished."""
    for drainer in drainers(project, env):
        if drainer.state in ("exited", "created") and not drainer.finished:
            checks.docker(["start", drainer.name], env)


def _first_line(text: str) -> str:
    with contextlib.suppress(IndexError):
        return text.strip().splitlines()[0]
    return "no error output"
