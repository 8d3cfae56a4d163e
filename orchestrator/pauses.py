"""Waiting inside the daemon: every wait ends early when shutdown begins.

Retries report state changes, not attempts: the first failure, a different failure, the
backoff reaching its ceiling, a reminder now and then, and the recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")
FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 30.0
REMINDER_SECONDS = 600.0


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep for `seconds`, or less when `stop` is set first."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


class Outage:
    """One line per change of a dependency's state, however often it is retried."""

    def __init__(self, log: Any, failing: str, recovered: str) -> None:
        self.log = log
        self.failing = failing
        self.recovered = recovered
        self.attempts = 0
        self.since = 0.0
        self.error: str | None = None
        self.reported_at = 0.0
        self.ceiling_reported = False

    def failed(self, error: str, retry_in: float, **fields: Any) -> None:
        now = time.monotonic()
        self.attempts += 1
        if self.attempts == 1:
            self.since = now
        first_at_ceiling = retry_in >= MAX_RETRY_SECONDS and not self.ceiling_reported
        if error != self.error or first_at_ceiling or now - self.reported_at >= REMINDER_SECONDS:
            self.log.warning(
                self.failing,
                error=error,
                retry_in_seconds=retry_in,
                attempts=self.attempts,
                down_for_seconds=round(now - self.since, 1),
                **fields,
            )
            self.reported_at = now
            self.ceiling_reported = retry_in >= MAX_RETRY_SECONDS
        self.error = error

    def succeeded(self, **fields: Any) -> None:
        if self.attempts:
            self.log.info(
                self.recovered,
                after_attempts=self.attempts,
                down_for_seconds=round(time.monotonic() - self.since, 1),
                **fields,
            )
        self.attempts, self.error, self.reported_at = 0, None, 0.0
        self.ceiling_reported = False


async def until_stopped(
    attempt: Callable[[], Awaitable[T]],
    outage: Outage,
    describe: Callable[[Exception], str],
    stop: asyncio.Event,
    retry_on: tuple[type[Exception], ...] = (Exception,),
) -> T | None:
    """`attempt()` until it succeeds, with exponential backoff; None when stopped first."""
    delay = FIRST_RETRY_SECONDS
    while not stop.is_set():
        try:
            result = await attempt()
        except retry_on as exc:
            outage.failed(describe(exc), delay)
        else:
            outage.succeeded()
            return result
        await pause(stop, delay)
        delay = min(delay * 2, MAX_RETRY_SECONDS)
    return None
