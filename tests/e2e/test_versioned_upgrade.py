"""Release queues across `compose upgrade`: a run started by release N is finished by N even when
N+1 changes the job workflow incompatibly, through N's drainer on N's release queue; N+1 takes
every new run; the drainer survives a crash and leaves once it has nothing left."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from orchestrator.contract import job_workflow_id, release_run_id, task_queue
from orchestrator.releases import run_queue
from tests.e2e.conftest import Cloud, HostDir, run
from tests.e2e.test_migrate import build_next_version, host_on_channel, own_channel
from tests.e2e.test_register import finished_run
from tests.waiting import wait_for
from workflows.agent_job import AgentJobRun

pytestmark = pytest.mark.e2e
NEXT = "0.1.98"

REPLAY = """
import asyncio, sys
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from workflows.agent_job import AgentJobRun

async def main() -> None:
    history = WorkflowHistory.from_json(sys.argv[1], sys.stdin.read())
    replayer = Replayer(workflows=[AgentJobRun], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(
        history, raise_on_replay_failure=False
    )
    failure = result.replay_failure
    print("replayed" if failure is None else f"{type(failure).__name__}: {failure}")

if __name__ == "__main__":
    asyncio.run(main())
"""


def histories(cloud: Cloud, job_id: str) -> list[WorkflowHistory]:
    """Every run of the job's workflow, oldest first."""

    async def fetch() -> list[WorkflowHistory]:
        client = await connect(cloud)
        found = [
            e async for e in client.list_workflows(f"WorkflowId = '{job_workflow_id(job_id)}'")
        ]
        found.sort(key=lambda e: e.start_time)
        return [
            await client.get_workflow_handle(e.id, run_id=e.run_id).fetch_history() for e in found
        ]

    return asyncio.run(fetch())


def child_history(cloud: Cloud, job_id: str, version: str, run_id: str) -> WorkflowHistory:
    """The history of a run's child on the release queue, which did the run's work."""

    async def fetch() -> WorkflowHistory:
        child_id = release_run_id(job_workflow_id(job_id), version, run_id)
        return await (await connect(cloud)).get_workflow_handle(child_id).fetch_history()

    return asyncio.run(fetch())


async def connect(cloud: Cloud) -> Client:
    endpoints = cloud.endpoints
    return await Client.connect(
        endpoints["temporal_plain_address"], namespace=endpoints["namespace"]
    )


def completed_by(events: WorkflowHistory) -> set[str]:
    """The build ids of the workers that completed the run's workflow tasks."""
    found = set()
    for event in events.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            attrs = event.workflow_task_completed_event_attributes
            found.add(attrs.worker_version.build_id)  # the release's stamp; routing is by queue
    return found


def queue_of(events: WorkflowHistory) -> str:
    return events.events[0].workflow_execution_started_event_attributes.task_queue.name


def timers(events: WorkflowHistory) -> int:
    return sum(e.event_type == EventType.EVENT_TYPE_TIMER_STARTED for e in events.events)


def replay_in(image: str, events: WorkflowHistory) -> str:
    done = subprocess.run(
        ["docker", "run", "--rm", "-i", "--network", "none", "--entrypoint", "python", image,
         "-c", REPLAY, events.workflow_id],
        input=events.to_json(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def drainers(host: HostDir) -> list[dict[str, Any]]:
    done = host.agent_cli("compose", "status", "--json")
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout)["drainers"])


def inspect(name: str) -> dict[str, Any]:
    done = run(["docker", "inspect", name])
    return dict(json.loads(done.stdout)[0]) if done.returncode == 0 else {}


def test_an_incompatible_release_mid_run_leaves_the_run_to_the_release_that_started_it(
    cloud: Cloud, make_host_dir: Any
) -> None:
    with own_channel() as channel:
        host, before = host_on_channel(cloud, make_host_dir, channel, job_seconds=25)
        # streamed from now on: the engine keeps only its last 256 events for a later look
        creates = subprocess.Popen(
            ["docker", "events", "--filter", "event=create", "--filter",
             f"label=com.bigeye.orchestrator.host-id={host.host_id}", "--format",
             '{{index .Actor.Attributes "com.bigeye.orchestrator.run-id"}}'],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        code, started, err = cloud.run_job(
            host.host_id, "datahealth", "file_name=a.yml", wait=False
        )
        assert code == 0 and started is not None, err
        wait_for(host.job_containers, 60, "the job's container")

        build_next_version(channel, NEXT, "incompatible-version.Dockerfile")
        done = host.agent_cli("compose", "upgrade")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"upgraded the orchestrator: {before} → {NEXT}" in done.stdout, done.stdout
        drainer = f"{host.project}-drain-{before}"
        assert f"orchestrator {before} finishes the runs it started in {drainer}" in done.stdout
        assert [d["name"] for d in drainers(host)] == [drainer]

        # a crash of the drainer: Docker's restart policy brings it back
        pid = wait_for(lambda: inspect(drainer).get("State", {}).get("Pid"), 30, "its process")
        os.kill(pid, signal.SIGKILL)
        wait_for(
            lambda: (
                inspect(drainer).get("RestartCount", 0) >= 1
                and inspect(drainer)["State"]["Running"]
            ),
            60,
            "Docker to restart the drainer",
        )

        try:
            finished = wait_for(lambda: finished_run(cloud, started["run_id"]), 180, "the old run")
        except AssertionError:  # what the two releases said is what explains it
            for name in (drainer, f"{host.project}-bigeye-agent-orchestrator-1"):
                said = run(["docker", "logs", "--tail", "60", name])
                print(f"----- {name}\n{said.stdout[-6000:]}{said.stderr[-6000:]}")
            raise
        assert finished["status"] == "succeeded", finished
        assert finished["result"]["orchestrator_version"] == before, finished
        creates.terminate()
        created = (creates.communicate(timeout=10)[0] or "").split()
        assert created.count(started["run_id"]) == 1, created

        code, later, err = cloud.run_job(host.host_id, "datahealth", "file_name=b.yml", wait=True)
        assert code == 0 and later is not None, err
        assert later["status"] == "succeeded", later
        assert later["result"]["orchestrator_version"] == NEXT, later

        assert later["job_id"] == started["job_id"]  # two runs of one job: one workflow id
        # each run arrived on the host queue and handed its work to a child on its release's
        # queue; the old run's own tasks after the upgrade were N+1's (that part is compatible)
        old_parent, new_parent = histories(cloud, started["job_id"])
        old_run = child_history(cloud, started["job_id"], before, started["run_id"])
        new_run = child_history(cloud, started["job_id"], NEXT, later["run_id"])
        assert [queue_of(h) for h in (old_parent, old_run, new_parent, new_run)] == [
            task_queue(host.host_id),
            run_queue(host.host_id, before),
            task_queue(host.host_id),
            run_queue(host.host_id, NEXT),
        ]
        assert completed_by(old_run) == {before}, completed_by(old_run)
        assert completed_by(old_parent) == {before, NEXT}, completed_by(old_parent)
        assert completed_by(new_parent) == completed_by(new_run) == {NEXT}
        assert timers(old_run) == 0 and timers(new_run) >= 1  # N+1's workflow is the changed one
        assert replay_in(channel, old_parent) == "replayed"  # N+1 replays the part it ran
        # the change is incompatible: N+1's code cannot replay the run N started; N's can
        assert "NondeterminismError" in replay_in(channel, old_run)
        replayed = asyncio.run(
            Replayer(
                workflows=[AgentJobRun], data_converter=pydantic_data_converter
            ).replay_workflow(old_run, raise_on_replay_failure=False)
        )
        assert replayed.replay_failure is None, replayed.replay_failure

        # nothing left for the old release: its drainer exits 0, the next upgrade removes it
        wait_for(lambda: drainers(host)[0]["finished"], 120, "the drainer to finish")
        assert inspect(drainer)["State"]["ExitCode"] == 0
        again = host.agent_cli("compose", "upgrade")
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"removed {drainer}" in again.stdout and drainers(host) == []
        assert f"the orchestrator is up to date ({NEXT})" in again.stdout
