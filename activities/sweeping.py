"""Orphan sweeping in two phases: mark, then stop and remove after a grace period.

A job container is an orphan when the run it belongs to is no longer open: Bigeye terminated
it, its execution timeout ended it, or it finished while the container could not be removed.
Liveness is decided per run, not per job: a newer run of the same job being open does not keep
an older run's container alive. When Temporal cannot answer, nothing is decided.

The first sweep that sees an orphan only marks it; a later one, at least `grace` seconds on,
stops it (SIGTERM, its agent's grace, SIGKILL), logs its ending (the only record an orphan has
left) and removes it. Docker labels are immutable, so the mark lives in the sweeper; a
restarted orchestrator marks again, which only ever delays a removal.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiodocker
import structlog

from activities import containers
from activities.ending import finalize, has_ended, stop_and_drain
from orchestrator import metrics
from orchestrator.contract import LABEL_AGENT, LABEL_JOB_ID, LABEL_RUN_ID

log = structlog.get_logger("bigeye.orchestrator.sweep")
ORPHAN_TAIL_LINES = 20

# labels of a job container → is its run open? None: cannot tell now (Temporal away)
RunIsLive = Callable[[dict[str, str]], Awaitable[bool | None]]


class Sweeper:
    def __init__(
        self,
        docker: aiodocker.Docker,
        host_id: str,
        run_is_live: RunIsLive,
        grace_seconds: float,
        stop_grace: Callable[[str], int] = lambda agent: 10,
        on_removed: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.docker = docker
        self.host_id = host_id
        self.run_is_live = run_is_live
        self.grace_seconds = grace_seconds
        self.stop_grace = stop_grace
        self.on_removed = on_removed
        self.clock = clock
        self.marked: dict[str, float] = {}

    async def sweep(self) -> list[str]:
        """One pass; returns the ids of the containers it removed."""
        removed: list[str] = []
        seen: set[str] = set()
        for item in await containers.list_managed(self.docker, self.host_id):
            container_id = str(item["Id"])
            labels: dict[str, str] = item.get("Labels") or {}
            seen.add(container_id)
            live = await self.run_is_live(labels)
            if live is None:
                continue  # no verdict without Temporal: leave the mark as it is
            if live:
                self.marked.pop(container_id, None)
                continue
            fields = _fields(item, labels)
            if container_id not in self.marked:
                self.marked[container_id] = self.clock()
                log.warning(
                    "orphan job container marked; removing after the grace period",
                    grace_seconds=self.grace_seconds,
                    **fields,
                )
                continue
            if self.clock() - self.marked[container_id] < self.grace_seconds:
                continue
            await self._remove(container_id, labels.get(LABEL_AGENT, ""), fields)
            self.marked.pop(container_id, None)
            removed.append(container_id)
        for gone in set(self.marked) - seen:
            del self.marked[gone]
        return removed

    async def _remove(self, container_id: str, agent: str, fields: dict[str, Any]) -> None:
        info = await containers.inspect_ours(self.docker, container_id, self.host_id)
        if info is None:
            return
        if not has_ended(info):
            grace = self.stop_grace(agent)
            log.warning("stopping orphan job container", grace_seconds=grace, **fields)
            await stop_and_drain(self.docker, container_id, grace)
        end = await finalize(self.docker, container_id, self.host_id)
        if end is not None:
            log.warning(
                "orphan job container swept",
                exit_code=end.exit_code,
                oom_killed=end.oom_killed,
                started_at=end.started_at,
                finished_at=end.finished_at,
                log_tail=end.log_tail[-ORPHAN_TAIL_LINES:],
                **fields,
            )
        await containers.remove(self.docker, container_id)
        metrics.ORPHANS_SWEPT.inc()
        self.on_removed()


def _fields(item: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    return {
        "container": (item.get("Names") or ["?"])[0].lstrip("/"),
        "state": item.get("State"),
        "job_id": labels.get(LABEL_JOB_ID),
        "run_id": labels.get(LABEL_RUN_ID),
        "agent": labels.get(LABEL_AGENT),
    }
