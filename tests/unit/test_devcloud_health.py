"""Host health thresholds (design §3): ≤5 min healthy, 5 to 30 degraded, >30 down, none no_data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from devcloud.health import format_time, host_health, parse_time

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("age", "health"),
    [
        (timedelta(0), "healthy"),
        (timedelta(seconds=-3), "healthy"),  # a clock a little ahead
        (timedelta(minutes=5), "healthy"),
        (timedelta(minutes=5, seconds=1), "degraded"),
        (timedelta(minutes=30), "degraded"),
        (timedelta(minutes=30, seconds=1), "down"),
        (timedelta(days=3), "down"),
    ],
)
def test_health_by_age(age, health):
    assert host_health(NOW - age, NOW) == health


def test_no_heartbeat_is_no_data():
    assert host_health(None, NOW) == "no_data"


def test_times_are_rfc3339_utc_and_round_trip():
    text = format_time(datetime(2025, 1, 1, 13, 0, tzinfo=UTC))
    assert text == "2025-01-01T13:00:00Z"
    assert parse_time(text) == datetime(2025, 1, 1, 13, 0, tzinfo=UTC)
    assert parse_time("2025-01-01T13:00:00").tzinfo is UTC
