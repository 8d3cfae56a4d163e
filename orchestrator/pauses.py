"""Waiting inside the daemon: every wait ends early when shutdown begins."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 30.0


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep for `seconds`, or less when `stop` is set first."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


async def until_stopped(
    attempt: Callable[[], Awaitable[T]],
    failed: Callable[[Exception, float], None],
    stop: asyncio.Event,
    retry_on: tuple[type[Exception], ...] = (Exception,),
) -> T | None:
    """`attempt()` until it succeeds, with exponential backoff; None when stopped first."""
    delay = FIRST_RETRY_SECONDS
    while not stop.is_set():
        try:
            return await attempt()
        except retry_on as exc:
            failed(exc, delay)
        await pause(stop, delay)
        delay = min(delay * 2, MAX_RETRY_SECONDS)
    return None
