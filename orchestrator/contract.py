"""The wire contract between Bigeye and the orchestrator (v1).

Everything here is plain data: Bigeye's backend and the `temporal` CLI send and read the JSON,
so the models validate JSON-shaped input strictly (unknown keys rejected at every level, ids
rejected rather than sanitised) and serialise back to plain JSON.

This module is imported inside the workflow sandbox: it must stay free of I/O and of any
import with side effects.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

CONTRACT_VERSION: Final = 1

# ---- names ---------------------------------------------------------------------------------

JOB_WORKFLOW_TYPE: Final = "AgentJobRun"
HEARTBEAT_WORKFLOW_TYPE: Final = "AgentHeartbeat"
HOST_PING_WORKFLOW_TYPE: Final = "HostPing"
HEARTBEAT_SIGNAL: Final = "heartbeat"
STATUS_QUERY: Final = "status"
CONTROL_PLANE_TASK_QUEUE: Final = "bigeye-control-plane"
DEFAULT_NAMESPACE: Final = "default"

INVALID_JOB_REQUEST: Final = "InvalidJobRequest"
AGENT_NOT_INSTALLED: Final = "AgentNotInstalled"

LABEL_PREFIX: Final = "com.bigeye.orchestrator"
LABEL_MANAGED: Final = f"{LABEL_PREFIX}.managed"
LABEL_HOST_ID: Final = f"{LABEL_PREFIX}.host-id"
LABEL_JOB_ID: Final = f"{LABEL_PREFIX}.job-id"
LABEL_RUN_ID: Final = f"{LABEL_PREFIX}.run-id"
LABEL_AGENT: Final = f"{LABEL_PREFIX}.agent"
LABEL_WORKFLOW_ID: Final = f"{LABEL_PREFIX}.workflow-id"
# Temporal's run id of the workflow execution that created the container (an extension of §4):
# with the workflow id it names the one run a container belongs to.
LABEL_WORKFLOW_RUN_ID: Final = f"{LABEL_PREFIX}.workflow-run-id"
LABEL_VERSION: Final = f"{LABEL_PREFIX}.orchestrator-version"
JOB_NETWORK: Final = "bigeye-jobs"
INTERNAL_NETWORK: Final = "orchestrator-internal"

HOST_ID_PATTERN: Final = r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,254}[A-Za-z0-9])?$"
ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
CONNECTOR_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,63}$"
FILE_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$"
COMMAND_PATTERN: Final = r"^[a-z][a-z0-9-]{0,63}$"

AgentType = Literal["lineage_plus", "datahealth", "external_monitors"]
AGENT_TYPES: Final[tuple[str, ...]] = ("lineage_plus", "datahealth", "external_monitors")

RunStatus = Literal["succeeded", "failed", "timed_out", "canceled"]
Phase = Literal["queued", "pulling", "starting", "running", "stopping", "finished"]

LOG_TAIL_LINES: Final = 50
LOG_LINE_MAX_BYTES: Final = 2048


CONTAINER_NAME_PATTERN: Final = re.compile(
    r"bigeye-job-[A-Za-z0-9][A-Za-z0-9_.-]{0,127}-[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
)


def is_valid_host_id(host_id: str) -> bool:
    return re.fullmatch(HOST_ID_PATTERN, host_id) is not None


def task_queue(host_id: str) -> str:
    return f"agent-orchestrator.{host_id}"


RELEASE_SEPARATOR: Final = "@"


def release_queue(host_task_queue: str, version: str) -> str:
    """Internal: `agent-orchestrator.<host_id>@<version>`, where one orchestrator release runs
    the job runs it took, from their first task on (orchestrator/releases.py; not for Bigeye)."""
    return f"{host_task_queue}{RELEASE_SEPARATOR}{version}"


def is_release_queue(queue: str) -> bool:
    return RELEASE_SEPARATOR in queue


def launch_queue(run_task_queue: str) -> str:
    """Internal: where a run's slot-gated launch activities run (never used by Bigeye)."""
    return f"{run_task_queue}.launch"


def watch_queue(run_task_queue: str) -> str:
    """Internal: where a run's container-watch activities run (never used by Bigeye)."""
    return f"{run_task_queue}.watch"


# Internal: the orchestrator tells a run waiting for a slot that one is free (never sent by Bigeye).
SLOT_SIGNAL: Final = "slot-available"
# Internal: a run's child on its release queue tells the run its phase (never sent by Bigeye).
RUN_STATUS_SIGNAL: Final = "run-status"


def release_run_id(workflow_id: str, version: str, run_id: str) -> str:
    """Internal: the workflow id of a run's child on its release queue (`@`, `/` are in no id)."""
    return f"{workflow_id}{RELEASE_SEPARATOR}{version}/{run_id}"


def host_id_of(queue: str) -> str:
    """The host id in `agent-orchestrator.<host_id>`, or in one of its release queues."""
    return queue.partition(RELEASE_SEPARATOR)[0].removeprefix("agent-orchestrator.")


def job_workflow_id(job_id: str) -> str:
    return f"agent-job-{job_id}"


def heartbeat_workflow_id(host_id: str) -> str:
    return f"agent-heartbeat-{host_id}"


def container_name(job_id: str, run_id: str) -> str:
    return f"bigeye-job-{job_id}-{run_id}"


# ---- request -------------------------------------------------------------------------------

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Connector = Annotated[str, StringConstraints(pattern=CONNECTOR_PATTERN)]


class _Strict(BaseModel):
    # strict: JSON true is a bool, "1" is not an int; extra keys are a mistake, not a hint.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LineagePlusParameters(_Strict):
    connectors: list[Connector] = Field(default_factory=list)
    connection_name: Id | None = None
    no_sync: bool = False
    skip_notifications: bool = False


class DataHealthParameters(_Strict):
    file_name: Annotated[str, StringConstraints(pattern=FILE_NAME_PATTERN)]
    command: Annotated[str, StringConstraints(pattern=COMMAND_PATTERN)] | None = None

    @field_validator("file_name")
    @classmethod
    def _no_parent_reference(cls, value: str) -> str:
        if ".." in value:
            raise ValueError("must not contain '..'")
        return value


class ExternalMonitorsParameters(_Strict):
    connector: Connector


PARAMETER_MODELS: Final[dict[str, type[_Strict]]] = {
    "lineage_plus": LineagePlusParameters,
    "datahealth": DataHealthParameters,
    "external_monitors": ExternalMonitorsParameters,
}

AgentParameters = LineagePlusParameters | DataHealthParameters | ExternalMonitorsParameters


class JobRunRequest(_Strict):
    job_id: Id
    run_id: Id
    agent: AgentType
    parameters: dict[str, Any] = Field(default_factory=dict)
    timeout_seconds: Annotated[int, Field(ge=1)] | None = None
    requested_by: Annotated[str, StringConstraints(max_length=256)] | None = None

    def typed_parameters(self) -> AgentParameters:
        model = PARAMETER_MODELS[self.agent]
        return model.model_validate(self.parameters)  # type: ignore[return-value]

    def command(self) -> list[str]:
        return render_command(self.agent, self.typed_parameters())


class InvalidRequest(ValueError):
    """A request that breaks the contract; `str()` is one line naming the keys at fault."""


MAX_PROBLEMS_SHOWN: Final = 3


def printable_key(key: object) -> str:
    """A key as it can be shown on one line: anything unusual in it is escaped."""
    text = str(key)
    if text.isprintable():
        return text[:80] + ("…" if len(text) > 80 else "")
    return repr(text)[:80]


def _describe(error: ValidationError, prefix: str = "") -> str:
    """One line: the first problems (key and what is wrong), then how many more there are."""
    parts = []
    problems = error.errors()
    for item in problems[:MAX_PROBLEMS_SHOWN]:
        loc = ".".join(printable_key(p) for p in item["loc"]) or "request"
        msg = " ".join(str(item["msg"]).split())
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{prefix}{loc}: {msg}")
    more = len(problems) - MAX_PROBLEMS_SHOWN
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else ""
    return "; ".join(parts) + suffix


def parse_job_request(raw: Any) -> JobRunRequest:
    """Validate a request as it arrives over the wire (plain JSON data)."""
    if not isinstance(raw, dict):
        raise InvalidRequest(f"request must be a JSON object, got {type(raw).__name__}")
    try:
        request = JobRunRequest.model_validate(raw)
    except ValidationError as exc:
        raise InvalidRequest(_describe(exc)) from None
    try:
        request.typed_parameters()
    except ValidationError as exc:
        raise InvalidRequest(_describe(exc, "parameters.")) from None
    except ValueError as exc:
        raise InvalidRequest(f"parameters: {exc}") from None
    return request


def render_command(agent: str, params: AgentParameters) -> list[str]:
    """The agent's command line: argv only, never a shell string."""
    if isinstance(params, LineagePlusParameters):
        argv = ["lineage", "run"]
        for connector in params.connectors:
            argv += ["-c", connector]
        if params.connection_name is not None:
            argv += ["-n", params.connection_name]
        if params.no_sync:
            argv.append("--no-sync")
        if params.skip_notifications:
            argv.append("--skip-notifications")
        return argv
    if isinstance(params, DataHealthParameters):
        argv = ["datahealth", "run", "--file-name", params.file_name]
        if params.command is not None:
            argv += ["--command", params.command]
        return argv
    if isinstance(params, ExternalMonitorsParameters):
        return ["external-monitors", "run", "-c", params.connector]
    raise TypeError(f"no command for agent {agent}")


# ---- results -------------------------------------------------------------------------------


class _Plain(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobRunResult(_Plain):
    job_id: str
    run_id: str
    host_id: str
    agent: str
    status: RunStatus
    exit_code: int | None = None
    reason: str | None = None
    image: str
    image_id: str | None = None
    image_digest: str | None = None
    container_name: str
    started_at: str | None = None
    finished_at: str | None = None
    log_tail: list[str] = Field(default_factory=list)
    orchestrator_version: str


class JobStatus(_Plain):
    phase: Phase
    container_id: str | None = None
    started_at: str | None = None


class DockerStatus(_Plain):
    reachable: bool
    version: str | None = None


class WorkerStatus(_Plain):
    polling: bool
    slots_used: int
    slots_max: int


class HostStatus(_Plain):
    host_id: str
    sent_at: str
    orchestrator_version: str
    build_id: str
    managed_agents: list[str]
    running_runs: list[str]
    docker: DockerStatus
    worker: WorkerStatus


class HeartbeatStart(_Plain):
    host_id: str


# ---- how a run ended ----------------------------------------------------------------------
#
# One ending per run: what the container left is read once (`ContainerEnd`), recorded in the
# workflow's history before the container is removed, and one pure function below turns how
# the run ended plus that record into the `JobRunResult`.

EndedBy = Literal["exited", "deadline", "canceled", "failed"]


class ContainerEnd(_Plain):
    """What a stopped job container left behind: exit code, OOM flag, times, exact log tail."""

    container_id: str
    state: str  # Docker's State.Status: exited | dead | created (never started)
    exit_code: int | None = None
    oom_killed: bool = False
    started_at: str | None = None
    finished_at: str | None = None
    log_tail: list[str] = Field(default_factory=list)


_EXIT_REASONS: Final = {
    125: "the container failed to run (exit 125)",
    126: "the command could not be invoked (exit 126)",
    127: "the command was not found in the image (exit 127)",
    137: "killed: SIGKILL (exit 137)",
    143: "terminated: SIGTERM (exit 143)",
}


def exit_reason(exit_code: int | None, oom_killed: bool = False) -> str | None:
    """None for a clean exit; otherwise why the container ended as it did."""
    if oom_killed:
        code = exit_code if exit_code is not None else 137
        return f"killed: out of memory (exit {code})"
    if exit_code is None:
        return "the container's exit code is unknown"
    if exit_code == 0:
        return None
    if exit_code in _EXIT_REASONS:
        return _EXIT_REASONS[exit_code]
    if 128 < exit_code < 160:
        return f"killed by signal {exit_code - 128} (exit {exit_code})"
    return f"exited with code {exit_code}"


ENGINE_INTERRUPTED: Final = "the Docker engine restarted or was unreachable during the run"


def job_result(
    *,
    request: JobRunRequest,
    host_id: str,
    image: str,
    image_id: str | None,
    image_digest: str | None,
    ended_by: EndedBy,
    end: ContainerEnd | None,
    reason: str | None,
    timeout_seconds: int,
    finished_at: str,
    orchestrator_version: str,
    engine_interrupted: bool = False,
) -> JobRunResult:
    """The run's result from how it ended and what its container left (None: no container).

    `reason` is what the workflow knows besides the container: the error of a run that failed
    before or around its container, or a clean-up that did not happen.
    """
    ran = end is not None and end.state != "created"
    exit_code = end.exit_code if end is not None and ran else None
    oom = bool(end and end.oom_killed)
    status: RunStatus
    if ended_by == "exited" and ran and exit_code == 0 and not oom:
        status, why = "succeeded", None
    elif ended_by == "exited" and ran:
        status, why = "failed", exit_reason(exit_code, oom)
        if engine_interrupted:
            why = f"{why} ({ENGINE_INTERRUPTED})"
    elif ended_by == "deadline":
        status, why = "timed_out", f"timed out after {timeout_seconds} s"
        if ran:
            why = f"{why} ({exit_reason(exit_code, oom) or 'exit 0'})"
    elif ended_by == "canceled":
        status, why = "canceled", "canceled by request"
    else:
        status = "failed"
        why = (exit_reason(exit_code, oom) if ran else None) or "the run failed"
    if reason:
        why = reason if ended_by == "failed" or why is None else f"{why}; {reason}"
    return JobRunResult(
        job_id=request.job_id,
        run_id=request.run_id,
        host_id=host_id,
        agent=request.agent,
        status=status,
        exit_code=exit_code,
        reason=why,
        image=image,
        image_id=image_id,
        image_digest=image_digest,
        container_name=container_name(request.job_id, request.run_id),
        started_at=end.started_at if end is not None and ran else None,
        finished_at=(end.finished_at if end is not None and ran else None) or finished_at,
        log_tail=end.log_tail if end is not None else [],
        orchestrator_version=orchestrator_version,
    )


# Defaults that Bigeye's side also needs (execution timeout of a run = queue wait + this).
AGENT_DEFAULT_TIMEOUT_SECONDS: Final[dict[str, int]] = {
    "lineage_plus": 21600,
    "datahealth": 3600,
    "external_monitors": 3600,
}
