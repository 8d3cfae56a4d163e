"""`bigeye-agent compose …`: `docker compose` for the host's stack file and project.

Also renders `docker-compose.bigeye.yml` for `register` and `sync` (compose_file does the
rendering; this module picks its inputs from the host).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import yaml

from bigeye_agent import access, checks, compose_file, drainer, files
from bigeye_agent import messages as m
from bigeye_agent.compose_file import (
    AGENTS_COMPOSE_FILE_NAME,
    COMPOSE_FILE_NAME,
    ORCHESTRATOR_SERVICE,
)
from bigeye_agent.logs import get_logger
from bigeye_agent.messages import CliError
from orchestrator.hostconfig import HostConfig

log = get_logger(__name__)

Print = Callable[[str], None]


def project(env: Mapping[str, str]) -> str:
    return compose_file.project_name(dict(env))


def compose_argv(host_dir: Path, env: Mapping[str, str], *args: str) -> list[str]:
    return ["docker", "compose", "-f", str(host_dir / COMPOSE_FILE_NAME), "-p", project(env), *args]


def run(
    host_dir: Path, env: Mapping[str, str], args: Sequence[str], retry: str, *, check: bool = True
) -> int:
    """`docker compose … ARGS` with the terminal's stdout/stderr; fails unless it exits 0."""
    argv = compose_argv(host_dir, env, *args)
    log.debug("running", argv=argv)
    try:
        code = subprocess.run(argv, env=dict(env), check=False).returncode
    except FileNotFoundError:
        raise CliError(m.DOCKER_MISSING) from None
    if code != 0 and check:
        raise CliError(m.COMPOSE_FAILED, command=" ".join(args), code=code, retry=retry)
    return code


def require_enabled(host_dir: Path) -> HostConfig:
    """The host's settings, when it runs in Docker Compose mode (else NOT_ENABLED)."""
    text, config = checks.read_host_config(host_dir)
    if text is None or not config.docker_compose_enabled:
        raise CliError(m.NOT_ENABLED)
    if not (host_dir / COMPOSE_FILE_NAME).is_file():
        raise CliError(m.NOT_ENABLED)
    return config


def status(
    host_dir: Path, env: Mapping[str, str], out: Print = print, as_json: bool = False
) -> None:
    require_enabled(host_dir)
    if as_json:
        done = checks.docker(compose_argv(host_dir, env, "ps", "-a", "--format", "json")[1:], env)
        if done.returncode != 0:
            raise CliError(
                m.COMPOSE_FAILED, command="ps", code=done.returncode, retry="compose status"
            )
        state = {"project": project(env), "services": services_of(done.stdout),
                 "drainers": [d.as_json() for d in drainer.drainers(project(env), env)],
                 "long_running": persistent_projects(host_dir, env)}  # fmt: skip
        out(json.dumps(state, indent=2, sort_keys=True))
        return
    run(host_dir, env, ["ps"], "compose status")
    draining = drainer.drainers(project(env), env)
    if draining:
        out("")
        out("Earlier releases finishing the runs they started (removed by the next upgrade):")
        for item in draining:
            done_text = "finished" if item.finished else item.state
            out(f"  {item.name}  version {item.version}  {done_text}")
    for project_, names in persistent_projects(host_dir, env).items():
        out("")
        out(f"Long-running agents (Compose project {project_}, not managed by the orchestrator):")
        subprocess.run(["docker", "compose", "-p", project_, "ps"], env=dict(env), check=False)
        if not names:
            out("  (none running)")


COMPOSE_LABEL = "com.docker.compose.project"


def services_of(text: str) -> list[dict[str, object]]:
    """`docker compose ps --format json` prints one object per line (older: one list)."""
    items: list[object] = []
    for line in text.splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        items += data if isinstance(data, list) else [data]
    keep = ("Service", "Name", "State", "Health", "Image", "Status")
    return [{k: item.get(k) for k in keep} for item in items if isinstance(item, dict)]


def persistent_projects(host_dir: Path, env: Mapping[str, str]) -> dict[str, list[str]]:
    """Other Compose projects run from the host directory: {project: container names}."""
    done = checks.docker(
        ["ps", "-a", "--filter", f"label={COMPOSE_LABEL}.working_dir={host_dir}",
         "--format", '{{.Label "com.docker.compose.project"}}\t{{.Names}}'],
        env,
    )  # fmt: skip
    found: dict[str, list[str]] = {}
    ours = project(env)
    for line in done.stdout.splitlines() if done.returncode == 0 else []:
        name, _, container = line.partition("\t")
        if name and name != ours:
            found.setdefault(name, []).append(container)
    return found


def logs(host_dir: Path, env: Mapping[str, str], service: str | None, follow: bool) -> None:
    require_enabled(host_dir)
    args = ["logs", *(["-f"] if follow else []), *([service] if service else [])]
    run(host_dir, env, args, "compose logs")


def up(host_dir: Path, env: Mapping[str, str], out: Print = print) -> None:
    require_enabled(host_dir)
    apply(host_dir, env, "compose up", out)


def apply(
    host_dir: Path, env: Mapping[str, str], action: str, out: Print = print
) -> tuple[str | None, str | None]:
    """`docker compose up -d`, the one way every command (up, upgrade, sync, register) brings
    the stack to what its file says. When that replaces the orchestrator with another release,
    the old one first gets a drainer (drainer.py), created before anything changes so that a
    failure changes nothing. Returns the orchestrator's version before and after."""
    before = orchestrator_release(host_dir, env)
    old = before.version if before is not None else None
    leaving = (
        before
        if before is not None and drainer.needs_drainer(before, image_version(host_dir, env))
        else None
    )  # the image is looked at only when an orchestrator is there to leave
    if leaving is not None:
        problem = drainer.create(leaving, project(env), env)
        if problem is not None:
            raise CliError(m.DRAINER_NOT_CREATED, version=old, detail=problem, action=action)
    run(host_dir, env, ["up", "-d"], action)
    after = running_version(host_dir, env)
    for name in drainer.retire(project(env), env, keep_version=after):
        out(f"removed {name} (nothing left for it to drain)")
    drainer.resume_all(project(env), env)
    if leaving is not None:
        problem = drainer.start(leaving, project(env), env)
        if problem is not None:
            raise CliError(m.DRAINER_NOT_STARTED, version=old, detail=problem)
        out(m.DRAINING.format(version=old, name=drainer.drainer_name(project(env), str(old))))
    return old, after


def down(host_dir: Path, env: Mapping[str, str]) -> None:
    require_enabled(host_dir)
    drainer.stop_all(project(env), env)  # kept: `compose up` resumes what they had left
    run(host_dir, env, ["down"], "compose down")


def images(host_dir: Path) -> list[str]:
    """The image of every service in the stack file."""
    path = host_dir / COMPOSE_FILE_NAME
    try:
        data = yaml.safe_load(files.read_bytes(path)) or {}
    except yaml.YAMLError as exc:
        detail = str(exc).splitlines()[0]
        raise CliError(m.EXISTING_COMPOSE_INVALID, path=path, detail=detail) from None
    services = data.get("services") if isinstance(data, dict) else None
    found = [s.get("image") for s in (services or {}).values() if isinstance(s, dict)]
    return [image for image in found if isinstance(image, str) and image]


def orchestrator_release(host_dir: Path, env: Mapping[str, str]) -> drainer.Release | None:
    """The orchestrator container of the stack as `docker inspect` shows it, and the version
    its image carries (its OCI label); None when it is not there. A stopped container counts:
    runs its release started still need a drainer across an upgrade."""
    done = checks.docker(
        ["ps", "-aq", "--filter", f"label={COMPOSE_LABEL}={project(env)}",
         "--filter", f"label=com.docker.compose.service={ORCHESTRATOR_SERVICE}"],
        env,
    )  # fmt: skip
    container = done.stdout.split()[0] if done.returncode == 0 and done.stdout.split() else None
    if container is None:
        return None
    try:
        inspect = json.loads(checks.docker(["inspect", container], env).stdout)[0]
    except (ValueError, IndexError):
        return None
    return drainer.Release(inspect=inspect, version=version_label(str(inspect.get("Image")), env))


def running_version(host_dir: Path, env: Mapping[str, str]) -> str | None:
    """The version the running orchestrator's image carries (its OCI label), if it runs."""
    release = orchestrator_release(host_dir, env)
    return release.version if release is not None else None


def upgrade(host_dir: Path, env: Mapping[str, str], out: Print = print) -> None:
    """Pull the channel's images, recreate what changed; job containers keep running, and the
    runs the old release started are finished by its drainer (see drainer.py)."""
    require_enabled(host_dir)
    if run(host_dir, env, ["pull"], "compose upgrade", check=False) != 0:
        for image in images(host_dir):
            if checks.docker(["image", "inspect", image], env).returncode != 0:
                raise CliError(m.PULL_FAILED_MISSING, image=image)
        out(m.PULL_FAILED_LOCAL)
    old, after = apply(host_dir, env, "compose upgrade", out)
    if old == after:
        out(f"the orchestrator is up to date ({after or 'unknown version'})")
    else:
        out(f"upgraded the orchestrator: {old or 'unknown'} → {after or 'unknown'}")


def image_version(host_dir: Path, env: Mapping[str, str]) -> str | None:
    """The version label of the orchestrator image the stack file names (after a pull)."""
    path = host_dir / COMPOSE_FILE_NAME
    try:
        data = yaml.safe_load(files.read_bytes(path)) or {}
        image = data["services"][ORCHESTRATOR_SERVICE]["image"]
    except (yaml.YAMLError, KeyError, TypeError):
        return None
    return version_label(str(image), env)


def version_label(image: str, env: Mapping[str, str]) -> str | None:
    """The orchestrator version an image carries (its OCI version label), if any."""
    label = checks.docker(
        ["image", "inspect", "--format",
         f'{{{{index .Config.Labels "{drainer.VERSION_LABEL}"}}}}', image],
        env,
    ).stdout.strip()  # fmt: skip
    return label or None


def render(
    host_dir: Path,
    config: HostConfig,
    env: Mapping[str, str],
    server_name: str | None,
    rootless: bool | None = None,
) -> Path:
    """Write docker-compose.bigeye.yml for this host (atomically, owned by the dir's owner)."""
    host_id = config.orchestrator.host_id
    if host_id is None:
        raise CliError(m.NOT_REGISTERED)
    socket = checks.docker_socket(env)
    rootless = checks.engine_is_rootless(env) if rootless is None else rootless
    identity = access.orchestrator_identity(host_dir, rootless)
    inputs = compose_file.ComposeInputs(
        host_dir=host_dir,
        host_id=host_id,
        project=project(env),
        orchestrator_image=env.get("BIGEYE_ORCHESTRATOR_IMAGE")
        or config.orchestrator.image
        or f"{compose_file.ORCHESTRATOR_REPOSITORY}:{compose_file.CHANNEL}",
        proxy_image=env.get("BIGEYE_PROXY_IMAGE")
        or f"{compose_file.PROXY_REPOSITORY}:{compose_file.CHANNEL}",
        uid=identity.uid,
        gid=identity.gid,
        docker_socket=str(socket),
        socket_gid=compose_file.socket_gid(str(socket)),
        rootless=rootless,
        metrics_addr=env.get("BIGEYE_METRICS_ADDR") or None,
        tls=True,
        tls_server_name=server_name,
    )
    path = host_dir / COMPOSE_FILE_NAME
    owner = files.owner_of(host_dir)
    files.atomic_write(path, compose_file.render(inputs).encode(), 0o644, owner)
    return path


# ---- a host that already ran agents in Docker Compose mode ----------------------------------


def default_project(directory: Path) -> str:
    """The project name Compose gives a file's directory when nothing names it."""
    name = re.sub(r"[^a-z0-9_-]", "", directory.name.lower())
    return name.lstrip("_-") or "default"


def existing_stack(host_dir: Path, env: Mapping[str, str]) -> tuple[Path, str] | None:
    """(the host's own docker-compose.bigeye.yml, the project it runs as), when there is one.

    Checked before anything is written: its project may not be the orchestrator stack's.
    """
    path = host_dir / COMPOSE_FILE_NAME
    if not path.is_file() or compose_file.is_ours(path):
        return None
    try:
        declared = compose_file.declared_project(path)
    except yaml.YAMLError as exc:
        detail = str(exc).splitlines()[0]
        raise CliError(m.EXISTING_COMPOSE_INVALID, path=path, detail=detail) from None
    running = _project_of(path, env)
    name = declared or running or env.get("COMPOSE_PROJECT_NAME") or default_project(host_dir)
    if name == project(env):
        raise CliError(m.PROJECT_CLASH, path=path, project=name)
    return path, name


def _project_of(path: Path, env: Mapping[str, str]) -> str | None:
    done = checks.docker(
        ["ps", "-a", "--filter", f"label={COMPOSE_LABEL}.config_files={path}",
         "--format", '{{.Label "com.docker.compose.project"}}'],
        env,
    )  # fmt: skip
    names = done.stdout.split() if done.returncode == 0 else []
    return names[0] if names else None


def keep_existing_stack(host_dir: Path, stack: tuple[Path, str], out: Print) -> None:
    """Back up the host's own stack file, and keep its services' definition under their project.

    docker-compose.agents.yml is that file with its project named: `docker compose -f
    docker-compose.agents.yml ps` (or up, logs) addresses the very containers that run now.
    """
    path, name = stack
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    backup = host_dir / f"{COMPOSE_FILE_NAME}.bak-{stamp}"
    files.copy_file(path, backup)
    out(f"backed up {path.name} as {backup.name}")
    text = files.read_bytes(path).decode("utf-8", errors="replace")
    header = (
        f"# The long-running agent services of this host, from {backup.name}: they keep\n"
        f"# running as the Compose project {name}, beside the orchestrator's stack.\n"
    )
    if compose_file.declared_project(path) is None:
        header += f"name: {json.dumps(name)}\n"
    target = host_dir / AGENTS_COMPOSE_FILE_NAME
    files.atomic_write(target, (header + text).encode(), 0o644, files.owner_of(host_dir))
    out(f"its services keep running as the Compose project {name}: {target.name} describes them")
