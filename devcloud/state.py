"""The files under the state directory (default `.devcloud/`).

- `endpoints.json`: where the running local cloud answers (also `ui_url`, the web UI); present
  only while it is ready.
- `server.json`: what a restart reuses (ports) and cleans up (the Temporal child's pid).
- `temporal.db`: the Temporal dev server's sqlite store, so runs survive a restart.
- `cloud.db`: devcloud's own store (keys, account CA, hosts, heartbeats, jobs, runs; devcloud.db).
- `devcloud_ca.pem`/`.key`, `front.pem`/`.key`: devcloud's CA and the mTLS front's certificate.
- `service.key`: the internal admin API key the CLI uses (mode 0600).

Every write is atomic (temp file + `os.replace`); read-modify-write cycles hold a lock file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from devcloud.errors import DevcloudError
from orchestrator.contract import DEFAULT_NAMESPACE

DEFAULT_STATE_DIR = Path(".devcloud")
ENDPOINTS_FILE = "endpoints.json"
SERVER_FILE = "server.json"
TEMPORAL_DB_FILE = "temporal.db"
SERVER_LOCK_FILE = "server.lock"


class Endpoints(BaseModel):
    # extra="allow": later parts of devcloud add keys; readers must not break on them.
    model_config = ConfigDict(extra="allow")

    api_url: str | None = None
    temporal_address: str  # the mTLS front as containers reach it
    temporal_plain_address: str  # loopback only, no TLS
    namespace: str = DEFAULT_NAMESPACE
    temporal_server_name: str | None = None  # the TLS server name of `temporal_address`
    temporal_server_ca_file: str | None = None  # devcloud's CA (the front's issuer)
    temporal_front_addresses: list[str] = []  # where the front listens (bridge gateway, loopback)


class ServerState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    temporal_port: int | None = None
    temporal_ui_port: int | None = None
    temporal_pid: int | None = None
    api_port: int | None = None
    front_port: int | None = None


# ---- plain JSON files ----------------------------------------------------------------------


def write_json_atomic(path: Path, data: Any) -> None:
    """Write `data` as JSON so that a reader sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path: Path) -> Any | None:
    """The file's JSON, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def file_lock(path: Path, *, blocking: bool = True) -> Iterator[None]:
    """An exclusive `flock` on `path` (created if missing); BlockingIOError if not blocking."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        yield
    finally:
        os.close(fd)


# ---- endpoints.json ------------------------------------------------------------------------


def endpoints_path(state_dir: Path) -> Path:
    return state_dir / ENDPOINTS_FILE


def write_endpoints(state_dir: Path, endpoints: Endpoints) -> None:
    write_json_atomic(endpoints_path(state_dir), endpoints.model_dump(mode="json"))


def read_endpoints(state_dir: Path) -> Endpoints | None:
    raw = read_json(endpoints_path(state_dir))
    if raw is None:
        return None
    try:
        return Endpoints.model_validate(raw)
    except ValidationError:
        return None


def require_endpoints(state_dir: Path) -> Endpoints:
    endpoints = read_endpoints(state_dir)
    if endpoints is None:
        raise DevcloudError(
            f"the local cloud is not running (no {endpoints_path(state_dir)}); "
            f"start it with: bigeye-cloud-dev server --state-dir {state_dir}"
        )
    return endpoints


def remove_endpoints(state_dir: Path) -> None:
    endpoints_path(state_dir).unlink(missing_ok=True)


# ---- server.json ---------------------------------------------------------------------------


def read_server_state(state_dir: Path) -> ServerState:
    raw = read_json(state_dir / SERVER_FILE)
    try:
        return ServerState.model_validate(raw or {})
    except ValidationError:
        return ServerState()


def write_server_state(state_dir: Path, server: ServerState) -> None:
    write_json_atomic(state_dir / SERVER_FILE, server.model_dump(mode="json"))


@contextlib.contextmanager
def server_lock(state_dir: Path) -> Iterator[None]:
    """Held for a server's lifetime: one local cloud per state directory."""
    try:
        with file_lock(state_dir / SERVER_LOCK_FILE, blocking=False):
            yield
    except BlockingIOError:
        raise DevcloudError(
            f"another bigeye-cloud-dev server is already running with state dir {state_dir}"
        ) from None
