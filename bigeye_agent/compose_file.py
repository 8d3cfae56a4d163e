"""Renders `docker-compose.bigeye.yml` from the packaged template.

Values are substituted into the parsed template (never spliced into YAML text), so a host path
or image name cannot change the file's structure. Long-running agent services that the host
already ran with Docker Compose are carried over unchanged.
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
# Compose files an operator may already run agent services from, in the host directory.
EXISTING_COMPOSE_FILES = (
    "docker-compose.yml",
    "docker-compose.yaml",
    "compose.yml",
    "compose.yaml",
)
TLS_ENV = {
    "BIGEYE_TLS_CERT": "/etc/bigeye/agent_config/mtls.pem",
    "BIGEYE_TLS_KEY": "/etc/bigeye/agent_config/mtls.key",
    "BIGEYE_TLS_CA": "/etc/bigeye/agent_config/bigeye_workflows_ca.pem",
}
_PLACEHOLDER = re.compile(r"@([a-z_]+)@")


def project_name(env: dict[str, str] | None = None) -> str:
    env = dict(os.environ) if env is None else env
    return env.get("BIGEYE_COMPOSE_PROJECT") or DEFAULT_PROJECT


def default_orchestrator_image(configured: str | None = None) -> str:
    return (
        os.environ.get("BIGEYE_ORCHESTRATOR_IMAGE")
        or configured
        or f"{ORCHESTRATOR_REPOSITORY}:{VERSION}"
    )


def default_proxy_image() -> str:
    return os.environ.get("BIGEYE_PROXY_IMAGE") or f"{PROXY_REPOSITORY}:{VERSION}"


@dataclass(frozen=True)
class ComposeInputs:
    host_dir: Path
    host_id: str
    project: str = DEFAULT_PROJECT
    orchestrator_image: str = f"{ORCHESTRATOR_REPOSITORY}:{VERSION}"
    proxy_image: str = f"{PROXY_REPOSITORY}:{VERSION}"
    uid: int = 0
    gid: int = 0
    socket_gid: int = 0
    tls: bool = False
    tls_server_name: str | None = None
    carried_services: dict[str, Any] = field(default_factory=dict)
    carried_top_level: dict[str, Any] = field(default_factory=dict)


def socket_gid(socket: str = DOCKER_SOCKET) -> int:
    try:
        return os.stat(socket).st_gid
    except OSError:
        return 0


def owner_of(directory: Path) -> tuple[int, int]:
    info = directory.stat()
    return info.st_uid, info.st_gid


def existing_services(host_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(services, their top-level networks/volumes) of the host's own compose file, if any."""
    for name in EXISTING_COMPOSE_FILES:
        path = host_dir / name
        if not path.is_file():
            continue
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            return {}, {}
        services = data.get("services") or {}
        top = {k: data[k] for k in ("networks", "volumes", "secrets", "configs") if data.get(k)}
        return dict(services), top
    return {}, {}


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
    }
    compose = _substitute(template, values)
    orchestrator = compose["services"][ORCHESTRATOR_SERVICE]
    if inputs.tls:
        orchestrator["environment"].update(TLS_ENV)
        if inputs.tls_server_name:
            orchestrator["environment"]["BIGEYE_TLS_SERVER_NAME"] = inputs.tls_server_name
    for name, service in inputs.carried_services.items():
        if name in compose["services"]:
            continue  # never let a carried-over service replace ours
        compose["services"][name] = service
    for key, value in inputs.carried_top_level.items():
        merged = dict(value)
        merged.update(compose.get(key) or {})
        compose[key] = merged
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
