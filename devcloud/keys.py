"""Personal API keys: random tokens of which only a SHA-256 hash is stored.

The server also keeps an internal admin *service* key for the CLI in the state directory
(`service.key`, mode 0600), so that `run` and `cancel` go through the API and its checks.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

from devcloud import db
from devcloud.health import format_time

Role = Literal["admin", "member"]
ROLES: Final[tuple[str, ...]] = ("admin", "member")
KEY_PREFIX: Final = "bigeye_pak_"
SERVICE_KEY_FILE: Final = "service.key"
SERVICE_KEY_LABEL: Final = "bigeye-cloud-dev service"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """SHA-256 hex: keys are 256-bit random tokens, so a fast hash is enough."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_authorization(header: str | None) -> str | None:
    """The key of an `Authorization: apikey <key>` header, else None."""
    if not header:
        return None
    scheme, _, key = header.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "apikey" or not key:
        return None
    return key


def create_key(conn: sqlite3.Connection, role: str, label: str | None = None) -> str:
    """Store the hash of a new key with `role`; the key itself is returned and never stored."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    key = new_key()
    with db.transaction(conn):
        conn.execute(
            "INSERT INTO api_keys (key_hash, role, label, created_at) VALUES (?, ?, ?, ?)",
            (hash_key(key), role, label, format_time(datetime.now(UTC))),
        )
    return key


def role_of(conn: sqlite3.Connection, key: str) -> Role | None:
    digest = hash_key(key)
    row = conn.execute(
        "SELECT key_hash, role FROM api_keys WHERE key_hash = ?", (digest,)
    ).fetchone()
    if row is None or not hmac.compare_digest(row["key_hash"], digest):
        return None
    role: Role = "admin" if row["role"] == "admin" else "member"
    return role


def service_key_path(state_dir: Path) -> Path:
    return state_dir / SERVICE_KEY_FILE


def ensure_service_key(conn: sqlite3.Connection, state_dir: Path) -> str:
    """The server's internal admin key: the one in `service.key` if still valid, else a new one."""
    path = service_key_path(state_dir)
    try:
        key = path.read_text(encoding="ascii").strip()
    except OSError:
        key = ""
    if key and role_of(conn, key) == "admin":
        os.chmod(path, 0o600)
        return key
    key = create_key(conn, "admin", SERVICE_KEY_LABEL)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key + "\n")
    os.replace(tmp, path)
    return key


def read_service_key(state_dir: Path) -> str | None:
    try:
        return service_key_path(state_dir).read_text(encoding="ascii").strip() or None
    except OSError:
        return None
