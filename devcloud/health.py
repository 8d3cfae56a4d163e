"""Host health from the age of its last heartbeat (design §3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final, Literal

Health = Literal["healthy", "degraded", "down", "no_data"]

HEALTHY_WITHIN: Final = timedelta(minutes=5)
DEGRADED_WITHIN: Final = timedelta(minutes=30)


def host_health(last_heartbeat_at: datetime | None, now: datetime | None = None) -> Health:
    """`healthy` at most 5 minutes old, `degraded` up to 30, `down` after, `no_data` without one."""
    if last_heartbeat_at is None:
        return "no_data"
    age = (now or datetime.now(UTC)) - last_heartbeat_at
    if age <= HEALTHY_WITHIN:
        return "healthy"
    if age <= DEGRADED_WITHIN:
        return "degraded"
    return "down"


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, e.g. `2025-01-01T12:00:00.123456Z`."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
