"""The activities of one job run: resolve → ensure image → launch → watch, and stop.

Every side effect of a run lives here. The workflow passes plain models; the Docker engine and
`bigeye_agent.yml` are read fresh on every call, so a retried attempt or a restarted
orchestrator picks up exactly where the last one left off.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import aiodocker
import structlog
from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import containers
from activities.agents import JobPlan, Resolution, create_body, resolve
from activities.exits import exit_reason
from activities.heartbeat import heartbeating
from activities.images import ImageInfo, ImagePullError, ensure_image, registry_auth
from activities.logstream import docker_since, tail_of, timestamp_ns
from activities.network import ensure_job_network
from activities.policy import structural_violations
from activities.slots import SlotGate
from orchestrator.contract import RunStatus, parse_job_request
from orchestrator.hostconfig import ConfigError, HostConfig
from orchestrator.settings import Settings
from orchestrator.version import VERSION

FOLLOW_WINDOW_SECONDS = 30.0
log = structlog.get_logger("bigeye.orchestrator.job")


class Launched(BaseModel):
    container_id: str
    started_at: str
    created: bool


class WatchInput(BaseModel):
    plan: JobPlan
    container_id: str


class Outcome(BaseModel):
    status: RunStatus
    exit_code: int | None
    reason: str | None
    started_at: str | None
    finished_at: str | None
    log_tail: list[str]
    orchestrator_version: str = VERSION


class WatchProgress(BaseModel):
    """What the watch activity heartbeats: enough for the next attempt to resume."""

    container_id: str
    log_cursor: str | None = None
    final: Outcome | None = None


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _docker_time(value: str | None) -> str | None:
    if not value or value.startswith("0001-01-01"):
        return None
    return value


def _job_log(plan: JobPlan, container: str | None = None) -> Any:
    return log.bind(
        host_id=plan.host_id,
        job_id=plan.request.job_id,
        run_id=plan.request.run_id,
        agent=plan.request.agent,
        container=container or plan.container_name,
    )


class JobActivities:
    def __init__(self, settings: Settings, docker: aiodocker.Docker, gate: SlotGate) -> None:
        self.settings = settings
        self.docker = docker
        self.gate = gate

    def _load_host(self) -> HostConfig:
        """The agent set as it is now; a broken file fails the attempt with its one line."""
        try:
            return self.settings.load_host()
        except ConfigError as exc:
            raise ApplicationError(str(exc), type="HostConfigInvalid") from None

    # ---- control activities (always have room) --------------------------------------------

    @activity.defn(name="resolve_job")
    async def resolve_job(self, raw_request: dict[str, Any]) -> Resolution:
        request = parse_job_request(raw_request)
        host = self._load_host()
        return resolve(request, host, self.settings.host_id)

    @activity.defn(name="stop_container")
    async def stop_container(self, plan: JobPlan) -> Outcome | None:
        """Stop with the agent's grace, save exit code and log tail, remove. None if gone."""
        jlog = _job_log(plan)
        async with heartbeating(lambda: None):
            info = await containers.inspect_ours(
                self.docker, plan.container_name, plan.host_id, plan.request.run_id
            )
            if info is None:
                return None
            jlog.info("stopping job container", grace_seconds=plan.stop_grace_seconds)
            await containers.stop(self.docker, info["Id"], plan.stop_grace_seconds)
            outcome = await self._conclude(plan, info["Id"], "canceled", "canceled by request")
            return outcome

    # ---- job activities (a slot is one running job) -----------------------------------------

    @activity.defn(name="ensure_image")
    async def ensure_image(self, plan: JobPlan) -> ImageInfo:
        jlog = _job_log(plan)
        last: list[str] = []
        host = self._load_host()
        auth = registry_auth(plan.image, host.registry, self.settings.config_path.parent)
        async with heartbeating(lambda: {"status": last[-1] if last else None}):
            try:
                return await ensure_image(self.docker, plan.image, auth, last.append)
            except ImagePullError as exc:
                jlog.error("image pull failed", image=plan.image, error=str(exc))
                raise ApplicationError(str(exc), type="ImagePullFailed") from None
            finally:
                if last:
                    jlog.info("image ready", image=plan.image, last_status=last[-1])

    @activity.defn(name="launch_container")
    async def launch_container(self, plan: JobPlan) -> Launched:
        jlog = _job_log(plan)
        host = self._load_host()
        agent = host.agents.get(plan.request.agent)
        if agent is None:
            raise ApplicationError(
                f"agent {plan.request.agent} was removed from the host's agent set",
                type="AgentNotInstalled",
                non_retryable=True,
            )
        body = create_body(plan, agent, host_dir=self.settings.host_dir, version=VERSION)
        problems = structural_violations(
            body,
            host_id=self.settings.host_id,
            host_dir=self.settings.host_dir,
            name=plan.container_name,
        )
        if problems:
            raise ApplicationError(
                "container spec breaks the policy: " + "; ".join(problems),
                type="PolicyViolation",
                non_retryable=True,
            )

        def waiting(total: int, per_agent: int) -> None:
            activity.heartbeat({"waiting_for_slot": True})
            jlog.debug("waiting for a job slot", running=total, running_of_agent=per_agent)

        async with heartbeating(lambda: {"container": plan.container_name}):
            existing = await containers.inspect_ours(
                self.docker, plan.container_name, plan.host_id, plan.request.run_id
            )
            if existing is None:
                async with self.gate.admitted(
                    self.docker,
                    plan.host_id,
                    plan.request.agent,
                    plan.max_concurrent,
                    waiting,
                ):
                    info = await self._create_and_start(plan, body)
            else:
                info = await self._create_and_start(plan, body)
        launched = Launched(
            container_id=info["Id"],
            started_at=_docker_time(info["State"].get("StartedAt")) or _now(),
            created=bool(info.get("_created")),
        )
        jlog.info(
            "job container started" if launched.created else "job container adopted",
            container_id=launched.container_id[:12],
        )
        return launched

    async def _create_and_start(self, plan: JobPlan, body: dict[str, Any]) -> dict[str, Any]:
        await ensure_job_network(self.docker)
        info, created = await containers.create_or_adopt(
            self.docker, plan.container_name, body, plan.host_id, plan.request.run_id
        )
        if info["State"].get("Status") == "created":
            await containers.start(self.docker, info["Id"])
            refreshed = await containers.inspect_ours(
                self.docker, info["Id"], plan.host_id, plan.request.run_id
            )
            info = refreshed or info
        info["_created"] = created
        return info

    @activity.defn(name="watch_container")
    async def watch_container(self, job: WatchInput) -> Outcome:
        plan = job.plan
        progress = WatchProgress(container_id=job.container_id)
        details = activity.info().heartbeat_details
        if details:
            progress = _progress_from(details[0], job.container_id)
        jlog = _job_log(plan, job.container_id[:12])
        if progress.final is not None:
            return progress.final

        async with heartbeating(lambda: progress.model_dump(mode="json")):
            info = await containers.inspect_ours(
                self.docker, job.container_id, plan.host_id, plan.request.run_id
            )
            if info is None:
                return Outcome(
                    status="failed",
                    exit_code=None,
                    reason="the job container disappeared before its exit code was saved",
                    started_at=None,
                    finished_at=_now(),
                    log_tail=[],
                )
            started_at = _docker_time(info["State"].get("StartedAt"))
            started = timestamp_ns(started_at) / 1e9 if started_at else time.time()
            deadline = started + plan.timeout_seconds
            timed_out = False
            while info["State"].get("Status") not in ("exited", "dead"):
                remaining = deadline - time.time()
                if remaining <= 0:
                    timed_out = True
                    jlog.warning("job timed out, stopping", timeout_seconds=plan.timeout_seconds)
                    await containers.stop(self.docker, job.container_id, plan.stop_grace_seconds)
                    break
                try:
                    async with asyncio.timeout(min(remaining, FOLLOW_WINDOW_SECONDS)):
                        await self._forward_logs(progress, jlog, follow=True)
                except TimeoutError:
                    pass
                # A log stream can end silently (engine restart, proxy idle cut): look again.
                info = (
                    await containers.inspect_ours(
                        self.docker, job.container_id, plan.host_id, plan.request.run_id
                    )
                    or info
                )
                if info is None:
                    break
            await self._forward_logs(progress, jlog, follow=False)
            status: RunStatus = "timed_out" if timed_out else "succeeded"
            reason = f"timed out after {plan.timeout_seconds} s" if timed_out else None
            outcome = await self._conclude(plan, job.container_id, status, reason, progress)
            return outcome

    async def _forward_logs(self, progress: WatchProgress, jlog: Any, *, follow: bool) -> None:
        cursor = timestamp_ns(progress.log_cursor) if progress.log_cursor else None
        since = docker_since(progress.log_cursor) if progress.log_cursor else None
        async for line in containers.follow_logs(
            self.docker, progress.container_id, since=since, follow=follow
        ):
            if line.timestamp is not None:
                stamp = timestamp_ns(line.timestamp)
                if cursor is not None and stamp <= cursor:
                    continue  # already forwarded by this or an earlier attempt
                cursor = stamp
                progress.log_cursor = line.timestamp
            jlog.info(line.text, stream="agent", fd=line.stream)

    async def _conclude(
        self,
        plan: JobPlan,
        container_id: str,
        status: RunStatus,
        reason: str | None,
        progress: WatchProgress | None = None,
    ) -> Outcome:
        """Save exit code and log tail, then remove the container: in that order."""
        info = await containers.inspect_ours(
            self.docker, container_id, plan.host_id, plan.request.run_id
        )
        if info is None:
            return Outcome(
                status="failed" if status == "succeeded" else status,
                exit_code=None,
                reason=reason or "the job container disappeared before it was inspected",
                started_at=None,
                finished_at=_now(),
                log_tail=[],
            )
        state = info["State"]
        if state.get("Status") not in ("exited", "dead"):
            await containers.stop(self.docker, container_id, plan.stop_grace_seconds)
            info = await containers.inspect(self.docker, container_id) or info
            state = info["State"]
        exit_code = state.get("ExitCode")
        oom = bool(state.get("OOMKilled"))
        if status == "succeeded" and (exit_code != 0 or oom):
            status = "failed"
        if status == "failed":
            reason = exit_reason(exit_code, oom)
        elif status == "timed_out" and exit_code is not None:
            reason = f"{reason} ({exit_reason(exit_code, oom) or 'exit 0'})"
        lines = [
            line.text
            async for line in containers.follow_logs(
                self.docker, container_id, since=None, follow=False, tail=50, timestamps=False
            )
        ]
        outcome = Outcome(
            status=status,
            exit_code=exit_code,
            reason=reason,
            started_at=_docker_time(state.get("StartedAt")),
            finished_at=_docker_time(state.get("FinishedAt")) or _now(),
            log_tail=tail_of(lines),
        )
        if progress is not None:
            progress.final = outcome
            activity.heartbeat(progress.model_dump(mode="json"))
        await containers.remove(self.docker, container_id)
        self.gate.released()
        _job_log(plan, container_id[:12]).info(
            "job finished", status=outcome.status, exit_code=exit_code, reason=outcome.reason
        )
        return outcome


def _progress_from(raw: Any, container_id: str) -> WatchProgress:
    if isinstance(raw, dict):
        try:
            progress = WatchProgress.model_validate(raw)
            if progress.container_id == container_id:
                return progress
        except ValueError:
            pass
    return WatchProgress(container_id=container_id)
