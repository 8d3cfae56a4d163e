"""Records `AgentJobRun` histories for tests/unit/test_workflow_replay.py.

Run it against a Temporal server and an orchestrator of the release to record, whose host has
`datahealth` (quick) and `lineage_plus` (slow, DEMO_SLEEP_SECONDS >= 10) installed and no
`external_monitors`:

    python scripts/record_histories.py 127.0.0.1:7233 replay-host tests/unit/agent_job_histories
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowFailureError


async def record(client: Client, host_id: str, out: Path, name: str, request: dict[str, Any],
                 cancel: bool = False) -> None:  # fmt: skip
    handle = await client.start_workflow(
        "AgentJobRun",
        request,
        id=f"agent-job-{request['job_id']}",
        task_queue=f"agent-orchestrator.{host_id}",
        execution_timeout=timedelta(minutes=5),
    )
    if cancel:
        while (await handle.query("status"))["phase"] != "running":  # noqa: ASYNC110 - polls a query
            await asyncio.sleep(0.2)
        await handle.cancel()
    with contextlib.suppress(WorkflowFailureError):
        await handle.result()
    (out / f"{name}.json").write_text((await handle.fetch_history()).to_json())


async def main(address: str, host_id: str, out: str) -> None:
    client = await Client.connect(address)

    def request(agent: str, parameters: dict[str, Any]) -> dict[str, Any]:
        return {"job_id": uuid.uuid4().hex[:8], "run_id": "r1", "agent": agent,
                "parameters": parameters}  # fmt: skip

    target = Path(out)
    await record(
        client, host_id, target, "succeeded", request("datahealth", {"file_name": "a.yml"})
    )
    await record(client, host_id, target, "canceled",
                 request("lineage_plus", {"connectors": ["snowflake"]}), cancel=True)  # fmt: skip
    await record(client, host_id, target, "invalid", request("datahealth", {"file_name": "../x"}))
    await record(client, host_id, target, "not_installed",
                 request("external_monitors", {"connector": "x"}))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
