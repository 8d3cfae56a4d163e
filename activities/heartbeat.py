"""Heartbeats from a background task, so pulls, waits and stops never starve them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from temporalio import activity

HEARTBEAT_EVERY_SECONDS = 3.0


@contextlib.asynccontextmanager
async def heartbeating(
    details: Callable[[], Any], every: float = HEARTBEAT_EVERY_SECONDS, at_once: bool = True
) -> AsyncIterator[None]:
    """Heartbeat `details()` now (or, `at_once=False`, first after `every`) and every `every`
    seconds until the block ends.

    Heartbeats are throttled (the worker's heartbeat throttle interval) and a cancel is heard
    only in the answer to one: a short step that beats at once delays the first beat of the
    step after it, and with it the cancel that arrived meanwhile.
    """

    async def beat() -> None:
        if not at_once:
            await asyncio.sleep(every)
        while True:
            activity.heartbeat(details())
            await asyncio.sleep(every)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
