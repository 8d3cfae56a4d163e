"""Failed logins are limited per client and overall, so keys cannot be tried at speed.

A key is 256 random bits, so guessing is hopeless anyway; the limit keeps a runaway script
from filling the log and the event loop.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Final

FAILURES_PER_CLIENT: Final = 5
FAILURES_OVERALL: Final = 50
WINDOW_SECONDS: Final = 60.0
_EVERYONE: Final = "*"


class LoginThrottle:
    def __init__(
        self,
        per_client: int = FAILURES_PER_CLIENT,
        overall: int = FAILURES_OVERALL,
        window_seconds: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = {"client": per_client, _EVERYONE: overall}
        self._window = window_seconds
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, client: str) -> float:
        """Seconds until `client` may try again; 0 when it may now."""
        now = self._clock()
        wait = 0.0
        for key, limit in ((client, self._limits["client"]), (_EVERYONE, self._limits[_EVERYONE])):
            failures = self._recent(key, now)
            if len(failures) >= limit:
                wait = max(wait, failures[-limit] + self._window - now)
        return wait

    def failed(self, client: str) -> None:
        now = self._clock()
        for key in (client, _EVERYONE):
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.get(key, deque())
        while failures and failures[0] <= now - self._window:
            failures.popleft()
        if not failures:
            self._failures.pop(key, None)
        return failures
