"""Renders `docker-compose.bigeye.yml` from the packaged template.

Values are substituted into the parsed template (never spliced into YAML text), so a host path
or image name cannot change the file's structure. The stack holds the orchestrator and the
socket proxy only: long-running agent services the host already runs under Docker Compose stay
in their own project, so that no second copy of them is ever started.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from orchestrator.version import VERSION

COMPOSE_FILE_NAME = "docker-compose.bigeye.yml"
DEFAULT_PROJECT = "bigeye-agent"
ORCHESTRATOR_SERVICE = "bigeye-agent-orchestrator"
PROXY_SERVICE = "docker-socket-proxy"
ORCHESTRATOR_REPOSITORY = "docker.io/bigeyedata/agent-orchestrator"
PROXY_REPOSITORY = "docker.io/bigeyedata/agent-docker-socket-proxy"
DOCKER_SOCKET = "/var/run/docker.sock"
AGENTS_COMPOSE_FILE_NAME = "docker-compose.agents.yml"
# Compose files an operator may already run agent services from, in the host directory.
EXISTING_COMPOSE_FILES = (
    "docker-compose.yml",
    "docker-compose.yaml",
    "compose.yml",
    "compose.yaml",
)
HEADER_MARK = "rendered by `bigeye-agent`"
TLS_ENV = {
    "BIGEYE_TLS_CERT": "/etc/bigeye/agent_config/mtls.pem",
    "BIGEYE_TLS_KEY": "/etc/bigeye/agent_config/mtls.key",
    "BIGEYE_TLS_CA": "/etc/bigeye/agent_config/bigeye_workflows_ca.pem",
}
# Images on a registry on the engine host's loopback are refused by the proxy unless this is 1
# in the environment `register`/`sync` render the stack from (deploy/socket-proxy/README.md).
LOOPBACK_REGISTRY_ENV = "BIGEYE_PROXY_ALLOW_LOOPBACK_REGISTRY"
_PLACEHOLDER = re.compile(r"@([a-z_]+)@")


def channel(version: str = VERSION) -> str:
    """The moving image tag of a release line: `1` for 1.x.y, `0.1` for 0.1.y (0.x may break)."""
    parts = version.split("+")[0].split(".")
    major = parts[0] if parts and parts[0].isdigit() else "0"
    if major != "0":
        return major
    return f"0.{parts[1]}" if len(parts) > 1 and parts[1].isdigit() else "0"


CHANNEL = channel()


def project_name(env: dict[str, str] | None = None) -> str:
    env = dict(os.environ) if env is None else env
    return env.get("BIGEYE_COMPOSE_PROJECT") or DEFAULT_PROJECT


def default_orchestrator_image(configured: str | None = None) -> str:
    return (
        os.environ.get("BIGEYE_ORCHESTRATOR_IMAGE")
        or configured
        or f"{ORCHESTRATOR_REPOSITORY}:{CHANNEL}"
    )


def default_proxy_image() -> str:
    return os.environ.get("BIGEYE_PROXY_IMAGE") or f"{PROXY_REPOSITORY}:{CHANNEL}"


@dataclass(frozen=True)
class ComposeInputs:
    host_dir: Path
    host_id: str
    project: str = DEFAULT_PROJECT
    orchestrator_image: str = f"{ORCHESTRATOR_REPOSITORY}:{CHANNEL}"
    proxy_image: str = f"{PROXY_REPOSITORY}:{CHANNEL}"
    uid: int = 10001
    gid: int = 10001
    docker_socket: str = DOCKER_SOCKET
    socket_gid: int = 0
    rootless: bool = False  # the engine's uid 0 is an unprivileged user: the stack runs as it
    metrics_addr: str | None = None  # HOST:PORT on the host where /metrics is published
    tls: bool = False
    tls_server_name: str | None = None
    allow_loopback_registry: bool = field(
        default_factory=lambda: os.environ.get(LOOPBACK_REGISTRY_ENV) == "1"
    )


def socket_gid(socket: str = DOCKER_SOCKET) -> int:
    try:
        return os.stat(socket).st_gid
    except OSError:
        return 0


def owner_of(directory: Path) -> tuple[int, int]:
    info = directory.stat()
    return info.st_uid, info.st_gid


def is_ours(path: Path) -> bool:
    """Whether a compose file is one that `bigeye-agent` rendered."""
    try:
        head = path.read_text(encoding="utf-8", errors="replace")[:400]
    except OSError:
        return False
    return HEADER_MARK in head


def declared_project(path: Path) -> str | None:
    """The `name:` a compose file gives its project, if any."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    name = data.get("name") if isinstance(data, dict) else None
    return str(name) if name else None


def _substitute(node: Any, values: dict[str, str]) -> Any:
    if isinstance(node, str):
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], node)
    if isinstance(node, list):
        return [_substitute(item, values) for item in node]
    if isinstance(node, dict):
        return {key: _substitute(value, values) for key, value in node.items()}
    return node


def _template() -> tuple[str, dict[str, Any]]:
    text = resources.files("bigeye_agent").joinpath("templates", COMPOSE_FILE_NAME).read_text()
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    return header.split("\nname:")[0], yaml.safe_load(text)


def render(inputs: ComposeInputs) -> str:
    header, template = _template()
    values = {
        "project": inputs.project,
        "orchestrator_image": inputs.orchestrator_image,
        "proxy_image": inputs.proxy_image,
        "host_dir": str(inputs.host_dir),
        "host_id": inputs.host_id,
        "uid": str(inputs.uid),
        "gid": str(inputs.gid),
        "socket_gid": str(inputs.socket_gid),
        "docker_socket": inputs.docker_socket,
    }
    compose = _substitute(template, values)
    orchestrator = compose["services"][ORCHESTRATOR_SERVICE]
    proxy = compose["services"][PROXY_SERVICE]
    if inputs.rootless:
        proxy["user"] = "0:0"  # the socket's owner in the engine's user namespace
        del proxy["group_add"]
    if inputs.allow_loopback_registry:
        proxy["environment"][LOOPBACK_REGISTRY_ENV] = "1"
    if inputs.metrics_addr:  # opt-in: nothing is published otherwise
        host, _, port = inputs.metrics_addr.rpartition(":")
        orchestrator["environment"]["BIGEYE_METRICS_ADDR"] = f"0.0.0.0:{port}"
        orchestrator["ports"] = [f"{host or '127.0.0.1'}:{port}:{port}"]
    if inputs.tls:
        orchestrator["environment"].update(TLS_ENV)
        if inputs.tls_server_name:
            orchestrator["environment"]["BIGEYE_TLS_SERVER_NAME"] = inputs.tls_server_name
    body = yaml.safe_dump(compose, sort_keys=False, default_flow_style=False, width=100)
    return header + body


def write(host_dir: Path, text: str) -> Path:
    """Atomic replace, so a failed write never leaves a half file behind."""
    path = host_dir / COMPOSE_FILE_NAME
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
    os.replace(tmp, path)
    return path
