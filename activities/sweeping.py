"""Orphan sweeping in two phases: mark, then remove after a grace period.

A job container is an orphan when its run's workflow is no longer open: Bigeye terminated it,
its execution timeout ended it, or it finished while the container could not be removed. The
first sweep that sees an orphan only marks it; a later one, at least `grace` seconds on, stops
it (SIGTERM, the grace, SIGKILL), logs its exit code and last lines, and removes it. Docker
labels are immutable, so the mark lives in the sweeper; a restarted orchestrator marks again,
which only ever delays a removal.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiodocker
import structlog

from activities import containers
from activities.logstream import tail_of
from orchestrator.contract import LABEL_JOB_ID, LABEL_RUN_ID, LABEL_WORKFLOW_ID

log = structlog.get_logger("bigeye.orchestrator.sweep")
STOP_GRACE_SECONDS = 10

RunIsOpen = Callable[[str], Awaitable[bool | None]]  # None: cannot tell now (Temporal away)


class Sweeper:
    def __init__(
        self,
        docker: aiodocker.Docker,
        host_id: str,
        run_is_open: RunIsOpen,
        grace_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.docker = docker
        self.host_id = host_id
        self.run_is_open = run_is_open
        self.grace_seconds = grace_seconds
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
            is_open = await self.run_is_open(labels.get(LABEL_WORKFLOW_ID, ""))
            if is_open is None:
                continue  # no verdict without Temporal: leave the mark as it is
            if is_open:
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
            await self._remove(container_id, fields)
            self.marked.pop(container_id, None)
            removed.append(container_id)
        for gone in set(self.marked) - seen:
            del self.marked[gone]
        return removed

    async def _remove(self, container_id: str, fields: dict[str, Any]) -> None:
        info = await containers.inspect_ours(self.docker, container_id, self.host_id)
        if info is None:
            return
        if info["State"].get("Status") not in ("exited", "dead", "created"):
            await containers.stop(self.docker, container_id, STOP_GRACE_SECONDS)
            info = await containers.inspect(self.docker, container_id) or info
        lines = [
            line.text
            async for line in containers.follow_logs(
                self.docker, container_id, since=None, follow=False, tail=20, timestamps=False
            )
        ]
        # saved first (in the log, the only record an orphan has left), then removed
        log.warning(
            "orphan job container swept",
            exit_code=info["State"].get("ExitCode"),
            oom_killed=bool(info["State"].get("OOMKilled")),
            log_tail=tail_of(lines, 20),
            **fields,
        )
        await containers.remove(self.docker, container_id)


def _fields(item: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    return {
        "container": (item.get("Names") or ["?"])[0].lstrip("/"),
        "state": item.get("State"),
        "job_id": labels.get(LABEL_JOB_ID),
        "run_id": labels.get(LABEL_RUN_ID),
    }
