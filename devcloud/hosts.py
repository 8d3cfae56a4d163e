"""Hosts, the account's trusted CA and host heartbeats, as rows of `cloud.db`."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from devcloud import db, pki
from devcloud.health import Health, format_time, host_health, parse_time
from orchestrator.contract import HOST_ID_PATTERN, AgentType

INSTANCE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
# Agents a host has that run on their own (long-running), not under the orchestrator.
PersistentAgent = Literal["data_source", "sds", "cross_source"]


class HostAlreadyRegistered(Exception):
    """The host id belongs to another instance."""


class UnknownHost(LookupError):
    pass


def _unique(agents: list[AgentType]) -> list[AgentType]:
    return list(dict.fromkeys(agents))


class RegisterHost(BaseModel):
    """`POST /api/v1/agent-orchestrator/hosts` (unknown keys are ignored)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    host_id: Annotated[str, StringConstraints(pattern=HOST_ID_PATTERN)]
    instance_id: Annotated[str, StringConstraints(pattern=INSTANCE_ID_PATTERN)]
    managed_agents: list[AgentType] = Field(default_factory=list)
    installed_agents: list[PersistentAgent] = Field(default_factory=list)
    client_cert_pem: Annotated[str, StringConstraints(min_length=1, max_length=65536)]
    client_ca_pem: Annotated[str, StringConstraints(min_length=1, max_length=65536)]
    cli_version: Annotated[str, StringConstraints(max_length=64)] | None = None

    @field_validator("managed_agents", "installed_agents")
    @classmethod
    def _dedupe(cls, agents: list[Any]) -> list[Any]:
        return _unique(agents)


class ManagedAgents(BaseModel):
    """`PUT /api/v1/agent-orchestrator/hosts/{host_id}/agents` (installed: None keeps them)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    managed_agents: list[AgentType]
    installed_agents: list[PersistentAgent] | None = None

    @field_validator("managed_agents", "installed_agents")
    @classmethod
    def _dedupe(cls, agents: list[Any] | None) -> list[Any] | None:
        return None if agents is None else _unique(agents)


@dataclass(frozen=True)
class Host:
    host_id: str
    instance_id: str
    managed_agents: list[str]
    client_cert_fingerprint: str
    cli_version: str | None
    registered_at: str
    last_heartbeat_at: str | None = None
    installed_agents: list[str] = field(default_factory=list)
    orchestrator_version: str | None = None  # as the last heartbeat said
    last_status: dict[str, Any] | None = None  # the last heartbeat's HostStatus, as sent

    def health(self, now: datetime | None = None) -> Health:
        last = parse_time(self.last_heartbeat_at) if self.last_heartbeat_at else None
        return host_health(last, now)

    def listing(self, now: datetime | None = None) -> dict[str, Any]:
        """The host as `GET hosts` and `hosts --json` show it."""
        return {
            "host_id": self.host_id,
            "health": self.health(now),
            "last_heartbeat_at": self.last_heartbeat_at,
            "managed_agents": list(self.managed_agents),
            "installed_agents": list(self.installed_agents),
            "orchestrator_version": self.orchestrator_version,
            "last_status": self.last_status,
        }


_HOST_QUERY = """
SELECT h.host_id, h.instance_id, h.managed_agents, h.installed_agents, h.client_cert_fingerprint,
       h.cli_version, h.registered_at, b.last_heartbeat_at, b.last_status
FROM hosts h LEFT JOIN heartbeats b ON b.host_id = h.host_id
"""


def _host(row: sqlite3.Row) -> Host:
    status = _status(row["last_status"])
    return Host(
        host_id=row["host_id"],
        instance_id=row["instance_id"],
        managed_agents=json.loads(row["managed_agents"]),
        client_cert_fingerprint=row["client_cert_fingerprint"],
        cli_version=row["cli_version"],
        registered_at=row["registered_at"],
        last_heartbeat_at=row["last_heartbeat_at"],
        installed_agents=json.loads(row["installed_agents"]),
        orchestrator_version=_reported_version(status),
        last_status=status,
    )


def _status(text: str | None) -> dict[str, Any] | None:
    try:
        status = json.loads(text) if text else None
    except ValueError:
        return None
    return status if isinstance(status, dict) else None


def _reported_version(status: dict[str, Any] | None) -> str | None:
    version = status.get("orchestrator_version") if status else None
    return str(version) if version else None


def get_host(conn: sqlite3.Connection, host_id: str) -> Host | None:
    row = conn.execute(_HOST_QUERY + " WHERE h.host_id = ?", (host_id,)).fetchone()
    return _host(row) if row else None


def list_hosts(conn: sqlite3.Connection) -> list[Host]:
    return [_host(row) for row in conn.execute(_HOST_QUERY + " ORDER BY h.host_id")]


# ---- the account ---------------------------------------------------------------------------


def trusted_ca_pem(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT client_ca_pem FROM account WHERE id = 1").fetchone()
    return str(row["client_ca_pem"]) if row else None


def account_summary(conn: sqlite3.Connection) -> dict[str, Any]:
    row = conn.execute("SELECT client_ca_fingerprint FROM account WHERE id = 1").fetchone()
    (count,) = conn.execute("SELECT COUNT(*) FROM hosts").fetchone()
    return {"hosts": int(count), "client_ca_fingerprint": row[0] if row else None}


# ---- registering ---------------------------------------------------------------------------


def register_host(
    conn: sqlite3.Connection, request: RegisterHost, now: datetime | None = None
) -> tuple[Host, pki.TrustDecision]:
    """Add or refresh a host; the account's first host makes its CA the trusted one.

    Raises HostAlreadyRegistered (another instance owns the id) or pki.CertificateRejected.
    """
    now = now or datetime.now(UTC)
    stamp = format_time(now)
    with db.transaction(conn):
        existing = get_host(conn, request.host_id)
        if existing is not None and existing.instance_id != request.instance_id:
            raise HostAlreadyRegistered(request.host_id)
        trust = pki.decide_trust(
            trusted_ca_pem(conn), request.client_ca_pem, request.client_cert_pem, now
        )
        if trust.newly_trusted:
            conn.execute(
                "INSERT INTO account (id, client_ca_pem, client_ca_fingerprint, trusted_at) "
                "VALUES (1, ?, ?, ?)",
                (trust.ca_pem, trust.ca_fingerprint, stamp),
            )
        conn.execute(
            """
            INSERT INTO hosts (host_id, instance_id, managed_agents, installed_agents,
                               client_cert_pem, client_cert_fingerprint, cli_version,
                               registered_at, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (host_id) DO UPDATE SET
                managed_agents = excluded.managed_agents,
                installed_agents = excluded.installed_agents,
                client_cert_pem = excluded.client_cert_pem,
                client_cert_fingerprint = excluded.client_cert_fingerprint,
                cli_version = excluded.cli_version,
                updated_at = excluded.updated_at
            """,
            (
                request.host_id,
                request.instance_id,
                json.dumps(list(request.managed_agents)),
                json.dumps(list(request.installed_agents)),
                request.client_cert_pem,
                trust.client_cert_fingerprint,
                request.cli_version,
                stamp,
                stamp,
            ),
        )
        host = get_host(conn, request.host_id)
    assert host is not None
    return host, trust


def set_managed_agents(
    conn: sqlite3.Connection, host_id: str, agents: list[str], installed: list[str] | None = None
) -> Host:
    with db.transaction(conn):
        updated = conn.execute(
            "UPDATE hosts SET managed_agents = ?, updated_at = ? WHERE host_id = ?",
            (json.dumps(agents), format_time(datetime.now(UTC)), host_id),
        ).rowcount
        if installed is not None:
            conn.execute(
                "UPDATE hosts SET installed_agents = ? WHERE host_id = ?",
                (json.dumps(installed), host_id),
            )
    host = get_host(conn, host_id)
    if not updated or host is None:
        raise UnknownHost(host_id)
    return host


# ---- heartbeats ----------------------------------------------------------------------------


def record_heartbeat(
    conn: sqlite3.Connection, host_id: str, status: dict[str, Any], received_at: datetime
) -> None:
    """Keep the last heartbeat of a host (registered or not: it may register later)."""
    with db.transaction(conn):
        conn.execute(
            """
            INSERT INTO heartbeats (host_id, last_heartbeat_at, last_status, received)
            VALUES (?, ?, ?, 1)
            ON CONFLICT (host_id) DO UPDATE SET
                last_heartbeat_at = excluded.last_heartbeat_at,
                last_status = excluded.last_status,
                received = heartbeats.received + 1
            """,
            (host_id, format_time(received_at), json.dumps(status, sort_keys=True)),
        )


def last_status(conn: sqlite3.Connection, host_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT last_status FROM heartbeats WHERE host_id = ?", (host_id,)
    ).fetchone()
    return json.loads(row[0]) if row else None
