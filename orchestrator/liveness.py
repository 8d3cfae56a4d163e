"""Whether a job container's run is still open, asked of Temporal (for the orphan sweep).

A container belongs to a live run only if the workflow named by its `workflow-id` label is open
and is the run of its `run-id` label: the open execution is the one that created it (its
`workflow-run-id` label), or one that was started with the same request (a reset). Anything
Temporal cannot answer now is unknown, never an orphan.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.sweeping import RunIsLive
from orchestrator.contract import LABEL_RUN_ID, LABEL_WORKFLOW_ID, LABEL_WORKFLOW_RUN_ID

RPC_TIMEOUT = timedelta(seconds=5)


def run_checker(client: Client) -> RunIsLive:
    async def is_live(labels: dict[str, str]) -> bool | None:
        workflow_id = labels.get(LABEL_WORKFLOW_ID)
        if not workflow_id:
            return False
        try:
            described = await client.get_workflow_handle(workflow_id).describe(
                rpc_timeout=RPC_TIMEOUT
            )
            if described.status != WorkflowExecutionStatus.RUNNING:
                return False
            if described.run_id == labels.get(LABEL_WORKFLOW_RUN_ID):
                return True
            started_for = await _requested_run_id(client, workflow_id, described.run_id)
        except RPCError as exc:
            return False if exc.status == RPCStatusCode.NOT_FOUND else None
        except Exception:  # a timeout or a broken connection: no verdict
            return None
        return started_for is not None and started_for == labels.get(LABEL_RUN_ID)

    return is_live


async def _requested_run_id(client: Client, workflow_id: str, run_id: str | None) -> str | None:
    """The `run_id` of the request an execution was started with."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    async for event in handle.fetch_history_events(rpc_timeout=RPC_TIMEOUT):
        payloads = event.workflow_execution_started_event_attributes.input.payloads
        values: list[Any] = await client.data_converter.decode(payloads) if payloads else []
        first = values[0] if values else None
        return str(first.get("run_id")) if isinstance(first, dict) else None
    return None
