"""The AgentHeartbeat workflow against a real Temporal dev server: records, ignores, continues."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from devcloud import db, heartbeat_workflow, hosts
from devcloud.heartbeat_activity import HeartbeatRecorder
from devcloud.heartbeat_workflow import AgentHeartbeat
from tests.waiting import async_wait_for

pytestmark = pytest.mark.integration


def status(host_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "host_id": host_id,
        "sent_at": "2025-01-01T00:00:00Z",
        "orchestrator_version": "0.1.0",
        "build_id": "b",
        "managed_agents": [],
        "running_runs": [],
        "docker": {"reachable": True, "version": None},
        "worker": {"polling": True, "slots_used": 0, "slots_max": 8},
        **overrides,
    }


async def test_records_valid_heartbeats_and_continues_as_new(
    temporal_address: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Unsandboxed so that the lowered threshold is the one the workflow sees.
    monkeypatch.setattr(heartbeat_workflow, "SIGNALS_PER_RUN", 2)
    conn = db.connect(tmp_path)
    client = await Client.connect(temporal_address)
    host_id = f"hb-{uuid.uuid4().hex[:8]}"
    workflow_id = f"agent-heartbeat-{host_id}"
    queue = f"control-plane-{uuid.uuid4().hex[:6]}"

    def received() -> int:
        row = conn.execute("SELECT received FROM heartbeats WHERE host_id = ?", (host_id,))
        found = row.fetchone()
        return int(found[0]) if found else 0

    async def beat(payload: Any) -> None:
        await client.start_workflow(
            "AgentHeartbeat", {"host_id": host_id}, id=workflow_id, task_queue=queue,
            start_signal="heartbeat", start_signal_args=[payload],
        )  # fmt: skip

    worker = Worker(
        client,
        task_queue=queue,
        workflows=[AgentHeartbeat],
        activities=[HeartbeatRecorder(conn).record],
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    async with worker:
        await beat({"not": "a status"})
        await beat(status("someone-else"))
        for n in range(1, 6):
            await beat(status(host_id, build_id=f"b{n}"))

            async def recorded(n: int = n) -> bool:
                return received() == n

            await async_wait_for(recorded, 15, f"heartbeat {n} recorded")
        assert hosts.last_status(conn, host_id)["build_id"] == "b5"

        async def statuses() -> list[str]:
            runs = [r async for r in client.list_workflows(f"WorkflowId = '{workflow_id}'")]
            return sorted(str(r.status) for r in runs)

        async def two_continued_one_running() -> bool:
            found = await statuses()  # visibility trails the runs by a moment
            return found.count(str(WorkflowExecutionStatus.CONTINUED_AS_NEW)) == 2 and (
                found.count(str(WorkflowExecutionStatus.RUNNING)) == 1
            )

        await async_wait_for(two_continued_one_running, 15, "two runs continued as new, one open")
        assert len(await statuses()) == 3
        await client.get_workflow_handle(workflow_id).terminate("test over")
    conn.close()
