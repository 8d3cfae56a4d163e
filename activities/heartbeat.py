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
    details: Callable[[], Any], every: float = HEARTBEAT_EVERY_SECONDS
) -> AsyncIterator[None]:
    """Heartbeat `details()` now and every `every` seconds until the block ends."""

    async def beat() -> None:
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
