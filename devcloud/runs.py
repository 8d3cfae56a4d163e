"""Starting, reading and cancelling job runs in Temporal the way Bigeye's backend does (§3, §10).

The request goes out as plain JSON data and is not validated here beyond turning `k=v` strings
into values: the workflow validates, so a test can send a bad request and see it rejected. The
API (devcloud.api) checks host and agent first and keeps the run rows.
"""

from __future__ import annotations

import json
import secrets
import types
import typing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import (
    ApplicationError,
    CancelledError,
    TerminatedError,
    TimeoutError,
    WorkflowAlreadyStartedError,
)
from temporalio.service import RPCError, RPCStatusCode

from devcloud.errors import DevcloudError
from orchestrator.contract import (
    AGENT_DEFAULT_TIMEOUT_SECONDS,
    JOB_WORKFLOW_TYPE,
    PARAMETER_MODELS,
    STATUS_QUERY,
    job_workflow_id,
    task_queue,
)

log = structlog.get_logger("devcloud.runs")

QUEUE_WAIT_SECONDS = 3600
TIMEOUT_MARGIN_SECONDS = 300
REQUESTED_BY = "bigeye-cloud-dev"


# ---- building the request ------------------------------------------------------------------


def new_run_id(now: datetime | None = None) -> str:
    """`r` + UTC yyyymmddHHMMSS + 6 hex characters, e.g. `r20250101120000a1b2c3`."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d%H%M%S")
    return f"r{stamp}{secrets.token_hex(3)}"


def parse_param(spec: str) -> tuple[str, Any]:
    """`k=v`: a value that parses as JSON is that JSON value, anything else is the string."""
    key, sep, text = spec.partition("=")
    if not sep or not key:
        raise ValueError(f"expected KEY=VALUE, got {spec!r}")
    try:
        value: Any = json.loads(text)
    except ValueError:
        value = text
    return key, value


def _is_list_annotation(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return True
    if origin is typing.Annotated:
        return _is_list_annotation(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_is_list_annotation(arg) for arg in typing.get_args(annotation))
    return annotation in (list, tuple, set, frozenset)


def is_list_parameter(agent: str, key: str) -> bool:
    """Whether the agent's parameter `key` is a list (lineage_plus `connectors`)."""
    model = PARAMETER_MODELS.get(agent)
    field = model.model_fields.get(key) if model else None
    return field is not None and _is_list_annotation(field.annotation)


def build_parameters(agent: str, specs: list[str] | list[tuple[str, Any]]) -> dict[str, Any]:
    """The `parameters` object from `--param` values, in order (a later key wins).

    For a list parameter a string becomes a one-item list, and repeated values accumulate:
    `--param connectors=snowflake --param connectors=dbt` gives `["snowflake", "dbt"]`.
    """
    parameters: dict[str, Any] = {}
    for spec in specs:
        key, value = parse_param(spec) if isinstance(spec, str) else spec
        if is_list_parameter(agent, key):
            if isinstance(value, str):
                value = [value]
            previous = parameters.get(key)
            if isinstance(previous, list) and isinstance(value, list):
                value = previous + value
        parameters[key] = value
    return parameters


def build_request(
    *,
    job_id: str,
    run_id: str,
    agent: str,
    parameters: dict[str, Any],
    timeout_seconds: int | None = None,
) -> dict[str, Any]:
    """The `JobRunRequest` as plain JSON data (`timeout_seconds` omitted when null)."""
    request: dict[str, Any] = {
        "job_id": job_id,
        "run_id": run_id,
        "agent": agent,
        "parameters": parameters,
        "requested_by": REQUESTED_BY,
    }
    if timeout_seconds is not None:
        request["timeout_seconds"] = timeout_seconds
    return request


def execution_timeout(
    agent: str, timeout_seconds: int | None, queue_wait_seconds: int = QUEUE_WAIT_SECONDS
) -> timedelta:
    """Queue wait + the run's timeout + a margin: a run for a dead host does not wait forever."""
    run_timeout = timeout_seconds
    if run_timeout is None or run_timeout < 1:
        longest = max(AGENT_DEFAULT_TIMEOUT_SECONDS.values())
        run_timeout = AGENT_DEFAULT_TIMEOUT_SECONDS.get(agent, longest)
    return timedelta(seconds=max(queue_wait_seconds, 0) + run_timeout + TIMEOUT_MARGIN_SECONDS)


# ---- talking to Temporal -------------------------------------------------------------------

STATUS_QUERY_TIMEOUT = timedelta(seconds=3)
# A run's phase (query `status`) as the API shows it.
PHASE_STATUS: dict[str, str] = {
    "queued": "queued",
    "pulling": "queued",
    "starting": "queued",
    "running": "running",
    "stopping": "running",
    "finished": "running",  # the result is on its way
}


class RunAlreadyActive(DevcloudError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} already has an active run")
        self.job_id = job_id


class RunAlreadyFinished(DevcloudError):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id} has already finished")
        self.run_id = run_id


@dataclass(frozen=True)
class RunState:
    status: str
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    final: bool = False


def is_rejected(run: dict[str, Any]) -> bool:
    """Whether the workflow refused the run (invalid request, agent not installed, …)."""
    error = run.get("error")
    return isinstance(error, dict) and error.get("type") != "Terminated"


def _finished(result: Any) -> RunState:
    if isinstance(result, dict):
        return RunState(str(result.get("status", "failed")), result, None, True)
    return RunState("failed", None, {"type": "UnexpectedResult", "message": repr(result)}, True)


def _from_failure(exc: WorkflowFailureError) -> RunState:
    """The final state of a workflow that did not return a result."""
    cause = exc.cause
    if isinstance(cause, CancelledError):
        return RunState("canceled", final=True)
    if isinstance(cause, TerminatedError):
        error = {"type": "Terminated", "message": cause.message or "terminated"}
        return RunState("failed", error=error, final=True)
    if isinstance(cause, TimeoutError):
        return RunState("timed_out", final=True)
    if isinstance(cause, ApplicationError):
        error = {"type": cause.type or "ApplicationError", "message": cause.message}
        return RunState("failed", error=error, final=True)
    message = getattr(cause, "message", None) or str(cause or exc)
    return RunState("failed", error={"type": type(cause or exc).__name__, "message": message},
                    final=True)  # fmt: skip


async def start_run(
    client: Client,
    *,
    host_id: str,
    agent: str,
    job_id: str,
    run_id: str,
    parameters: dict[str, Any],
    timeout_seconds: int | None = None,
    queue_wait_seconds: int = QUEUE_WAIT_SECONDS,
) -> WorkflowHandle[Any, Any]:
    """Start `AgentJobRun` on the host's task queue; RunAlreadyActive when the job has one open."""
    request = build_request(
        job_id=job_id,
        run_id=run_id,
        agent=agent,
        parameters=parameters,
        timeout_seconds=timeout_seconds,
    )
    try:
        handle: WorkflowHandle[Any, Any] = await client.start_workflow(
            JOB_WORKFLOW_TYPE,
            request,
            id=job_workflow_id(job_id),
            task_queue=task_queue(host_id),
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            execution_timeout=execution_timeout(agent, timeout_seconds, queue_wait_seconds),
        )
    except WorkflowAlreadyStartedError:
        raise RunAlreadyActive(job_id) from None
    log.info("run_started", job_id=job_id, run_id=run_id, host_id=host_id, agent=agent)
    return handle


def handle_of(
    client: Client, workflow_id: str, temporal_run_id: str | None
) -> WorkflowHandle[Any, Any]:
    return client.get_workflow_handle(workflow_id, run_id=temporal_run_id)


async def wait_for_outcome(handle: WorkflowHandle[Any, Any]) -> RunState:
    """Until the run ends: its final state."""
    try:
        return _finished(await handle.result())
    except WorkflowFailureError as exc:
        return _from_failure(exc)


# Started, first workflow task scheduled, perhaps a cancel request: no worker has run it yet.
UNTOUCHED_HISTORY_LENGTH = 3


def _untouched(description: WorkflowExecutionDescription) -> bool:
    return (
        description.history_length <= UNTOUCHED_HISTORY_LENGTH
        and not description.raw_description.pending_activities
    )


async def read_state(handle: WorkflowHandle[Any, Any]) -> RunState:
    """The run's state now: from the `status` query while open, from the close otherwise."""
    description = await handle.describe()
    status = description.status
    if status == WorkflowExecutionStatus.RUNNING:
        if _untouched(description):
            return RunState("queued")  # no worker has taken it: a query would only time out
        try:
            phase = await handle.query(STATUS_QUERY, rpc_timeout=STATUS_QUERY_TIMEOUT)
        except (WorkflowQueryFailedError, RPCError):
            return RunState("queued")  # no worker has picked it up (or answered) yet
        name = phase.get("phase") if isinstance(phase, dict) else None
        return RunState(PHASE_STATUS.get(str(name), "queued"))
    if status == WorkflowExecutionStatus.CANCELED:
        return RunState("canceled", final=True)
    if status == WorkflowExecutionStatus.TIMED_OUT:
        return RunState("timed_out", final=True)
    if status == WorkflowExecutionStatus.TERMINATED:
        return RunState("failed", error={"type": "Terminated", "message": "terminated"}, final=True)
    return await wait_for_outcome(handle)  # completed or failed: the result or the failure


async def request_cancel(handle: WorkflowHandle[Any, Any], run_id: str) -> None:
    """Ask the workflow to cancel (it stops the container); RunAlreadyFinished when closed."""
    try:
        await handle.cancel()
    except RPCError as exc:
        if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise RunAlreadyFinished(run_id) from None
        raise
    log.info("run_cancel_requested", workflow_id=handle.id, run_id=run_id)
