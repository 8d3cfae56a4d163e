"""`AgentHeartbeat`: one workflow per host, fed by the orchestrator's `heartbeat` signals (§3).

Deterministic code only: each valid `HostStatus` is recorded by an activity (which stamps the
server's receive time); the workflow continues-as-new well before Temporal's history limits.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from devcloud.heartbeat_activity import HeartbeatRecord, HeartbeatRecorder
    from orchestrator.contract import (
        HEARTBEAT_SIGNAL,
        HEARTBEAT_WORKFLOW_TYPE,
        HeartbeatStart,
        HostStatus,
        is_valid_host_id,
    )

# ~5,800 signals a day per host at one every 30 s: start over long before the history limits.
SIGNALS_PER_RUN = 500


@workflow.defn(name=HEARTBEAT_WORKFLOW_TYPE)
class AgentHeartbeat:
    def __init__(self) -> None:
        self._pending: list[Any] = []
        self._recorded = 0

    @workflow.signal(name=HEARTBEAT_SIGNAL)
    def heartbeat(self, status: Any) -> None:
        self._pending.append(status)

    @workflow.run
    async def run(self, start: Any) -> None:
        host_id = _host_id(start)
        while True:
            await workflow.wait_condition(lambda: bool(self._pending))
            while self._pending:
                status = _valid_status(self._pending.pop(0), host_id)
                if status is None:
                    continue
                # Short and retried: a heartbeat only needs recording, never twice in a row.
                await workflow.execute_activity_method(
                    HeartbeatRecorder.record,
                    HeartbeatRecord(host_id=host_id, status=status),
                    start_to_close_timeout=timedelta(seconds=10),
                    retry_policy=RetryPolicy(maximum_attempts=5),
                )
                self._recorded += 1
            if self._recorded >= SIGNALS_PER_RUN or workflow.info().is_continue_as_new_suggested():
                if not self._pending:  # no await from here on: no signal can slip in between
                    workflow.continue_as_new(HeartbeatStart(host_id=host_id).model_dump())


def _host_id(start: Any) -> str:
    try:
        host_id = HeartbeatStart.model_validate(start).host_id
    except ValidationError:
        host_id = ""
    if not is_valid_host_id(host_id):
        raise ApplicationError(
            f"AgentHeartbeat needs {{'host_id': <host id>}}, got {start!r}",
            type="InvalidHeartbeatStart",
            non_retryable=True,
        )
    return host_id


def _valid_status(raw: Any, host_id: str) -> dict[str, Any] | None:
    """The HostStatus as plain JSON, or None (with a warning) when it breaks the contract."""
    try:
        status = HostStatus.model_validate(raw)
    except ValidationError as exc:
        workflow.logger.warning(
            "ignoring an invalid heartbeat for host %s: %s", host_id, _summary(exc)
        )
        return None
    if status.host_id != host_id:
        workflow.logger.warning(
            "ignoring a heartbeat for host %s sent to host %s's workflow", status.host_id, host_id
        )
        return None
    return status.model_dump(mode="json")


def _summary(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'status'}: {e['msg']}" for e in exc.errors()
    )
