"""The proxy's inputs: two variables that say whose containers these are, where
`bigeye_agent.yml` is (the agent set), where to listen and where the engine's socket is. Every
problem is one line for the operator."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from orchestrator.contract import is_valid_host_id

DEFAULT_SOCKET: Final = "/var/run/docker.sock"
DEFAULT_LISTEN: Final = "0.0.0.0:2375"
DEFAULT_AGENT_CONFIG: Final = "/etc/bigeye/bigeye_agent.yml"
DEFAULT_MAX_CONNECTIONS: Final = 64
# A host directory at or above one of these would let a "config" bind reach them.
SYSTEM_DIRS: Final = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib64",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var/lib/docker",
    "/var/run",
)


class ConfigError(ValueError):
    """One line naming the variable and the problem."""


@dataclass(frozen=True)
class ProxyConfig:
    host_id: str
    host_dir: str
    socket_path: str = DEFAULT_SOCKET
    listen_host: str = "0.0.0.0"
    listen_port: int = 2375
    # bigeye_agent.yml as the proxy sees it: its directory is the host directory, mounted
    agent_config: str = DEFAULT_AGENT_CONFIG
    allow_loopback_registry: bool = False
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    @property
    def mounted_host_dir(self) -> str:
        """Where the proxy sees `host_dir` (the directory holding `bigeye_agent.yml`)."""
        return posixpath.dirname(self.agent_config)


def host_dir_problem(host_dir: str) -> str | None:
    if not host_dir.startswith("/"):
        return "must be an absolute path"
    if posixpath.normpath(host_dir) != host_dir or "//" in host_dir:
        return "must be a normalised path (no trailing slash, '.', '..' or '//')"
    if host_dir == "/":
        return "must not be /"
    for system in SYSTEM_DIRS:
        if system == host_dir or system.startswith(host_dir + "/"):
            return f"must not be {system} or a directory above it"
    return None


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"BIGEYE_PROXY_LISTEN={value!r}: expected HOST:PORT")
    host = host.removeprefix("[").removesuffix("]")
    return host or "0.0.0.0", int(port)


def from_env(env: Mapping[str, str]) -> ProxyConfig:
    host_id = env.get("BIGEYE_HOST_ID", "")
    if not host_id:
        raise ConfigError("BIGEYE_HOST_ID is not set: set it to this host's id")
    if not is_valid_host_id(host_id):
        raise ConfigError(
            f"BIGEYE_HOST_ID={host_id[:80]!r} is not a valid host id "
            "(letters, digits and inner hyphens, at most 256)"
        )
    host_dir = env.get("BIGEYE_AGENT_HOST_DIR", "")
    if not host_dir:
        raise ConfigError(
            "BIGEYE_AGENT_HOST_DIR is not set: set it to the host path of the directory "
            "holding bigeye_agent.yml"
        )
    problem = host_dir_problem(host_dir)
    if problem is not None:
        raise ConfigError(f"BIGEYE_AGENT_HOST_DIR={host_dir[:200]!r} {problem}")
    socket_path = env.get("BIGEYE_DOCKER_SOCKET") or DEFAULT_SOCKET
    if not socket_path.startswith("/"):
        raise ConfigError(f"BIGEYE_DOCKER_SOCKET={socket_path!r} must be an absolute path")
    listen_host, listen_port = parse_listen(env.get("BIGEYE_PROXY_LISTEN") or DEFAULT_LISTEN)
    agent_config = env.get("BIGEYE_AGENT_CONFIG") or DEFAULT_AGENT_CONFIG
    if not agent_config.startswith("/") or posixpath.normpath(agent_config) != agent_config:
        raise ConfigError(
            f"BIGEYE_AGENT_CONFIG={agent_config[:200]!r} must be an absolute, normalised path"
        )
    loopback = env.get("BIGEYE_PROXY_ALLOW_LOOPBACK_REGISTRY", "")
    if loopback not in ("", "0", "1"):
        raise ConfigError(f"BIGEYE_PROXY_ALLOW_LOOPBACK_REGISTRY={loopback[:20]!r}: use 1 or 0")
    connections = env.get("BIGEYE_PROXY_MAX_CONNECTIONS") or str(DEFAULT_MAX_CONNECTIONS)
    if not connections.isdigit() or not 1 <= int(connections) <= 4096:
        raise ConfigError(
            f"BIGEYE_PROXY_MAX_CONNECTIONS={connections[:20]!r}: a number from 1 to 4096"
        )
    return ProxyConfig(
        host_id,
        host_dir,
        socket_path,
        listen_host,
        listen_port,
        agent_config,
        loopback == "1",
        int(connections),
    )
