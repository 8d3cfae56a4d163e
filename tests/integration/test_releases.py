"""Release queues against a real Temporal dev server: a job run hands its work to a child on the
queue of the release that took it; a run stays on its release's queue while another
release takes new runs; a drainer leaves only once nothing is left on its queue; and a fleet of
more than 100 hosts needs nothing on the server beyond its task queues."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from temporalio import workflow
from temporalio.api.workflowservice.v1 import ListWorkerDeploymentsRequest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities.hoststatus import HostActivities
from orchestrator.contract import (
    HOST_PING_WORKFLOW_TYPE,
    INVALID_JOB_REQUEST,
    JOB_WORKFLOW_TYPE,
    DockerStatus,
    HostStatus,
    WorkerStatus,
    release_run_id,
    task_queue,
)
from orchestrator.releases import build_identity, open_runs, run_queue
from orchestrator.version import VERSION
from orchestrator.worker import drain_loop, host_queue_worker
from tests.waiting import async_wait_for

pytestmark = pytest.mark.integration

FLEET = 120  # more than the 100 worker deployments a default server registers per namespace


@workflow.defn(name=JOB_WORKFLOW_TYPE, sandboxed=False)  # a test stand-in, no I/O
class StandIn:
    """A job run that holds until told: which queue ends it is what the test looks at."""

    def __init__(self) -> None:
        self.go = False

    @workflow.signal
    def finish(self) -> None:
        self.go = True

    @workflow.run
    async def run(self, _: Any) -> str:
        await workflow.wait_condition(lambda: self.go)
        return workflow.info().task_queue


class IdleHost(HostActivities):
    """`HostPing`'s activity without a Docker engine: only `collect` is used."""

    def __init__(self, host_id: str) -> None:
        self.host_id = host_id

    async def collect(self) -> HostStatus:
        return HostStatus(
            host_id=self.host_id,
            sent_at="2026-11-30T00:00:00Z",
            orchestrator_version=VERSION,
            build_id=VERSION,
            managed_agents=[],
            running_runs=[],
            docker=DockerStatus(reachable=True, version="20.10"),
            worker=WorkerStatus(polling=True, slots_used=0, slots_max=8),
        )


@asynccontextmanager
async def release(client: Client, host_id: str, version: str) -> AsyncIterator[Worker]:
    """What a release (or its drainer) polls for runs: its own queue."""
    worker = Worker(
        client,
        task_queue=run_queue(host_id, version),
        workflows=[StandIn],
        deployment_config=build_identity(version),
    )
    async with worker:
        yield worker


def request(job_id: str) -> dict[str, Any]:
    return {"job_id": job_id, "run_id": "r1", "agent": "datahealth",
            "parameters": {"file_name": "a.yml"}}  # fmt: skip


async def start(client: Client, host_id: str, job_id: str) -> WorkflowHandle[Any, Any]:
    """As Bigeye starts a job run: on the host queue."""
    return await client.start_workflow(
        JOB_WORKFLOW_TYPE,
        request(job_id),
        id=f"agent-job-{job_id}",
        task_queue=task_queue(host_id),
        execution_timeout=timedelta(minutes=2),
    )


async def on_queue(client: Client, host_id: str, version: str, count: int) -> None:
    async def there() -> bool:
        return await open_runs(client, host_id, version) == count

    await async_wait_for(there, 30, f"{count} open run(s) on {run_queue(host_id, version)}")


async def test_a_run_hands_its_work_to_the_queue_of_the_release_that_took_it(
    client: Client,
) -> None:
    host_id = f"it-{uuid.uuid4().hex[:10]}"
    job_id = f"j-{uuid.uuid4().hex[:8]}"
    async with (
        host_queue_worker(client, host_id, IdleHost(host_id)),
        release(client, host_id, VERSION),
    ):
        handle = await start(client, host_id, job_id)
        await on_queue(client, host_id, VERSION, 1)
        child = client.get_workflow_handle(release_run_id(handle.id, VERSION, "r1"))
        assert (await child.describe()).status == WorkflowExecutionStatus.RUNNING
        await child.signal(StandIn.finish)
        # the run Bigeye started answers with its child's result
        assert await handle.result() == run_queue(host_id, VERSION)
        assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED

        # an invalid request fails where it arrived, and goes nowhere
        bad = await client.start_workflow(
            JOB_WORKFLOW_TYPE,
            {**request("j-bad"), "agent": "nope"},
            id=f"agent-job-bad-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue(host_id),
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await bad.result()
        assert isinstance(failed.value.cause, ApplicationError)
        assert failed.value.cause.type == INVALID_JOB_REQUEST
        assert (await bad.describe()).status == WorkflowExecutionStatus.FAILED


async def test_a_run_stays_with_its_release_and_the_drainer_leaves_when_it_is_done(
    client: Client,
) -> None:
    host_id = f"it-{uuid.uuid4().hex[:10]}"
    old_job, new_job = f"old-{uuid.uuid4().hex[:8]}", f"new-{uuid.uuid4().hex[:8]}"
    async with release(client, host_id, "1.0"):
        # release 1.0's daemon took this run: it is on 1.0's queue
        old = await client.start_workflow(
            JOB_WORKFLOW_TYPE, {}, id=f"agent-job-{old_job}", task_queue=run_queue(host_id, "1.0")
        )
        await on_queue(client, host_id, "1.0", 1)

        # the upgrade: 2.0 polls the host queue now, 1.0 keeps a drainer on its own queue
        async with release(client, host_id, "2.0"):
            new = await client.start_workflow(
                JOB_WORKFLOW_TYPE,
                {},
                id=f"agent-job-{new_job}",
                task_queue=run_queue(host_id, "2.0"),
            )
            await on_queue(client, host_id, "2.0", 1)
            assert await open_runs(client, host_id, "1.0") == 1

            stop = asyncio.Event()
            draining = asyncio.create_task(
                drain_loop(client, host_id, 0.2, stop, version="1.0", settle_seconds=1.0)
            )
            done, _ = await asyncio.wait([draining], timeout=3)
            assert not done, "the drainer left with a run of its release open"
            await old.signal(StandIn.finish)
            assert await old.result() == run_queue(host_id, "1.0")
            assert await asyncio.wait_for(draining, 30) is True
            assert stop.is_set()  # it stops its process

            # 2.0's run was never seen by 1.0, and is still open
            assert await open_runs(client, host_id, "2.0") == 1
            await new.signal(StandIn.finish)
            assert await new.result() == run_queue(host_id, "2.0")


async def test_more_than_a_hundred_hosts_answer_pings_with_nothing_per_host_on_the_server(
    temporal_address: str,
) -> None:
    """Worker Deployment Versioning stopped at 100 hosts (one deployment each); queues do not."""
    client = await Client.connect(temporal_address, data_converter=pydantic_data_converter)
    hosts = [f"fleet-{uuid.uuid4().hex[:6]}-{i:03d}" for i in range(FLEET)]
    async with AsyncExitStack() as stack:
        for host_id in hosts:
            await stack.enter_async_context(host_queue_worker(client, host_id, IdleHost(host_id)))

        async def ping(host_id: str) -> str:
            status = await client.execute_workflow(
                HOST_PING_WORKFLOW_TYPE,
                id=f"ping-{host_id}",
                task_queue=task_queue(host_id),
                execution_timeout=timedelta(seconds=60),
            )
            return str(status["host_id"])

        answered = await asyncio.gather(*(ping(h) for h in hosts))
        assert answered == hosts

    deployments = await client.workflow_service.list_worker_deployments(
        ListWorkerDeploymentsRequest(namespace=client.namespace)
    )
    assert [d.name for d in deployments.worker_deployments] == []
