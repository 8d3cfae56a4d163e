"""What each page shows, as plain data built from the listings the CLI prints (pure functions)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from devcloud.web import timefmt
from devcloud.web.params_form import FormField, form_fields
from orchestrator.contract import AGENT_TYPES

ACTIVE_STATUSES = frozenset({"queued", "running"})
HEALTH_LABELS = {"healthy": "Healthy", "degraded": "Degraded", "down": "Down", "no_data": "No data"}
RUNS_SHOWN_PER_JOB = 10


@dataclass(frozen=True)
class RunRow:
    run_id: str
    status: str
    started: str
    duration: str
    exit_code: str
    reason: str

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES


def reason_of(run: Mapping[str, Any]) -> str:
    """The result's reason, else the workflow's error (a rejected or terminated run)."""
    result = run.get("result") or {}
    if result.get("reason"):
        return str(result["reason"])
    error = run.get("error") or {}
    if error:
        return f"{error.get('type')}: {error.get('message')}"
    return ""


def run_row(run: Mapping[str, Any]) -> RunRow:
    result = run.get("result") or {}
    exit_code = result.get("exit_code")
    return RunRow(
        run_id=str(run["run_id"]),
        status=str(run["status"]),
        started=timefmt.when(result.get("started_at")),
        duration=timefmt.duration(result.get("started_at"), result.get("finished_at")),
        exit_code="—" if exit_code is None else str(exit_code),
        reason=reason_of(run) or "—",
    )


@dataclass(frozen=True)
class RunForm:
    """One "Run now" form: of an existing job (its id fixed) or of a new one."""

    host_id: str
    agent: str
    job_id: str
    new: bool
    fields: list[FormField]
    error: str | None = None

    @property
    def key(self) -> str:
        return f"{self.host_id}/{self.agent}/{'' if self.new else self.job_id}"


@dataclass(frozen=True)
class JobView:
    job_id: str
    parameters: dict[str, Any]
    runs: list[RunRow]
    form: RunForm | None  # None: the host no longer manages the agent


@dataclass(frozen=True)
class AgentJobs:
    agent: str
    managed: bool
    jobs: list[JobView]
    new_job: RunForm | None


@dataclass(frozen=True)
class HostJobs:
    host_id: str
    health: str
    agents: list[AgentJobs] = field(default_factory=list)


@dataclass(frozen=True)
class FormState:
    """A submitted form that was refused: shown again with its values and the reason."""

    key: str
    job_id: str
    values: dict[str, Any]
    error: str


def _form(
    host_id: str, agent: str, job_id: str, new: bool, values: Mapping[str, Any],
    refused: FormState | None,
) -> RunForm:  # fmt: skip
    form = RunForm(host_id, agent, job_id, new, form_fields(agent, values))
    if refused is None or refused.key != form.key:
        return form
    return RunForm(host_id, agent, refused.job_id, new, form_fields(agent, refused.values),
                   refused.error)  # fmt: skip


def jobs_page(
    hosts: list[dict[str, Any]],
    jobs: list[dict[str, Any]],
    runs: list[dict[str, Any]],
    refused: FormState | None = None,
) -> list[HostJobs]:
    """Jobs per host and agent, each with its runs (newest first) and a "Run now" form."""
    runs_by_job: dict[str, list[RunRow]] = {}
    for run in reversed(runs):  # the listing is oldest first
        runs_by_job.setdefault(str(run["job_id"]), []).append(run_row(run))
    known = {str(h["host_id"]) for h in hosts}
    listed = list(hosts) + [
        {"host_id": host_id, "health": "no_data", "managed_agents": []}
        for host_id in sorted({str(j["host_id"]) for j in jobs} - known)
    ]
    page = []
    for host in listed:
        host_id, managed = str(host["host_id"]), list(host.get("managed_agents") or [])
        own = [j for j in jobs if j["host_id"] == host_id]
        agents = [a for a in AGENT_TYPES if a in managed or any(j["agent"] == a for j in own)]
        groups = []
        for agent in agents:
            is_managed = agent in managed
            views = [
                JobView(
                    job_id=str(j["job_id"]),
                    parameters=dict(j["parameters"]),
                    runs=runs_by_job.get(str(j["job_id"]), [])[:RUNS_SHOWN_PER_JOB],
                    form=_form(host_id, agent, str(j["job_id"]), False, j["parameters"], refused)
                    if is_managed
                    else None,
                )
                for j in own
                if j["agent"] == agent
            ]
            new_job = (
                _form(host_id, agent, f"{host_id}-{agent}", True, {}, refused)
                if is_managed
                else None
            )
            groups.append(AgentJobs(agent, is_managed, views, new_job))
        page.append(HostJobs(host_id, str(host.get("health", "no_data")), groups))
    return page


# The run's status is shown above them (it is the result's status once there is one).
RESULT_FIELDS = (
    ("exit_code", "Exit code"),
    ("reason", "Reason"),
    ("started_at", "Started"),
    ("finished_at", "Finished"),
    ("image", "Image"),
    ("image_id", "Image id"),
    ("image_digest", "Image digest"),
    ("container_name", "Container"),
    ("orchestrator_version", "Orchestrator version"),
)


def result_rows(run: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The JobRunResult's fields (the log tail apart), as label and text."""
    result = run.get("result") or {}
    rows = []
    for key, label in RESULT_FIELDS:
        value = result.get(key)
        if key.endswith("_at"):
            text = timefmt.when(value)
        else:
            text = "—" if value is None or value == "" else str(value)
        rows.append((label, text))
    rows.insert(4, ("Duration", timefmt.duration(result.get("started_at"),
                                                 result.get("finished_at"))))  # fmt: skip
    return rows
