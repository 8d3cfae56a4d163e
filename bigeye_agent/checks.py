"""The checks `register` runs before writing anything: Docker, arguments, the host directory."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from bigeye_agent import messages as m
from bigeye_agent.logs import get_logger
from bigeye_agent.messages import CliError
from orchestrator.contract import AGENT_TYPES, is_valid_host_id
from orchestrator.hostconfig import CONFIG_FILE_NAME, ConfigError, HostConfig, parse_host_config

log = get_logger(__name__)

DOCKER_TIMEOUT_SECONDS = 60.0
_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")


def docker(
    args: Sequence[str], env: Mapping[str, str], timeout: float = DOCKER_TIMEOUT_SECONDS
) -> subprocess.CompletedProcess[str]:
    """`docker ARGS` with its output captured (found on env's PATH)."""
    argv = ["docker", *args]
    log.debug("running", argv=argv)
    try:
        return subprocess.run(
            argv, env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise CliError(m.DOCKER_MISSING) from None
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"timed out after {timeout:.0f}s")


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "no output")


def check_compose_v2(env: Mapping[str, str]) -> str:
    """The Compose version (`2.x.y`); fails unless `docker compose version` reports V2."""
    done = docker(["compose", "version"], env)
    found = _VERSION.search(done.stdout) if done.returncode == 0 else None
    if found is None or int(found.group(1)) < 2:
        detail = _first_line(done.stdout) if done.returncode == 0 else _first_line(done.stderr)
        raise CliError(m.COMPOSE_NOT_V2, found=detail)
    return found.group(0).lstrip("v")


def check_docker_access(env: Mapping[str, str]) -> None:
    """`docker ps` works for this user, without sudo."""
    done = docker(["ps"], env)
    if done.returncode == 0:
        return
    if "permission denied" in done.stderr.lower():
        raise CliError(m.DOCKER_PERMISSION)
    raise CliError(m.DOCKER_UNREACHABLE, detail=_first_line(done.stderr))


def check_host_id(host_id: str) -> None:
    if not is_valid_host_id(host_id):
        raise CliError(m.INVALID_HOST_ID, host_id=host_id)


def parse_agents(values: Sequence[str]) -> dict[str, str]:
    """`--agent TYPE=IMAGE` values as {type: image}; a later value for a type wins."""
    agents: dict[str, str] = {}
    for value in values:
        agent, sep, image = value.partition("=")
        agent, image = agent.strip(), image.strip()
        if not sep or not agent:
            raise CliError(m.BAD_AGENT_SPEC, value=value)
        if agent not in AGENT_TYPES:
            raise CliError(m.UNKNOWN_AGENT, value=value, agent=agent)
        if not image or any(ch.isspace() for ch in image):
            raise CliError(m.BAD_IMAGE, value=value)
        agents[agent] = image
    return agents


def check_host_dir(host_dir: Path) -> None:
    if not host_dir.is_dir():
        raise CliError(m.HOST_DIR_MISSING, path=host_dir)
    if not os.access(host_dir, os.W_OK | os.X_OK):
        raise CliError(m.HOST_DIR_NOT_WRITABLE, path=host_dir)


def read_host_config(host_dir: Path) -> tuple[str | None, HostConfig]:
    """(the file's text or None when absent, its parsed settings) — with the one loader."""
    path = host_dir / CONFIG_FILE_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, HostConfig()
    except OSError as exc:
        raise CliError(m.READ_FAILED, path=path, detail=exc.strerror or exc) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(m.READ_FAILED, path=path, detail=f"not UTF-8 text ({exc.reason})") from None
    try:
        return text, parse_host_config(text, path)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


# ---- where this host runs --------------------------------------------------------------------

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_KUBERNETES_WORDS = ("kubernetes", "k8s", "helm")


def kubernetes_reason(
    env: Mapping[str, str], data: Mapping[str, object], service_account: Path = SERVICE_ACCOUNT
) -> str | None:
    """Why this host is a Kubernetes host (its settings say so, or this runs in a pod)."""
    if env.get("KUBERNETES_SERVICE_HOST"):
        return "KUBERNETES_SERVICE_HOST is set: this runs inside a pod"
    if service_account.is_dir():
        return f"{service_account} exists: this runs inside a pod"
    for key in ("kubernetes_enabled", "helm_enabled"):
        if data.get(key) is True:
            return f"bigeye_agent.yml sets {key}: true"
    section = data.get("kubernetes")
    if isinstance(section, Mapping) and section.get("enabled") is not False:
        return "bigeye_agent.yml has a kubernetes: section"
    for key in ("deployment", "deployment_mode", "install_mode", "mode"):
        value = data.get(key)
        if isinstance(value, str) and value.strip().lower() in _KUBERNETES_WORDS:
            return f"bigeye_agent.yml sets {key}: {value.strip()}"
    return None


def check_not_kubernetes(env: Mapping[str, str], data: Mapping[str, object]) -> None:
    why = kubernetes_reason(env, data)
    if why is not None:
        raise CliError(m.KUBERNETES, why=why)


DEFAULT_SOCKET = Path("/var/run/docker.sock")


def docker_socket(env: Mapping[str, str]) -> Path:
    """The engine's unix socket, as the docker CLI finds it: DOCKER_HOST, the current context,
    the default socket, else a rootless engine's ($XDG_RUNTIME_DIR/docker.sock)."""
    host = env.get("DOCKER_HOST", "").strip()
    if host:
        if not host.startswith("unix://"):
            raise CliError(m.SOCKET_NOT_UNIX, host=host)
        path = Path(host.removeprefix("unix://"))
    else:
        done = docker(["context", "inspect", "--format", "{{.Endpoints.docker.Host}}"], env)
        endpoint = done.stdout.strip() if done.returncode == 0 else ""
        path = (
            Path(endpoint.removeprefix("unix://"))
            if endpoint.startswith("unix://")
            else (DEFAULT_SOCKET)
        )
        rootless = Path(env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}") / "docker.sock"
        if path == DEFAULT_SOCKET and not _is_socket(path) and _is_socket(rootless):
            path = rootless
    if not _is_socket(path):
        raise CliError(m.SOCKET_MISSING, path=path)
    return path


def engine_is_rootless(env: Mapping[str, str]) -> bool:
    """Whether the engine runs rootless (in a user namespace of an unprivileged user)."""
    done = docker(["info", "--format", "{{json .SecurityOptions}}"], env)
    return done.returncode == 0 and "name=rootless" in done.stdout


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.stat().st_mode)
    except OSError:
        return False
