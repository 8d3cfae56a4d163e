"""Triggering and cancelling job runs the way Bigeye's backend does (design §3, §10).

The request goes out as plain JSON data and is not validated here beyond turning `k=v` strings
into values: the workflow validates, so a test can send a bad request and see it rejected.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import types
import typing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import (
    ApplicationError,
    CancelledError,
    TerminatedError,
    TimeoutError,
    WorkflowAlreadyStartedError,
)
from temporalio.service import RPCError

from devcloud import state
from devcloud.errors import DevcloudError
from orchestrator.contract import (
    AGENT_DEFAULT_TIMEOUT_SECONDS,
    JOB_WORKFLOW_TYPE,
    PARAMETER_MODELS,
    job_workflow_id,
    task_queue,
)

log = structlog.get_logger("devcloud.runs")

QUEUE_WAIT_SECONDS = 3600
TIMEOUT_MARGIN_SECONDS = 300
REQUESTED_BY = "bigeye-cloud-dev"
CONNECT_TIMEOUT_SECONDS = 10.0


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


async def connect(state_dir: Path) -> Client:
    """A client on the loopback (plaintext) frontend of the running local cloud."""
    endpoints = state.require_endpoints(state_dir)
    address = endpoints.temporal_plain_address
    try:
        return await asyncio.wait_for(
            Client.connect(address, namespace=endpoints.namespace), CONNECT_TIMEOUT_SECONDS
        )
    except Exception as exc:
        raise DevcloudError(
            f"cannot reach Temporal at {address} ({exc}); is "
            f"`bigeye-cloud-dev server --state-dir {state_dir}` running?"
        ) from None


@dataclass
class RunOutcome:
    run: dict[str, Any]  # {"job_id", "run_id", "host_id", "agent", "status", "result"[, "error"]}
    rejected: bool = False


class RunAlreadyActive(DevcloudError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} already has an active run")
        self.job_id = job_id


def _finished(result: Any) -> tuple[str, dict[str, Any] | None]:
    if isinstance(result, dict):
        return str(result.get("status", "failed")), result
    return "failed", None


def _from_failure(exc: WorkflowFailureError) -> tuple[str, dict[str, str] | None, bool]:
    """(status, error, rejected) for a workflow that did not return a result."""
    cause = exc.cause
    if isinstance(cause, CancelledError):
        return "canceled", None, False
    if isinstance(cause, TerminatedError):
        return "failed", {"type": "Terminated", "message": cause.message or "terminated"}, False
    if isinstance(cause, TimeoutError):
        return "timed_out", None, False
    if isinstance(cause, ApplicationError):
        return "failed", {"type": cause.type or "ApplicationError", "message": cause.message}, True
    message = getattr(cause, "message", None) or str(cause or exc)
    return "failed", {"type": type(cause or exc).__name__, "message": message}, True


async def trigger_run(
    client: Client,
    state_dir: Path,
    *,
    host_id: str,
    agent: str,
    parameters: dict[str, Any],
    job_id: str | None = None,
    timeout_seconds: int | None = None,
    queue_wait_seconds: int = QUEUE_WAIT_SECONDS,
    wait: bool = False,
) -> RunOutcome:
    """Start `AgentJobRun` for the job on the host's task queue; with `wait`, until it ends.

    Raises RunAlreadyActive when a run of the job is still open (id-conflict policy FAIL).
    """
    job_id = job_id or f"{host_id}-{agent}"
    run_id = new_run_id()
    request = build_request(
        job_id=job_id,
        run_id=run_id,
        agent=agent,
        parameters=parameters,
        timeout_seconds=timeout_seconds,
    )
    workflow_id = job_workflow_id(job_id)
    try:
        handle = await client.start_workflow(
            JOB_WORKFLOW_TYPE,
            request,
            id=workflow_id,
            task_queue=task_queue(host_id),
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            execution_timeout=execution_timeout(agent, timeout_seconds, queue_wait_seconds),
        )
    except WorkflowAlreadyStartedError:
        raise RunAlreadyActive(job_id) from None
    record = state.RunRecord(
        run_id=run_id,
        job_id=job_id,
        host_id=host_id,
        agent=agent,
        workflow_id=workflow_id,
        temporal_run_id=handle.first_execution_run_id or handle.result_run_id,
        namespace=client.namespace,
        requested_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    )
    state.save_run(state_dir, record)
    log.info("run_started", job_id=job_id, run_id=run_id, host_id=host_id, agent=agent)

    run: dict[str, Any] = {
        "job_id": job_id,
        "run_id": run_id,
        "host_id": host_id,
        "agent": agent,
        "status": "queued",
        "result": None,
    }
    if not wait:
        return RunOutcome(run)

    rejected = False
    try:
        run["status"], run["result"] = _finished(await handle.result())
    except WorkflowFailureError as exc:
        run["status"], error, rejected = _from_failure(exc)
        if error is not None:
            run["error"] = error
    state.save_run(state_dir, record.model_copy(update={"status": run["status"]}))
    return RunOutcome(run, rejected=rejected)


async def cancel_run(client: Client, state_dir: Path, run_id: str) -> state.RunRecord:
    """Request cancellation of a run this CLI started; the workflow stops its container."""
    record = state.find_run(state_dir, run_id)
    if record is None:
        raise DevcloudError(f"unknown run {run_id} (not in {state_dir / state.RUNS_FILE})")
    handle = client.get_workflow_handle(record.workflow_id, run_id=record.temporal_run_id)
    try:
        await handle.cancel()
    except RPCError as exc:
        raise DevcloudError(f"cannot cancel run {run_id} (job {record.job_id}): {exc}") from None
    log.info("run_cancel_requested", job_id=record.job_id, run_id=run_id)
    return record
