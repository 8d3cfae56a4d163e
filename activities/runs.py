"""The activities of one job run: resolve → ensure image → launch → watch, and stop → finish.

Every side effect of a run lives here; the workflow decides. The plan (from `resolve_job`) is
the only reading of `bigeye_agent.yml` for a run. The container's ending is read once
(`activities.ending.finalize`) and returned to the workflow, which records it in its history
before `finish_run` removes the container: a lost reply or a new attempt reads it again.

Errors are classified where they happen: what retrying cannot fix fails the attempt as
non-retryable (the run ends `failed` with the engine's message); an engine that does not
answer is retried, and a watched job survives an engine restart for `ENGINE_PATIENCE_SECONDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiodocker
import structlog
from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import containers
from activities.agents import JobPlan, Resolution, resolve
from activities.containers import NotManagedError
from activities.docker_api import activity_error, describe, is_not_found, is_unreachable
from activities.ending import docker_time, finalize, has_ended, stop_and_drain
from activities.heartbeat import heartbeating
from activities.images import ImageInfo, ImagePullError, Puller, registry_auth
from activities.joblogs import OutputForwarder
from activities.logstream import LineReader, LogCursor, timestamp_ns
from activities.network import ensure_job_network
from activities.slots import SlotGate, Waiter
from orchestrator import metrics
from orchestrator.contract import (
    JOB_NETWORK,
    ContainerEnd,
    EndedBy,
    JobStatus,
    RunStatus,
    parse_job_request,
)
from orchestrator.hostconfig import ConfigError, HostConfig
from orchestrator.logs import output_logger
from orchestrator.settings import Settings
from orchestrator.version import VERSION

T = TypeVar("T")
FOLLOW_WINDOW_SECONDS = 30.0
ENGINE_PATIENCE_SECONDS = 300.0
CONFIG_READS = 3  # a file caught mid-write by `sync` reads fine a moment later
LAUNCH_SETTLE_SECONDS = 10.0
LAUNCH_ATTEMPTS = 8  # as the workflow's DOCKER_RETRY: a launch the engine keeps failing fails
NOT_MANAGED = "NotManaged"
JOB_LOGGER = "bigeye.orchestrator.job"
log = structlog.get_logger(JOB_LOGGER)


class Launch(BaseModel):
    container_id: str | None = None  # None: no slot yet (or no image), the run waits for one
    started_at: str | None = None
    created: bool = False
    # `launch_job` only: the image it found, or that the engine lacks it (nothing was created)
    image: ImageInfo | None = None
    needs_image: bool = False


class ReportTo(BaseModel):
    """The run Bigeye addresses (a child's parent), told the run's phase under this number."""

    workflow_id: str
    run_id: str
    sequence: int


class LaunchInput(BaseModel):
    plan: JobPlan
    report_to: ReportTo | None = None


# Signals `RUN_STATUS_SIGNAL` (the status plus its sequence number) to that run; never raises.
Report = Callable[[ReportTo, JobStatus], Awaitable[None]]


class WatchInput(BaseModel):
    plan: JobPlan
    container_id: str


class WatchProgress(BaseModel):
    """What the watch activity heartbeats: enough for the next attempt to resume."""

    container_id: str
    cursor: LogCursor = Field(default_factory=LogCursor)
    deadline_stop: bool = False  # the deadline passed and the container is being stopped
    engine_lost: bool = False


class Watched(BaseModel):
    ended_by: EndedBy | None  # None: a cancel of the run interrupted the watch
    end: ContainerEnd | None = None
    reason: str | None = None
    engine_interrupted: bool = False
    cursor: LogCursor | None = None


class Ran(BaseModel):
    """`run_job`'s outcome: the launch and, when it launched, the watch."""

    launch: Launch
    watched: Watched | None = None


class StopInput(BaseModel):
    plan: JobPlan
    container_id: str | None = None  # None: look it up by the run's name
    cursor: LogCursor | None = None


class Stopped(BaseModel):
    end: ContainerEnd | None  # None: there was no container
    stopped: bool  # False: it had already ended on its own


class FinishInput(BaseModel):
    plan: JobPlan
    container_id: str | None
    status: RunStatus
    exit_code: int | None
    reason: str | None
    started_at: str | None = None
    finished_at: str | None = None


class EngineGone(RuntimeError):
    pass


def job_log(plan: JobPlan, container: str | None = None) -> Any:
    return log.bind(**_job_context(plan, container))


def job_output(plan: JobPlan, container: str | None = None) -> Any:
    """Where the job's own lines go: the same lines as `job_log`'s, written more cheaply."""
    return output_logger(JOB_LOGGER, **_job_context(plan, container))


def _job_context(plan: JobPlan, container: str | None) -> dict[str, str]:
    return {
        "host_id": plan.host_id,
        "job_id": plan.request.job_id,
        "run_id": plan.request.run_id,
        "agent": plan.request.agent,
        "container": container or plan.container_name,
    }


async def _ready(value: T) -> T:
    return value


def _not_ours(exc: NotManagedError) -> ApplicationError:
    return ApplicationError(str(exc), type=NOT_MANAGED, non_retryable=True)


def _progress_of(details: Any) -> WatchProgress | None:
    """The watch progress an earlier attempt heartbeated, if it got that far."""
    if details and isinstance(details[0], dict) and "container_id" in details[0]:
        with contextlib.suppress(ValueError):
            return WatchProgress.model_validate(details[0])
    return None


def _progress_from(details: Any, container_id: str) -> WatchProgress:
    if details and isinstance(details[0], dict):
        with contextlib.suppress(ValueError):
            progress = WatchProgress.model_validate(details[0])
            if progress.container_id == container_id:
                return progress
    return WatchProgress(container_id=container_id)


class JobActivities:
    def __init__(
        self,
        settings: Settings,
        docker: aiodocker.Docker,
        gate: SlotGate,
        puller: Puller,
        report: Report | None = None,
    ) -> None:
        self.settings = settings
        self.docker = docker
        self.gate = gate
        self.puller = puller
        self.report = report
        self._background: set[asyncio.Future[None]] = set()

    # ---- control activities (always have room) --------------------------------------------

    @activity.defn(name="resolve_job")
    async def resolve_job(self, raw_request: dict[str, Any]) -> Resolution:
        request = parse_job_request(raw_request)
        info = activity.info()
        dispatched = info.scheduled_time.isoformat().replace("+00:00", "Z")
        try:
            host = await self._agent_set()
        except ConfigError as exc:
            log.error("cannot read the agent set; run not started", error=str(exc),
                      job_id=request.job_id, run_id=request.run_id)  # fmt: skip
            return Resolution(outcome="rejected", message=f"{exc}: fix it and run the job again")
        return resolve(
            request,
            host,
            self.settings.host_id,
            host_dir=self.settings.host_dir,
            config_root=self.settings.config_path.parent,
            version=VERSION,
            workflow_id=info.workflow_id,
            workflow_run_id=info.workflow_run_id or "",
            dispatched_at=dispatched,
        )

    async def _agent_set(self) -> HostConfig:
        for attempt in range(1, CONFIG_READS + 1):
            try:
                return self.settings.load_host()
            except ConfigError:
                if attempt == CONFIG_READS:
                    raise
                await asyncio.sleep(0.5)
        raise AssertionError("unreachable")

    @activity.defn(name="stop_container")
    async def stop_container(self, job: StopInput) -> Stopped:
        """Stop (SIGTERM, the agent's grace, SIGKILL) if it still runs, then read the ending."""
        plan = job.plan
        jlog = job_log(plan)
        run_id = plan.request.run_id
        async with heartbeating(lambda: None):
            try:
                info = await containers.inspect_ours(
                    self.docker, job.container_id or plan.container_name, plan.host_id, run_id
                )
                if info is None:
                    return Stopped(end=None, stopped=False)
                stopped = not has_ended(info)
                if stopped:
                    jlog.info("stopping job container", grace_seconds=plan.stop_grace_seconds)
                    forwarder = OutputForwarder(
                        self.docker,
                        info["Id"],
                        LineReader(job.cursor),
                        jlog,
                        job_output(plan),
                    )
                    await stop_and_drain(
                        self.docker, info["Id"], plan.stop_grace_seconds, forwarder.drain
                    )
                    forwarder.summary()
                end = await finalize(self.docker, info["Id"], plan.host_id, run_id)
            except NotManagedError as exc:
                raise _not_ours(exc) from None
            except Exception as exc:
                raise activity_error(exc, "stopping the job container") from None
        self.gate.released()
        return Stopped(end=end, stopped=stopped)

    @activity.defn(name="finish_run")
    async def finish_run(self, job: FinishInput) -> None:
        """Remove the container, whose ending the workflow has recorded, and log the result."""
        plan = job.plan
        jlog = job_log(plan, job.container_id[:12] if job.container_id else None)
        if job.container_id is not None:
            try:
                info = await containers.inspect_ours(
                    self.docker, job.container_id, plan.host_id, plan.request.run_id
                )
                if info is not None:
                    await containers.remove(self.docker, info["Id"])
            except NotManagedError as exc:
                raise _not_ours(exc) from None
            except Exception as exc:
                raise activity_error(exc, "removing the job container") from None
            self.gate.released()
        agent = plan.request.agent
        metrics.RUNS_FINISHED.labels(agent, job.status).inc()
        ran = metrics.seconds_between(job.started_at, job.finished_at)
        if ran is not None:
            metrics.RUN_DURATION.labels(agent, job.status).observe(max(ran, 0.0))
        jlog.info("job finished", status=job.status, exit_code=job.exit_code, reason=job.reason)

    # ---- launch activities ----------------------------------------------------------------

    @activity.defn(name="ensure_image")
    async def ensure_image(self, plan: JobPlan) -> ImageInfo:
        jlog = job_log(plan)
        last: list[str] = []
        async with heartbeating(lambda: {"status": last[-1] if last else None}):
            try:
                auth = registry_auth(plan.registry)
            except OSError as exc:
                where = plan.registry.password_file if plan.registry else "?"
                raise ApplicationError(
                    f"cannot read the registry password file {where}: {exc.strerror}: fix "
                    "registry.password_file in bigeye_agent.yml",
                    type="RegistryLoginUnreadable",
                    non_retryable=True,
                ) from None
            try:
                image = await self.puller.ensure(plan.image, auth, last.append)
            except ImagePullError as exc:
                jlog.error("image pull failed", image=plan.image, error=str(exc))
                raise ApplicationError(
                    str(exc), type="ImagePullFailed", non_retryable=exc.permanent
                ) from None
            except Exception as exc:
                raise activity_error(exc, f"looking up image {plan.image}") from None
        if last:
            jlog.info("image pulled", image=plan.image, last_status=last[-1])
        return image

    @activity.defn(name="launch_container")
    async def launch_container(self, plan: JobPlan) -> Launch:
        """Create and start the run's container, or adopt it; `Launch()` when no slot is free."""
        return await self._launching(plan, with_image=False)

    @activity.defn(name="launch_job")
    async def launch_job(self, plan: JobPlan) -> Launch:
        """`launch_container` that also names the image it ran (one round trip instead of two
        with `ensure_image`); `Launch(needs_image=True)`, creating nothing, when the engine
        lacks the image, and the workflow pulls it with `ensure_image` first."""
        try:
            return await self._launching(plan, with_image=True)
        except ApplicationError as exc:  # the run's result still names the image, if present
            image = await self._image_if_present(plan)
            raise ApplicationError(
                exc.message, *([image.model_dump(mode="json")] if image else []),
                type=exc.type, non_retryable=exc.non_retryable,
            ) from None  # fmt: skip

    @activity.defn(name="run_job")
    async def run_job(self, job: LaunchInput) -> Ran:
        """Launch the run's container (`launch_job`: or find no slot, or no image, and return
        at once) and watch it to its end (`watch_container`), in one activity: the child that
        runs it wakes up once, when the job has ended. Once launched, the launch tells the run
        Bigeye addresses that the job is `running`. A later attempt resumes the watch of the
        container its heartbeats name, and never creates another."""
        plan = job.plan
        resumed = _progress_of(activity.info().heartbeat_details)
        if resumed is not None:
            launched = await self._relaunched(plan, resumed.container_id)
        else:
            try:
                launched = await self.launch_job(plan)
            except ApplicationError as exc:
                if exc.non_retryable or activity.info().attempt < LAUNCH_ATTEMPTS:
                    raise
                raise ApplicationError(
                    f"{exc.message} (gave up after {LAUNCH_ATTEMPTS} attempts)", *exc.details,
                    type=exc.type, non_retryable=True,
                ) from None  # fmt: skip
            if launched.container_id is None:
                return Ran(launch=launched)
        assert launched.container_id is not None
        if job.report_to is not None and self.report is not None:
            running = JobStatus(
                phase="running",
                container_id=launched.container_id,
                started_at=launched.started_at,
            )
            self._spawn(self.report(job.report_to, running))  # the watch need not wait for it
        watched = await self._watching(plan, launched.container_id)
        return Ran(launch=launched, watched=watched)

    async def _relaunched(self, plan: JobPlan, container_id: str) -> Launch:
        """What an earlier attempt launched: looked up, never created again (a container
        removed since is the watch's to report)."""
        try:
            info = await containers.inspect_ours(
                self.docker, container_id, plan.host_id, plan.request.run_id
            )
        except NotManagedError as exc:
            raise _not_ours(exc) from None
        except Exception as exc:
            raise activity_error(exc, "looking up the job container") from None
        started = docker_time(info["State"].get("StartedAt")) if info else None
        image = await self._image_if_present(plan)
        return Launch(container_id=container_id, started_at=started, image=image)

    def _spawn(self, call: Awaitable[None]) -> None:
        task = asyncio.ensure_future(call)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _launching(self, plan: JobPlan, with_image: bool) -> Launch:
        info = activity.info()
        waiter = Waiter(
            run_id=plan.request.run_id,
            agent=plan.request.agent,
            agent_max=plan.max_concurrent,
            workflow_id=info.workflow_id or "",
            workflow_run_id=info.workflow_run_id or "",
        )
        # a launch takes a fraction of a second: its first beat after `every` leaves the watch's
        # first beat unthrottled, and a cancel sent during the launch is heard right after it
        async with heartbeating(lambda: {"container": plan.container_name}, at_once=False):
            work = asyncio.ensure_future(self._launch(plan, waiter, with_image))
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                # A create or start in flight lands before the cancel is acknowledged, so the
                # workflow's stop, which looks the container up by name, finds it.
                await asyncio.wait([work], timeout=LAUNCH_SETTLE_SECONDS)
                if work.done() and not work.cancelled():
                    work.exception()
                raise

    async def _start(self, container_id: str) -> None:
        try:
            await containers.start(self.docker, container_id)
        except aiodocker.DockerError as exc:
            if not (is_not_found(exc) and JOB_NETWORK in str(exc.message)):
                raise
            # the job network is made on first use, and again after a `docker network prune`
            await ensure_job_network(self.docker)
            await containers.start(self.docker, container_id)

    async def _image_if_present(self, plan: JobPlan) -> ImageInfo | None:
        with contextlib.suppress(Exception):
            return await self.puller.present(plan.image)
        return None

    async def _launch(self, plan: JobPlan, waiter: Waiter, with_image: bool) -> Launch:
        """Create (the engine says when it lacks the image) and start: the same two calls as
        `docker run`. The container is looked up first only when the slot or the name is
        taken: a retried attempt adopts the container its run already has."""
        jlog = job_log(plan)
        run_id = plan.request.run_id
        image: ImageInfo | None = None
        try:
            created_id: str | None = None
            async with self.gate.admission(waiter) as admitted:
                if admitted:
                    created_id = await containers.create(
                        self.docker, plan.container_name, plan.create_body
                    )
            info: dict[str, Any] | None = None
            if created_id is None:
                info = await containers.inspect_ours(
                    self.docker, plan.container_name, plan.host_id, run_id
                )
                if info is None and admitted:
                    raise RuntimeError(f"container {plan.container_name} vanished after a conflict")
                if info is None:
                    jlog.info("waiting for a job slot", slots=self.gate.max_jobs,
                              agent_max_concurrent=plan.max_concurrent)  # fmt: skip
                    return Launch()
                self.gate.forget(run_id)  # refused, but its container exists: it waits no more
            if created_id is not None:
                container_id = created_id
            else:
                assert info is not None
                container_id = str(info["Id"])
            if info is None or info["State"].get("Status") == "created":
                await self._start(container_id)
                info = None
            looked, image = await asyncio.gather(
                containers.inspect_ours(self.docker, container_id, plan.host_id, run_id)
                if info is None else _ready(info),
                self.puller.present(plan.image) if with_image else _ready(None),
            )  # fmt: skip
            info = looked or info
            if info is None:
                raise RuntimeError(f"container {plan.container_name} vanished as it started")
            created = created_id is not None
        except containers.ImageMissing as exc:
            if with_image:
                return Launch(needs_image=True)
            raise activity_error(exc, "launching the job container") from None
        except NotManagedError as exc:
            raise _not_ours(exc) from None
        except Exception as exc:
            raise activity_error(exc, "launching the job container") from None
        launched = Launch(
            container_id=info["Id"],
            started_at=docker_time(info["State"].get("StartedAt")),
            created=created,
            image=image,
        )
        if created:
            metrics.RUNS_STARTED.labels(plan.request.agent).inc()
            waited = metrics.seconds_between(plan.dispatched_at, launched.started_at)
            if waited is not None:
                metrics.DISPATCH_TO_RUNNING.labels(plan.request.agent).observe(max(waited, 0.0))
        else:
            metrics.ADOPTIONS.inc()
        jlog.info(
            "job container started" if created else "job container adopted",
            container_id=info["Id"][:12],
        )
        return launched

    # ---- the watch (one per running job) -----------------------------------------------------

    @activity.defn(name="watch_container")
    async def watch_container(self, job: WatchInput) -> Watched:
        """Forward the job's output until it exits (or its deadline stops it); read its ending."""
        return await self._watching(job.plan, job.container_id)

    async def _watching(self, plan: JobPlan, container_id: str) -> Watched:
        progress = _progress_from(activity.info().heartbeat_details, container_id)
        jlog = job_log(plan, container_id[:12])
        reader = LineReader(progress.cursor)
        forwarder = OutputForwarder(
            self.docker, container_id, reader, jlog, job_output(plan, container_id[:12])
        )

        def progress_now() -> dict[str, Any]:
            progress.cursor = reader.cursor
            return progress.model_dump(mode="json")

        async with heartbeating(progress_now):
            try:
                return await self._watch(plan, progress, forwarder, jlog)
            except asyncio.CancelledError:
                details = activity.cancellation_details()
                if details is None or not details.cancel_requested:
                    raise  # worker shutdown or a lost attempt: the job runs on; the next resumes
                return Watched(ended_by=None, cursor=reader.cursor)
            except NotManagedError as exc:
                raise _not_ours(exc) from None
            except EngineGone as exc:
                return Watched(ended_by="failed", reason=str(exc), engine_interrupted=True)
            except Exception as exc:
                raise activity_error(exc, "watching the job container") from None

    async def _watch(
        self, plan: JobPlan, progress: WatchProgress, forwarder: OutputForwarder, jlog: Any
    ) -> Watched:
        container_id = progress.container_id
        run_id = plan.request.run_id

        async def look() -> dict[str, Any] | None:
            return await containers.inspect_ours(self.docker, container_id, plan.host_id, run_id)

        info = await self._patiently(progress, jlog, look)
        vanished = Watched(
            ended_by="failed",
            reason="the job container disappeared before its exit code was saved",
            engine_interrupted=progress.engine_lost,
        )
        if info is None:
            return vanished
        started_at = docker_time(info["State"].get("StartedAt"))
        started = timestamp_ns(started_at) / 1e9 if started_at else time.time()
        deadline = started + plan.timeout_seconds
        while not has_ended(info):
            remaining = deadline - time.time()
            if remaining <= 0 or progress.deadline_stop:
                if not progress.deadline_stop:
                    jlog.warning("job timed out, stopping", timeout_seconds=plan.timeout_seconds)
                    progress.deadline_stop = True
                    progress.cursor = forwarder.reader.cursor
                    activity.heartbeat(progress.model_dump(mode="json"))
                await self._patiently(
                    progress,
                    jlog,
                    lambda: stop_and_drain(
                        self.docker, container_id, plan.stop_grace_seconds, forwarder.follow
                    ),
                )
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, FOLLOW_WINDOW_SECONDS)):
                        await self._quietly(forwarder.follow)
            # A log stream can end silently (engine restart, proxy idle cut): look again.
            info = await self._patiently(progress, jlog, look)
            if info is None:
                return vanished
        await self._patiently(progress, jlog, forwarder.drain)
        end = await self._patiently(
            progress, jlog, lambda: finalize(self.docker, container_id, plan.host_id, run_id)
        )
        if end is None:
            return vanished
        forwarder.summary()
        self.gate.released()
        jlog.info("job container exited", exit_code=end.exit_code, oom_killed=end.oom_killed)
        return Watched(
            ended_by="deadline" if progress.deadline_stop else "exited",
            end=end,
            engine_interrupted=progress.engine_lost,
        )

    @staticmethod
    async def _quietly(follow: Callable[[], Awaitable[None]]) -> None:
        """A log stream that breaks is only a cue to look at the container again."""
        try:
            await follow()
        except Exception as exc:
            if not is_unreachable(exc) and not isinstance(exc, aiodocker.DockerError):
                raise

    @staticmethod
    async def _patiently(progress: WatchProgress, jlog: Any, call: Callable[[], Awaitable[T]]) -> T:
        """A watched job outlives an engine restart: calls are retried while it is away."""
        lost_since: float | None = None
        delay = 1.0
        while True:
            try:
                result = await call()
            except Exception as exc:
                transient = is_unreachable(exc) or (
                    isinstance(exc, aiodocker.DockerError) and exc.status >= 500
                )
                if not transient:
                    raise
                progress.engine_lost = True
                now = time.monotonic()
                if lost_since is None:
                    lost_since = now
                    jlog.warning("Docker engine unreachable; waiting for it", error=describe(exc))
                if now - lost_since > ENGINE_PATIENCE_SECONDS:
                    raise EngineGone(
                        f"the Docker engine was unreachable for {ENGINE_PATIENCE_SECONDS:.0f} s "
                        f"while the job ran ({describe(exc)}); the job's end is unknown"
                    ) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            if lost_since is not None:
                jlog.info("Docker engine reachable again",
                          after_seconds=round(time.monotonic() - lost_since, 1))  # fmt: skip
            return result
