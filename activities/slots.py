"""Admission: how many job containers may exist at once, on the host and per agent.

The Docker engine is the source of truth (labelled containers that are created or running),
so the count survives an orchestrator restart; a process lock makes count-then-create atomic
within the one orchestrator a host runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiodocker

from activities.containers import list_managed
from orchestrator.contract import LABEL_AGENT

ACTIVE_STATES = frozenset({"created", "running", "restarting", "paused", "removing"})
RECHECK_SECONDS = 2.0


class SlotGate:
    def __init__(self, max_jobs: int) -> None:
        self.max_jobs = max_jobs
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()

    def released(self) -> None:
        """A job container went away: waiting launches re-count now rather than later."""
        self._changed.set()

    async def used(self, docker: aiodocker.Docker, host_id: str) -> list[dict[str, Any]]:
        containers = await list_managed(docker, host_id)
        return [c for c in containers if c.get("State") in ACTIVE_STATES]

    @contextlib.asynccontextmanager
    async def admitted(
        self,
        docker: aiodocker.Docker,
        host_id: str,
        agent: str,
        agent_max: int,
        on_wait: Callable[[int, int], None],
    ) -> AsyncIterator[None]:
        """Holds the gate while the caller creates and starts its container."""
        while True:
            await self._lock.acquire()
            try:
                active = await self.used(docker, host_id)
                per_agent = sum(
                    1 for c in active if (c.get("Labels") or {}).get(LABEL_AGENT) == agent
                )
                if len(active) < self.max_jobs and per_agent < agent_max:
                    yield
                    return
            finally:
                self._lock.release()
            on_wait(len(active), per_agent)
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RECHECK_SECONDS):
                    await self._changed.wait()
