"""The floor: what the Engine API itself takes for a job, with the orchestrator's own create
body (from the same bigeye_agent.yml, by the same planning code) on the same `bigeye-jobs`
network, driven by aiodocker as the orchestrator drives it. Nothing else in between."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import aiodocker

from activities.agents import resolve
from orchestrator.contract import parse_job_request
from orchestrator.hostconfig import load_host_config
from orchestrator.version import VERSION

BENCH_LABEL = "com.bigeye.bench.floor"


def floor_body(config: Path, host_id: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """The create body the orchestrator would send, with its labels swapped for the bench's own
    (so the orchestrator's slot count and sweeper never see the floor's containers)."""
    request = parse_job_request(
        {"job_id": "floor", "run_id": "r1", "agent": "datahealth", "parameters": parameters}
    )
    resolution = resolve(
        request,
        load_host_config(config),
        host_id,
        host_dir=str(config.parent),
        config_root=config.parent,
        version=VERSION,
    )
    assert resolution.plan is not None, resolution.message
    body = dict(resolution.plan.create_body)
    body["Labels"] = {BENCH_LABEL: "true"}
    return body


class Floor:
    def __init__(self, docker: aiodocker.Docker, body: dict[str, Any]) -> None:
        self.docker = docker
        self.body = body

    async def create_start(self) -> tuple[str, float]:
        """Create and start; the container's id and when the call began (epoch seconds)."""
        began = time.time()
        container = await self.docker.containers.create(
            self.body, name=f"bench-floor-{uuid.uuid4().hex[:10]}"
        )
        await container.start()
        return container.id, began

    async def lifecycle(self) -> float:
        """create, start, wait, logs, remove: a zero-second job done by hand. Seconds."""
        began = time.perf_counter()
        container_id, _ = await self.create_start()
        container = self.docker.containers.container(container_id)
        await container.wait()
        await container.log(stdout=True, stderr=True, tail=50)
        await container.delete(force=True)
        return time.perf_counter() - began

    async def many(self, count: int, concurrency: int) -> float:
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate:
                await self.lifecycle()

        began = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(count)))
        return time.perf_counter() - began

    async def remove(self, container_id: str) -> None:
        await self.docker.containers.container(container_id).delete(force=True)


class StartEvents:
    """Docker's `start` events, kept by container id and run id label: when a container
    started, as the engine stamped it (the same clock as time.time() on this host)."""

    def __init__(self, docker: aiodocker.Docker) -> None:
        self.by_id: dict[str, float] = {}
        self.by_run: dict[str, float] = {}
        self._changed = asyncio.Event()
        self._sub = docker.events.subscribe(filters={"event": ["start"]})
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            event = await self._sub.get()
            if event is None:
                return
            when = int(event.get("timeNano", 0)) / 1e9
            actor = event.get("Actor", {})
            self.by_id[actor.get("ID", "")] = when
            run_id = actor.get("Attributes", {}).get("com.bigeye.orchestrator.run-id")
            if run_id:
                self.by_run[run_id] = when
            self._changed.set()

    async def started(self, *, container_id: str = "", run_id: str = "") -> float:
        async with asyncio.timeout(120):
            while True:
                found = self.by_id.get(container_id) if container_id else self.by_run.get(run_id)
                if found is not None:
                    return found
                self._changed.clear()
                await self._changed.wait()

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
