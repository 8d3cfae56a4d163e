"""The local cloud's own store: `DIR/cloud.db` (sqlite, stdlib), so a restart loses nothing.

Tables: `api_keys` (hashes only), `account` (the trusted account CA), `hosts`, `heartbeats`,
`jobs`, `runs`. One connection per process; the server uses it from its event loop only, the
CLI (`keys create`) writes from another process, so the file is in WAL mode with a busy timeout.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Final

DB_FILE: Final = "cloud.db"
BUSY_TIMEOUT_MS: Final = 10_000

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash   TEXT PRIMARY KEY,
    role       TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    label      TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS account (
    id                    INTEGER PRIMARY KEY CHECK (id = 1),
    client_ca_pem         TEXT NOT NULL,
    client_ca_fingerprint TEXT NOT NULL,
    trusted_at            TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS hosts (
    host_id                 TEXT PRIMARY KEY,
    instance_id             TEXT NOT NULL,
    managed_agents          TEXT NOT NULL,
    installed_agents        TEXT NOT NULL DEFAULT '[]',
    client_cert_pem         TEXT NOT NULL,
    client_cert_fingerprint TEXT NOT NULL,
    cli_version             TEXT,
    registered_at           TEXT NOT NULL,
    updated_at              TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS heartbeats (
    host_id           TEXT PRIMARY KEY,
    last_heartbeat_at TEXT NOT NULL,
    last_status       TEXT NOT NULL,
    received          INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id     TEXT PRIMARY KEY,
    host_id    TEXT NOT NULL,
    agent      TEXT NOT NULL,
    parameters TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id          TEXT PRIMARY KEY,
    job_id          TEXT NOT NULL,
    host_id         TEXT NOT NULL,
    agent           TEXT NOT NULL,
    workflow_id     TEXT NOT NULL,
    temporal_run_id TEXT,
    namespace       TEXT NOT NULL,
    requested_at    TEXT NOT NULL,
    status          TEXT NOT NULL,
    result          TEXT,
    error           TEXT,
    final           INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job_id, requested_at);
"""


def db_path(state_dir: Path) -> Path:
    return state_dir / DB_FILE


def connect(state_dir: Path) -> sqlite3.Connection:
    """Open (and create or upgrade) the store of `state_dir`."""
    state_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db_path(state_dir), isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.executescript(SCHEMA)  # every statement is idempotent
    columns = {row["name"] for row in conn.execute("PRAGMA table_info(hosts)")}
    if "installed_agents" not in columns:  # a state directory from before the column
        conn.execute("ALTER TABLE hosts ADD COLUMN installed_agents TEXT NOT NULL DEFAULT '[]'")
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """`BEGIN IMMEDIATE` … `COMMIT`, or `ROLLBACK` on error: read-modify-write cycles are atomic."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
