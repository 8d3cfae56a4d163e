"""`AgentJobRun`: one batch agent run, from a plain-JSON request to a `JobRunResult`.

resolve (the plan) → ensure the image → launch (or wait for a slot) → watch → stop if needed →
the ending recorded → finish (remove the container) → the result.

The input is plain JSON, validated here: a typed argument that fails to decode would fail the
workflow *task*, which Temporal retries forever, instead of failing the run. The workflow owns
cancellation: a cancel in any phase is remembered (an activity that completes before it hears
of the cancel would otherwise swallow it) and ends the run `canceled` with nothing left running.
On the host queue the run validates the request and hands the work to a child on the release
queue of the release that took it (orchestrator/releases.py): that release finishes it, so a
release may change everything the child does incompatibly. The part on the host queue (validate,
start the child, relay its phases, its cancel and its result) is what every release must replay;
a change to it, or one that should also reach runs in flight, ships behind `workflow.patched`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    FailureError,
)

with workflow.unsafe.imports_passed_through():
    from activities.agents import JobPlan, Resolution
    from activities.images import ImageInfo
    from activities.runs import (
        ENGINE_PATIENCE_SECONDS,
        FinishInput,
        JobActivities,
        Launch,
        LaunchInput,
        Ran,
        ReportTo,
        StopInput,
        Stopped,
        Watched,
        WatchInput,
    )
    from orchestrator.contract import (
        AGENT_NOT_INSTALLED,
        INVALID_JOB_REQUEST,
        JOB_WORKFLOW_TYPE,
        RUN_STATUS_SIGNAL,
        SLOT_SIGNAL,
        STATUS_QUERY,
        ContainerEnd,
        EndedBy,
        InvalidRequest,
        JobRunRequest,
        JobStatus,
        Phase,
        host_id_of,
        is_release_queue,
        job_result,
        launch_queue,
        parse_job_request,
        release_queue,
        release_run_id,
        watch_queue,
    )
    from orchestrator.version import VERSION

# Always set a heartbeat timeout on long-running activities: without one, an activity never
# hears of cancellation and a lost worker's attempt is only noticed at start_to_close.
HEARTBEAT_TIMEOUT = timedelta(seconds=15)
SLOT_RECHECK = timedelta(seconds=30)  # a waiting run asks again even if no offer reaches it
CONTROL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)
PULL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
DOCKER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=15),
    maximum_attempts=8,
)
WATCH_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=15)
)
# Runs started since this patch take two round trips fewer before their container starts and
# one fewer after it exits: `resolve_job` and `finish_run` run as local activities (short,
# idempotent, on the workflow's own worker; the ending is in the history before `finish_run`
# removes anything, as before), and `launch_job` looks the image up itself, so `ensure_image`
# runs only when the engine lacks it. Runs recorded without the marker replay the old path.
FEWER_ROUND_TRIPS = "fewer-round-trips-1"
MAX_PULLS = 2  # an image removed again between its pull and the launch: pulled once more
# Runs started since this patch hand their work to a child on the release queue of the release
# that took them (orchestrator/releases.py). Runs recorded without it do the work themselves.
RELEASE_QUEUES = "release-queues-1"
# Children started since this patch schedule every activity on their own queue, so that each
# comes back with the workflow task that schedules it (eager activity execution: no round trip
# to the server, and one worker fewer per queue), and launch and watch in one activity,
# `run_job`, which tells the parent `running` itself: the child wakes up once, when the job
# has ended.
ONE_QUEUE = "one-queue-1"
# Children started since this patch do not tell the parent `queued` when nothing was told
# before: the parent shows `queued` from its start. A run that waits for a slot saves a signal
# and the two workflow tasks it cost (the parent's, and the child's for the sent signal).
QUIET_QUEUE = "quiet-queue-1"


@workflow.defn(name=JOB_WORKFLOW_TYPE)
class AgentJobRun:
    def __init__(self) -> None:
        self._phase: Phase = "queued"
        self._container_id: str | None = None
        self._started_at: str | None = None
        self._cancel_requested = False
        self._launch_attempted = False
        self._slot_offered = False
        self._fast = False
        self._one_queue = False  # ONE_QUEUE
        self._watched: Watched | None = None  # ONE_QUEUE: the watch came back with the launch
        self._told: tuple[int, Phase | None] = (0, None)  # signals sent to the parent, last phase
        self._heard = 0  # the last child status signal applied
        self._sending: set[asyncio.Future[None]] = set()

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> dict[str, Any]:
        return JobStatus(
            phase=self._phase, container_id=self._container_id, started_at=self._started_at
        ).model_dump(mode="json")

    @workflow.signal(name=SLOT_SIGNAL)
    def slot_available(self) -> None:
        self._slot_offered = True

    @workflow.signal(name=RUN_STATUS_SIGNAL)
    def child_status(self, status: Any) -> None:
        """The child's phase, so that this run's `status` answers for it (signals may race).
        Anything else is ignored: a handler that raised would stall the run's every task."""
        try:
            sequence = int(status["sequence"])
            known = JobStatus.model_validate({k: v for k, v in status.items() if k != "sequence"})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # ValidationError too
            workflow.logger.warning("ignoring a malformed run status: %s", type(exc).__name__)
            return
        if sequence > self._heard and self._phase != "finished":
            self._heard = sequence
            self._phase, self._container_id = known.phase, known.container_id
            self._started_at = known.started_at

    @workflow.run
    async def run(self, raw_request: Any) -> dict[str, Any]:
        request = _validated(raw_request)
        arrived_on = workflow.info().task_queue
        if not is_release_queue(arrived_on) and workflow.patched(RELEASE_QUEUES):
            if not await self._canceled_on_arrival():
                return await self._in_release(raw_request, request)
        self._fast = workflow.patched(FEWER_ROUND_TRIPS)
        parent = workflow.info().parent
        self._one_queue = self._fast and parent is not None and workflow.patched(ONE_QUEUE)
        resolution = await self._resolve(request)
        if resolution.plan is None:  # the agent set could not be read, or breaks the policy
            self._phase = "finished"
            image_ref = resolution.image or ""
            return self._result(request, None, image_ref, None, "failed", None, resolution.message)
        plan = resolution.plan

        image: ImageInfo | None = None
        launch: Launch | None = None
        watched: Watched | None = None
        failure: str | None = None
        try:
            if self._fast:
                launch, image = await self._launch_with_image(plan)
            else:
                image = await self._pull(plan)
                if image is not None:
                    launch = await self._launch(plan)
            if self._one_queue:
                watched = self._watched
            elif launch is not None and launch.container_id is not None:
                self._enter("running")
                watched = await self._step(
                    JobActivities.watch_container,
                    WatchInput(plan=plan, container_id=launch.container_id),
                    task_queue=watch_queue(workflow.info().task_queue),
                    start_to_close_timeout=self._watch_limit(plan),
                    schedule_to_close_timeout=2 * self._watch_limit(plan),
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=WATCH_RETRY,
                )
        except FailureError as exc:  # an activity's, or the image vanishing after its pulls
            failure = _failure_message(exc)
            image = image or _image_in(exc)

        ended_by, end, reason = await self._ending(plan, launch, watched, failure)
        interrupted = bool(watched and watched.engine_interrupted)
        result = self._result(request, plan, plan.image, image, ended_by, end, reason,
                              engine_interrupted=interrupted)  # fmt: skip
        # a completion that crosses a signal's delivery is turned back and redone (local
        # activities included): let the deliveries land first
        await self._delivered()
        await self._finish(plan, end, result)  # the ending is in the history: now remove
        self._phase = "finished"
        return result

    async def _pull(self, plan: JobPlan) -> ImageInfo | None:
        self._enter("pulling")
        image: ImageInfo | None = await self._step(
            JobActivities.ensure_image,
            plan,
            task_queue=self._queue(launch_queue),
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=PULL_RETRY,
        )
        return image

    async def _launch_with_image(self, plan: JobPlan) -> tuple[Launch | None, ImageInfo | None]:
        """`launch_job`, pulling first only when it finds the engine without the image."""
        image: ImageInfo | None = None
        pulls = 0
        while True:
            launch = await self._launch(plan, JobActivities.launch_job)
            if launch is None or not launch.needs_image:
                return launch, (launch.image if launch is not None else None) or image
            if pulls == MAX_PULLS:
                break
            image = await self._pull(plan)
            pulls += 1
            if image is None:
                return None, None
        raise ApplicationError(
            f"the image {plan.image} was pulled {MAX_PULLS} times and was gone each time the "
            "container was to be created: is something on the host removing images?",
            type="ImageVanished",
        )

    async def _resolve(self, request: JobRunRequest) -> Resolution:
        """The run's plan; a refusal is the workflow's own failure, not a result."""
        try:
            resolution: Resolution = await self._step(
                JobActivities.resolve_job,
                request.model_dump(mode="json"),
                local=self._fast,
                interruptible=False,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=CONTROL_RETRY,
            )
        # FailureError: a local activity's failure is raised as itself, not in an ActivityError
        except FailureError as exc:  # the host could not plan the run: it still gets a result
            return Resolution(outcome="rejected", message=_failure_message(exc))
        if resolution.outcome == "invalid":
            raise ApplicationError(
                resolution.message or "invalid", type=INVALID_JOB_REQUEST, non_retryable=True
            )
        if resolution.outcome == "not_installed":
            raise ApplicationError(
                resolution.message or "agent not installed",
                type=AGENT_NOT_INSTALLED,
                non_retryable=True,
            )
        return resolution

    async def _ending(
        self, plan: JobPlan, launch: Launch | None, watched: Watched | None, failure: str | None
    ) -> tuple[EndedBy, ContainerEnd | None, str | None]:
        """How the run ended: the watch's record, or a stop's when the watch has none."""
        if watched is not None and watched.end is not None and watched.ended_by is not None:
            return watched.ended_by, watched.end, None
        ended_by: EndedBy = "canceled" if self._cancel_requested else "failed"
        reason = watched.reason if watched is not None and watched.ended_by == "failed" else failure
        if not self._launch_attempted:
            return ended_by, None, reason
        # a container may exist: stop it, then read its ending (it may have exited by itself)
        stopped, note = await self._stop(plan, launch, watched)
        end = stopped.end if stopped is not None else None
        if stopped is not None and end is not None and not stopped.stopped:
            if end.state != "created":
                ended_by, reason = "exited", None
        return ended_by, end, "; ".join(part for part in (reason, note) if part) or None

    async def _launch(
        self, plan: JobPlan, activity: Callable[..., Any] = JobActivities.launch_container
    ) -> Launch | None:
        """Create/start, or adopt; while the host or the agent is full, wait as `queued`."""
        while not self._cancel_requested:
            # too short to tell the parent about: it shows `queued` (or `pulling`) until `running`
            self._enter("starting", tell=False)
            self._slot_offered = False
            self._launch_attempted = True
            step: Callable[..., Any] = activity
            arg: JobPlan | LaunchInput = plan
            options: dict[str, Any] = {
                "start_to_close_timeout": timedelta(minutes=2),
                "heartbeat_timeout": HEARTBEAT_TIMEOUT,
                "retry_policy": DOCKER_RETRY,
            }
            report_to = self._report_to() if activity == JobActivities.launch_job else None
            if report_to is not None:  # ONE_QUEUE: the launch watches the job to its end too
                step, arg = JobActivities.run_job, LaunchInput(plan=plan, report_to=report_to)
                options.update(
                    start_to_close_timeout=self._watch_limit(plan),
                    schedule_to_close_timeout=2 * self._watch_limit(plan),
                    retry_policy=WATCH_RETRY,
                )
            outcome: Launch | Ran | None = await self._step(
                step, arg, task_queue=self._queue(launch_queue), **options
            )
            launch = outcome.launch if isinstance(outcome, Ran) else outcome
            if isinstance(outcome, Ran):  # run_job, with `report_to`
                assert report_to is not None and launch is not None
                self._watched = outcome.watched
                if launch.container_id:
                    self._told = (report_to.sequence, "running")  # the launch told the parent
                    self._phase = "running"
            if launch is not None and launch.needs_image:
                self._launch_attempted = False  # it looked up the image and created nothing
                return launch
            if launch is None or launch.container_id is not None:
                if launch is not None:
                    self._container_id, self._started_at = launch.container_id, launch.started_at
                return launch
            self._enter("queued")
            try:
                await workflow.wait_condition(
                    lambda: self._slot_offered, timeout=SLOT_RECHECK.total_seconds()
                )
            except TimeoutError:
                pass
            except asyncio.CancelledError:
                self._note_cancel()
        return None

    async def _stop(
        self, plan: JobPlan, launch: Launch | None, watched: Watched | None
    ) -> tuple[Stopped | None, str | None]:
        """SIGTERM, the agent's grace, SIGKILL, then the ending; a failure is noted, not raised."""
        self._enter("stopping")
        try:
            stopped: Stopped | None = await self._step(
                JobActivities.stop_container,
                StopInput(
                    plan=plan,
                    container_id=launch.container_id if launch else None,
                    cursor=watched.cursor if watched else None,
                ),
                interruptible=False,
                start_to_close_timeout=timedelta(seconds=plan.stop_grace_seconds + 90),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=DOCKER_RETRY,
            )
        except ActivityError as exc:
            return None, (
                f"the container could not be stopped ({_failure_message(exc)}); "
                "the orphan sweep stops and removes it"
            )
        return stopped, None

    async def _finish(
        self, plan: JobPlan, end: ContainerEnd | None, result: dict[str, Any]
    ) -> None:
        """The ending is in the history now: remove the container, log the result."""
        try:
            await self._step(
                JobActivities.finish_run,
                FinishInput(
                    plan=plan,
                    container_id=end.container_id if end else None,
                    status=result["status"],
                    exit_code=result["exit_code"],
                    reason=result["reason"],
                    started_at=result["started_at"],
                    finished_at=result["finished_at"],
                ),
                local=self._fast,
                interruptible=False,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=DOCKER_RETRY,
            )
        except FailureError:
            pass  # the result stands; the orphan sweep removes what is left

    async def _step(
        self,
        activity: Callable[..., Any],
        arg: Any,
        *,
        interruptible: bool = True,
        local: bool = False,
        **options: Any,
    ) -> Any:
        """One activity (`local`: on this worker, within the workflow task); None when the run
        was canceled first (or the cancel stopped it).

        A cancel of the run while the activity runs is remembered; an interruptible activity
        is told and awaited (it may still complete), any other is left to finish.
        """
        if interruptible and self._cancel_requested:
            return None
        start = workflow.start_local_activity_method if local else workflow.start_activity_method
        handle = start(
            activity,
            arg,
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            **options,
        )

        def interrupt() -> None:
            if interruptible and not handle.done():
                handle.cancel()

        await self._through_cancels(handle, interrupt)
        try:
            return handle.result()
        except asyncio.CancelledError:  # the cancel met a result already in: it goes unread
            return None
        except ActivityError as exc:
            if isinstance(exc.cause, CancelledError):
                return None
            raise
        except CancelledError:  # a local activity's cancel is not wrapped
            return None

    async def _in_release(self, raw_request: Any, request: JobRunRequest) -> dict[str, Any]:
        """The run's work, done by a child on this release's queue: its phases arrive as
        signals, a cancel of this run is passed on, and its result or refusal is this run's."""
        info = workflow.info()
        release = _taking_release()
        starting = asyncio.ensure_future(
            workflow.start_child_workflow(
                JOB_WORKFLOW_TYPE,
                raw_request,
                id=release_run_id(info.workflow_id, release, request.run_id),
                task_queue=release_queue(info.task_queue, release),
                # terminated or timed out, this run takes its child with it, as it would end
                # itself: what the child left running is an orphan for the sweep
                parent_close_policy=workflow.ParentClosePolicy.TERMINATE,
            )
        )
        await self._through_cancels(starting)  # a separate task: a cancel does not abort the start
        child = starting.result()
        if self._cancel_requested:
            self._pass_cancel(child.id)
        await self._through_cancels(child, lambda: self._pass_cancel(child.id))
        self._phase = "finished"
        await self._delivered()
        try:
            result: dict[str, Any] = child.result()
        except ChildWorkflowError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type in _REFUSALS:
                raise ApplicationError(cause.message, type=cause.type, non_retryable=True) from None
            raise
        return result

    async def _through_cancels(
        self, task: asyncio.Future[Any], on_cancel: Callable[[], None] | None = None
    ) -> None:
        """Until `task` is done; a cancel of the run meanwhile is remembered (and `on_cancel`
        told), not raised."""
        while not task.done():
            try:
                await workflow.wait([task])
            except asyncio.CancelledError:
                self._note_cancel()
                if on_cancel is not None:
                    on_cancel()

    def _pass_cancel(self, child_id: str) -> None:
        handle = workflow.get_external_workflow_handle(child_id)
        self._send(handle.cancel())  # the child may have ended already: nothing left to cancel

    def _queue(self, sibling: Callable[[str], str]) -> str:
        """Where a job activity goes: this run's own queue, or (runs before ONE_QUEUE) the
        sibling queue of its kind."""
        own = workflow.info().task_queue
        return own if self._one_queue else sibling(own)

    def _report_to(self) -> ReportTo | None:
        """Where `run_job` tells the parent `running`: the next signal's number (ONE_QUEUE
        runs, which are children, only)."""
        parent = workflow.info().parent
        if not self._one_queue or parent is None:
            return None
        return ReportTo(workflow_id=parent.workflow_id, run_id=parent.run_id,
                        sequence=self._told[0] + 1)  # fmt: skip

    def _enter(self, phase: Phase, tell: bool = True) -> None:
        """This run's phase; a child tells its parent, whose `status` Bigeye asks."""
        self._phase = phase
        parent = workflow.info().parent
        sent, last = self._told
        if parent is None or not tell or phase == last:
            return
        if phase == "queued" and last is None and workflow.patched(QUIET_QUEUE):
            self._told = (sent, phase)  # what the parent shows already
            return
        self._told = (sent + 1, phase)
        handle = workflow.get_external_workflow_handle(parent.workflow_id, run_id=parent.run_id)
        self._send(handle.signal(RUN_STATUS_SIGNAL, {**self.status(), "sequence": sent + 1}))

    async def _delivered(self) -> None:
        """Until every signal or cancel sent to another run has been answered."""
        while self._sending:
            await self._through_cancels(next(iter(self._sending)))

    def _send(self, call: Awaitable[None]) -> None:
        """Fire and forget: the run goes on while the server delivers it."""
        task = asyncio.ensure_future(_quietly(call))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _canceled_on_arrival(self) -> bool:
        """A cancel that came with the run's first task: it is delivered at the first yield, and
        would not follow the run across continue-as-new, so such a run ends where it is."""
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            self._note_cancel()
            return True
        return False

    def _note_cancel(self) -> None:
        self._cancel_requested = True
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()

    @staticmethod
    def _watch_limit(plan: JobPlan) -> timedelta:
        return timedelta(
            seconds=plan.timeout_seconds + plan.stop_grace_seconds + ENGINE_PATIENCE_SECONDS + 300
        )

    @staticmethod
    def _result(
        request: JobRunRequest,
        plan: JobPlan | None,
        image_ref: str,
        image: ImageInfo | None,
        ended_by: EndedBy,
        end: ContainerEnd | None,
        reason: str | None,
        *,
        engine_interrupted: bool = False,
    ) -> dict[str, Any]:
        return job_result(
            request=request,
            host_id=plan.host_id if plan else host_id_of(workflow.info().task_queue),
            image=image_ref,
            image_id=image.image_id if image else None,
            image_digest=image.image_digest if image else None,
            ended_by=ended_by,
            end=end,
            reason=reason,
            timeout_seconds=plan.timeout_seconds if plan else 0,
            finished_at=workflow.now().isoformat().replace("+00:00", "Z"),
            orchestrator_version=VERSION,
            engine_interrupted=engine_interrupted,
        ).model_dump(mode="json")


_REFUSALS = (INVALID_JOB_REQUEST, AGENT_NOT_INSTALLED)


def _taking_release() -> str:
    """The release that ran this task: on replay by a later release, the one the history says
    (every worker names its release as its build id, orchestrator/releases.py)."""
    ran_by = workflow.info().get_current_deployment_version()
    return ran_by.build_id if ran_by is not None and ran_by.build_id else VERSION


async def _quietly(call: Awaitable[None]) -> None:
    """A signal or cancel to another workflow whose failure only means it has ended."""
    try:
        await call
    except Exception as exc:  # the other run is closed: nothing to tell it any more
        workflow.logger.debug("not delivered: %s", exc)


def _validated(raw_request: Any) -> JobRunRequest:
    try:
        return parse_job_request(raw_request)
    except InvalidRequest as exc:
        raise ApplicationError(str(exc), type=INVALID_JOB_REQUEST, non_retryable=True) from None


def _image_in(exc: BaseException) -> ImageInfo | None:
    """The image a failed `launch_job` had found (its failure's details), if any."""
    cause = exc.cause if isinstance(exc, ActivityError) and exc.cause else exc
    if isinstance(cause, ApplicationError) and cause.details:
        try:
            return ImageInfo.model_validate(cause.details[0])
        except ValueError:
            return None
    return None


def _failure_message(exc: BaseException) -> str:
    cause = exc.cause if isinstance(exc, ActivityError) and exc.cause else exc
    if isinstance(cause, ApplicationError):
        return cause.message or cause.type or "the activity failed"
    return str(cause) or type(cause).__name__
