"""Tests synchronise on conditions with a deadline, never on fixed sleeps."""

from __future__ import annotations

import asyncio
import time
from typing import Any


def wait_for(predicate: Any, within: float, what: str, interval: float = 0.1) -> Any:
    """The first truthy value of `predicate()`; fails the test after `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {within}s waiting for {what}")


async def async_wait_for(predicate: Any, within: float, what: str) -> Any:
    """The first truthy value of `await predicate()`; fails the test after `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {within}s waiting for {what}")
