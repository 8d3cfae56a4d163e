"""Server-side web sessions: the cookie carries a random token, never the API key.

Sessions live in the server's memory: a restart logs everyone out, which is what a local
stand-in wants. The store is keyed by a digest of the token, so its keys are not cookies.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

SESSION_COOKIE: Final = "devcloud_session"
SESSION_LIFETIME_SECONDS: Final = 12 * 3600
MAX_SESSIONS: Final = 1000


@dataclass(frozen=True)
class Session:
    role: str
    csrf_token: str  # sent back in every form; a cross-site page cannot read it
    expires_at: float


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class SessionStore:
    def __init__(
        self,
        lifetime_seconds: float = SESSION_LIFETIME_SECONDS,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lifetime_seconds = lifetime_seconds
        self._max = max_sessions
        self._clock = clock
        self._sessions: dict[str, Session] = {}

    def create(self, role: str) -> tuple[str, Session]:
        """A new session and the token for its cookie (a fresh token at every login)."""
        self._drop_expired()
        while len(self._sessions) >= self._max:  # oldest first: dicts keep insertion order
            del self._sessions[next(iter(self._sessions))]
        token = secrets.token_urlsafe(32)
        session = Session(role, secrets.token_urlsafe(32), self._clock() + self.lifetime_seconds)
        self._sessions[_digest(token)] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        key = _digest(token)
        session = self._sessions.get(key)
        if session is None:
            return None
        if session.expires_at <= self._clock():
            del self._sessions[key]
            return None
        return session

    def delete(self, token: str | None) -> None:
        if token:
            self._sessions.pop(_digest(token), None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _drop_expired(self) -> None:
        now = self._clock()
        for key in [k for k, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[key]
