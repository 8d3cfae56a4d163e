"""Worker Deployment Versioning against a real Temporal dev server: a version claims new runs,
a run stays pinned to the version that started it, and a drainer leaves only once its version
is no longer current and none of its runs is open."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from orchestrator.contract import JOB_WORKFLOW_TYPE, task_queue
from orchestrator.versioning import (
    claim_current,
    current_version,
    deployment_config,
    not_polled_yet,
    open_pinned,
)
from orchestrator.worker import drain_loop
from tests.waiting import async_wait_for

pytestmark = pytest.mark.integration


@workflow.defn(name=JOB_WORKFLOW_TYPE, sandboxed=False)  # a test stand-in, no I/O
class StandIn:
    """A job run that holds until told: which release ends it is what the test looks at."""

    def __init__(self) -> None:
        self.go = False

    @workflow.signal
    def finish(self) -> None:
        self.go = True

    @workflow.run
    async def run(self, _: Any) -> str:
        await workflow.wait_condition(lambda: self.go)
        return workflow.info().task_queue


@asynccontextmanager
async def release(client: Client, host_id: str, version: str) -> AsyncIterator[Worker]:
    worker = Worker(
        client,
        task_queue=task_queue(host_id),
        workflows=[StandIn],
        deployment_config=deployment_config(host_id, version),
    )
    async with worker:
        yield worker


async def claim(client: Client, host_id: str, version: str) -> None:
    async def claimed() -> bool:
        try:
            await claim_current(client, host_id, version)
        except Exception as exc:
            assert not_polled_yet(exc), exc  # anything else is a real failure
            return False
        return True

    await async_wait_for(claimed, 30, f"{version} to become current")


async def start_pinned(
    client: Client, host_id: str, version: str, name: str
) -> WorkflowHandle[Any, Any]:
    """A job run started now, once it is pinned to `version` (the current one)."""
    handle = await client.start_workflow(
        JOB_WORKFLOW_TYPE, {}, id=f"{name}-{host_id}", task_queue=task_queue(host_id)
    )

    async def pinned() -> bool:
        return await open_pinned(client, host_id, version) == 1

    await async_wait_for(pinned, 30, f"the {name} run to be pinned to {version}")
    return handle


async def test_a_pinned_run_keeps_its_release_and_the_drainer_leaves_when_it_is_done(
    client: Client,
) -> None:
    host_id = f"it-{uuid.uuid4().hex[:10]}"
    assert await current_version(client, host_id) is None  # no deployment yet
    async with release(client, host_id, "1.0"):
        await claim(client, host_id, "1.0")
        assert await current_version(client, host_id) == "1.0"
        old = await start_pinned(client, host_id, "1.0", "old")

        async with release(client, host_id, "2.0"):
            await claim(client, host_id, "2.0")
            assert await current_version(client, host_id) == "2.0"
            new = await start_pinned(client, host_id, "2.0", "new")
            assert await open_pinned(client, host_id, "1.0") == 1

            stop = asyncio.Event()
            draining = asyncio.create_task(
                drain_loop(client, host_id, 0.2, stop, version="1.0", settle_seconds=1.0)
            )
            done, _ = await asyncio.wait([draining], timeout=3)
            assert not done, "the drainer left with a run of its version open"
            await old.signal(StandIn.finish)
            assert await old.result() == task_queue(host_id)
            assert await asyncio.wait_for(draining, 30) is True
            assert stop.is_set()  # it stops its process

            # the 2.0 daemon is no drainer: while current it never leaves, even with no run open
            await new.signal(StandIn.finish)
            await new.result()
            stop_2 = asyncio.Event()
            staying = asyncio.create_task(
                drain_loop(client, host_id, 0.2, stop_2, version="2.0", settle_seconds=0.0)
            )
            done, _ = await asyncio.wait([staying], timeout=3)
            assert not done and not stop_2.is_set()
            stop_2.set()
            assert await asyncio.wait_for(staying, 5) is False
