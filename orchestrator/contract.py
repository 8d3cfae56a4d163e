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


def launch_queue(host_task_queue: str) -> str:
    """Internal: where a host's slot-gated launch activities run (never used by Bigeye)."""
    return f"{host_task_queue}.launch"


def watch_queue(host_task_queue: str) -> str:
    """Internal: where a host's container-watch activities run (never used by Bigeye)."""
    return f"{host_task_queue}.watch"


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


def _describe(error: ValidationError, prefix: str = "") -> str:
    parts = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "request"
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{prefix}{loc}: {msg}")
    return "; ".join(parts)


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


# Defaults that Bigeye's side also needs (execution timeout of a run = queue wait + this).
AGENT_DEFAULT_TIMEOUT_SECONDS: Final[dict[str, int]] = {
    "lineage_plus": 21600,
    "datahealth": 3600,
    "external_monitors": 3600,
}
