"""orchestrator/pauses.py: a dependency's outage is logged by state change, not by attempt."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from orchestrator import pauses
from orchestrator.pauses import MAX_RETRY_SECONDS, REMINDER_SECONDS, Outage, until_stopped


class Recorder:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append(("warning", event, fields))

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append(("info", event, fields))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [100.0]
    monkeypatch.setattr(pauses.time, "monotonic", lambda: now[0])
    return now


def test_retries_with_the_same_error_log_the_start_the_ceiling_and_the_recovery(clock):
    log = Recorder()
    outage = Outage(log, "down", "up again")
    delay = 1.0
    for _ in range(12):  # 1, 2, 4, 8, 16, then the 30 s ceiling
        outage.failed("connection refused", delay)
        clock[0] += delay
        delay = min(delay * 2, MAX_RETRY_SECONDS)
    outage.succeeded()
    events = [(level, event, fields.get("retry_in_seconds")) for level, event, fields in log.lines]
    assert events == [
        ("warning", "down", 1.0),
        ("warning", "down", 30.0),
        ("info", "up again", None),
    ]
    assert log.lines[1][2]["attempts"] == 6
    assert log.lines[2][2]["after_attempts"] == 12


def test_a_different_error_is_a_new_state(clock):
    log = Recorder()
    outage = Outage(log, "down", "up again")
    outage.failed("refused", 1)
    outage.failed("refused", 2)
    outage.failed("certificate rejected", 4)
    assert [fields["error"] for _, _, fields in log.lines] == ["refused", "certificate rejected"]


def test_a_long_outage_is_reminded_now_and_then(clock):
    log = Recorder()
    outage = Outage(log, "down", "up again")
    for _ in range(int(REMINDER_SECONDS / 30) * 2 + 1):
        outage.failed("refused", 30)
        clock[0] += 30
    assert 2 <= len(log.lines) <= 4


def test_success_without_failures_says_nothing(clock):
    log = Recorder()
    Outage(log, "down", "up again").succeeded()
    assert log.lines == []


async def test_until_stopped_gives_up_when_stopped_and_returns_on_success():
    log = Recorder()
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError("not yet")
        return "done"

    stop = asyncio.Event()
    pauses.FIRST_RETRY_SECONDS, first = 0.01, pauses.FIRST_RETRY_SECONDS
    try:
        outage = Outage(log, "down", "up")
        assert await until_stopped(attempt, outage, str, stop) == "done"
        stop.set()
        assert await until_stopped(attempt, Outage(log, "down", "up"), str, stop) is None
    finally:
        pauses.FIRST_RETRY_SECONDS = first
    assert [event for _, event, _ in log.lines] == ["down", "up"]
