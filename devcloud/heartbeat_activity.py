"""The `AgentHeartbeat` workflow's one side effect: the host's last heartbeat in `cloud.db`."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from temporalio import activity

from devcloud import hosts

log = structlog.get_logger("devcloud.heartbeat")


@dataclass(frozen=True)
class HeartbeatRecord:
    host_id: str
    status: dict[str, Any]


class HeartbeatRecorder:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @activity.defn(name="RecordHostHeartbeat")
    async def record(self, record: HeartbeatRecord) -> str:
        """Stores the status with the server's receive time; returns that time."""
        received_at = datetime.now(UTC)
        hosts.record_heartbeat(self._conn, record.host_id, record.status, received_at)
        log.debug("heartbeat_recorded", host_id=record.host_id)
        return received_at.isoformat()
