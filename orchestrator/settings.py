"""The daemon's settings: `bigeye_agent.yml` overlaid by environment variables, one typed object."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from orchestrator.contract import is_valid_host_id
from orchestrator.hostconfig import ConfigError, HostConfig, load_host_config

DEFAULT_CONFIG_PATH = "/etc/bigeye/bigeye_agent.yml"
DEFAULT_HEALTH_ADDR = "127.0.0.1:9464"
DEFAULT_MAX_CONCURRENT_JOBS = 8
DEFAULT_HEARTBEAT_SECONDS = 30.0
DEFAULT_SWEEP_SECONDS = 60.0
DEFAULT_ORPHAN_GRACE_SECONDS = 300.0


class SettingsError(ValueError):
    """One line naming the setting at fault and how to fix it."""


class TLSFiles(BaseModel):
    model_config = ConfigDict(frozen=True)
    cert: Path
    key: Path
    ca: Path
    server_name: str | None = None


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    host_id: str
    config_path: Path
    host_dir: str  # as the Docker engine sees it: bind sources are host paths
    temporal_address: str
    namespace: str
    tls: TLSFiles | None
    docker_host: str | None
    health_addr: str
    metrics_addr: str | None = None  # /metrics also served here, for scraping from outside
    log_format: Literal["json", "console"]
    max_concurrent_jobs: int
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS
    sweep_seconds: float = DEFAULT_SWEEP_SECONDS
    orphan_grace_seconds: float = DEFAULT_ORPHAN_GRACE_SECONDS

    def load_host(self) -> HostConfig:
        """Re-read for every job, so that `bigeye-agent sync` needs no restart."""
        return load_host_config(self.config_path)


def _tls(env: Mapping[str, str], server_name: str | None) -> TLSFiles | None:
    names = ("BIGEYE_TLS_CERT", "BIGEYE_TLS_KEY", "BIGEYE_TLS_CA")
    given = [name for name in names if env.get(name)]
    if not given:
        return None
    if len(given) != len(names):
        missing = ", ".join(name for name in names if name not in given)
        raise SettingsError(
            f"TLS is partly configured: set {missing} too, or unset all BIGEYE_TLS_* variables"
        )
    return TLSFiles(
        cert=Path(env["BIGEYE_TLS_CERT"]),
        key=Path(env["BIGEYE_TLS_KEY"]),
        ca=Path(env["BIGEYE_TLS_CA"]),
        server_name=env.get("BIGEYE_TLS_SERVER_NAME") or server_name,
    )


def _positive_seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name) or str(default)
    try:
        value = float(raw)
        if value <= 0:
            raise ValueError
    except ValueError:
        raise SettingsError(f"{name} {raw!r} must be a positive number of seconds") from None
    return value


def listen_address(env: Mapping[str, str], name: str) -> str | None:
    """`name`'s HOST:PORT (port 0: any free port), None when unset; the daemon's and
    `healthcheck`'s one reading of it."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    _, sep, port = raw.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise SettingsError(
            f"{name} {raw!r} must be HOST:PORT, like 0.0.0.0:9464 (port 0: any free port)"
        )
    return raw


def load_settings(env: Mapping[str, str] | None = None) -> tuple[Settings, HostConfig]:
    env = os.environ if env is None else env
    config_path = Path(env.get("BIGEYE_AGENT_CONFIG") or DEFAULT_CONFIG_PATH)
    try:
        host = load_host_config(config_path)
    except ConfigError as exc:
        raise SettingsError(str(exc)) from None

    host_id = env.get("BIGEYE_HOST_ID") or host.orchestrator.host_id
    if not host_id:
        raise SettingsError(
            f"host id is not set: set BIGEYE_HOST_ID or orchestrator.host_id in {config_path}"
        )
    if not is_valid_host_id(host_id):
        raise SettingsError(
            f"BIGEYE_HOST_ID {host_id!r} is not a valid host id: use letters, digits and "
            "hyphens (at most 256, not starting or ending with a hyphen)"
        )
    address = env.get("BIGEYE_TEMPORAL_ADDRESS") or host.orchestrator.temporal.address
    if not address:
        raise SettingsError(
            "Temporal address is not set: set BIGEYE_TEMPORAL_ADDRESS or "
            f"orchestrator.temporal.address in {config_path}"
        )
    namespace = env.get("BIGEYE_TEMPORAL_NAMESPACE") or host.orchestrator.temporal.namespace
    tls = _tls(env, host.orchestrator.temporal.server_name)

    raw_jobs = env.get("BIGEYE_MAX_CONCURRENT_JOBS") or str(DEFAULT_MAX_CONCURRENT_JOBS)
    try:
        max_jobs = int(raw_jobs)
        if max_jobs < 1:
            raise ValueError
    except ValueError:
        raise SettingsError(
            f"BIGEYE_MAX_CONCURRENT_JOBS {raw_jobs!r} must be a whole number of at least 1"
        ) from None

    log_format = env.get("BIGEYE_LOG_FORMAT") or ("console" if sys.stdout.isatty() else "json")
    if log_format not in ("json", "console"):
        raise SettingsError(f"BIGEYE_LOG_FORMAT {log_format!r} must be json or console")

    heartbeat = _positive_seconds(env, "BIGEYE_HEARTBEAT_SECONDS", DEFAULT_HEARTBEAT_SECONDS)
    sweep = _positive_seconds(env, "BIGEYE_SWEEP_SECONDS", DEFAULT_SWEEP_SECONDS)
    grace = _positive_seconds(env, "BIGEYE_ORPHAN_GRACE_SECONDS", DEFAULT_ORPHAN_GRACE_SECONDS)

    host_dir = env.get("BIGEYE_AGENT_HOST_DIR") or str(config_path.resolve().parent)
    if not host_dir.startswith("/"):
        raise SettingsError(f"BIGEYE_AGENT_HOST_DIR {host_dir!r} must be an absolute path")

    settings = Settings(
        host_id=host_id,
        config_path=config_path,
        host_dir=host_dir.rstrip("/") or "/",
        temporal_address=address,
        namespace=namespace,
        tls=tls,
        docker_host=env.get("DOCKER_HOST") or None,
        health_addr=listen_address(env, "BIGEYE_HEALTH_ADDR") or DEFAULT_HEALTH_ADDR,
        metrics_addr=listen_address(env, "BIGEYE_METRICS_ADDR"),
        log_format=log_format,
        max_concurrent_jobs=max_jobs,
        heartbeat_seconds=heartbeat,
        sweep_seconds=sweep,
        orphan_grace_seconds=grace,
    )
    return settings, host
