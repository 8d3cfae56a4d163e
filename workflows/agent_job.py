"""`AgentJobRun`: one batch agent run, from a plain-JSON request to a `JobRunResult`.

resolve the agent → ensure the image → create/start the container → watch it → result.

The input is plain JSON, validated here: a typed argument that fails to decode would fail the
workflow *task*, which Temporal retries forever, instead of failing the run. Changes to this
file ship behind `workflow.patched(...)` so that runs started by one release replay on the next.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from activities.agents import JobPlan, Resolution
    from activities.images import ImageInfo
    from activities.runs import JobActivities, Launched, Outcome, WatchInput
    from orchestrator.contract import (
        AGENT_NOT_INSTALLED,
        INVALID_JOB_REQUEST,
        JOB_WORKFLOW_TYPE,
        STATUS_QUERY,
        InvalidRequest,
        JobRunResult,
        JobStatus,
        Phase,
        launch_queue,
        parse_job_request,
        watch_queue,
    )

CONTROL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)
JOB_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=["PolicyViolation", "AgentNotInstalled", "NotManagedError"],
)
# Always set a heartbeat timeout on long-running activities: without one, an activity never
# hears of cancellation and a lost worker's attempt is only noticed at start_to_close.
HEARTBEAT_TIMEOUT = timedelta(seconds=15)


@workflow.defn(name=JOB_WORKFLOW_TYPE)
class AgentJobRun:
    def __init__(self) -> None:
        self._phase: Phase = "queued"
        self._container_id: str | None = None
        self._started_at: str | None = None

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> dict[str, Any]:
        return JobStatus(
            phase=self._phase, container_id=self._container_id, started_at=self._started_at
        ).model_dump(mode="json")

    @workflow.run
    async def run(self, raw_request: Any) -> dict[str, Any]:
        try:
            request = parse_job_request(raw_request)
        except InvalidRequest as exc:
            raise ApplicationError(str(exc), type=INVALID_JOB_REQUEST, non_retryable=True) from None

        control = workflow.info().task_queue
        resolution: Resolution = await workflow.execute_activity_method(
            JobActivities.resolve_job,
            request.model_dump(mode="json"),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=CONTROL_RETRY,
        )
        if resolution.outcome == "invalid":
            raise ApplicationError(
                resolution.message or "invalid", type=INVALID_JOB_REQUEST, non_retryable=True
            )
        if resolution.outcome == "not_installed" or resolution.plan is None:
            raise ApplicationError(
                resolution.message or "agent not installed",
                type=AGENT_NOT_INSTALLED,
                non_retryable=True,
            )
        plan = resolution.plan
        image: ImageInfo | None = None
        try:
            self._phase = "pulling"
            image = await workflow.execute_activity_method(
                JobActivities.ensure_image,
                plan,
                task_queue=launch_queue(control),
                start_to_close_timeout=timedelta(minutes=30),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=RetryPolicy(maximum_attempts=3, non_retryable_error_types=[]),
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
            self._phase = "starting"
            launched: Launched = await workflow.execute_activity_method(
                JobActivities.launch_container,
                plan,
                task_queue=launch_queue(control),
                start_to_close_timeout=timedelta(hours=24),  # may wait for a free slot
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=JOB_RETRY,
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
            self._phase, self._container_id = "running", launched.container_id
            self._started_at = launched.started_at
            outcome: Outcome = await workflow.execute_activity_method(
                JobActivities.watch_container,
                WatchInput(plan=plan, container_id=launched.container_id),
                task_queue=watch_queue(control),
                start_to_close_timeout=timedelta(
                    seconds=plan.timeout_seconds + plan.stop_grace_seconds + 300
                ),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=JOB_RETRY,
            )
        except (asyncio.CancelledError, ActivityError) as exc:
            canceled = not isinstance(exc, ActivityError) or _is_cancellation(exc)
            outcome = await self._clean_up(plan) or Outcome(
                status="failed",
                exit_code=None,
                reason=None,
                started_at=None,
                finished_at=workflow.now().isoformat().replace("+00:00", "Z"),
                log_tail=[],
            )
            if canceled:
                outcome.status = "canceled"
                outcome.reason = outcome.reason or "canceled by request"
            else:
                outcome.status = "failed"
                outcome.reason = _failure_message(exc)
        self._phase = "finished"
        return self._result(plan, image, outcome).model_dump(mode="json")

    async def _clean_up(self, plan: JobPlan) -> Outcome | None:
        """Stop (SIGTERM, the agent's grace, SIGKILL), save what it left, remove."""
        self._phase = "stopping"
        return await workflow.execute_activity_method(
            JobActivities.stop_container,
            plan,
            start_to_close_timeout=timedelta(seconds=plan.stop_grace_seconds + 120),
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=CONTROL_RETRY,
        )

    def _result(self, plan: JobPlan, image: ImageInfo | None, outcome: Outcome) -> JobRunResult:
        request = plan.request
        return JobRunResult(
            job_id=request.job_id,
            run_id=request.run_id,
            host_id=plan.host_id,
            agent=request.agent,
            status=outcome.status,
            exit_code=outcome.exit_code,
            reason=outcome.reason,
            image=plan.image,
            image_id=image.image_id if image else None,
            image_digest=image.image_digest if image else None,
            container_name=plan.container_name,
            started_at=outcome.started_at or self._started_at,
            finished_at=outcome.finished_at,
            log_tail=outcome.log_tail,
            orchestrator_version=outcome.orchestrator_version,
        )


def _is_cancellation(exc: ActivityError) -> bool:
    return isinstance(exc.cause, CancelledError)


def _failure_message(exc: BaseException) -> str:
    cause = exc.cause if isinstance(exc, ActivityError) and exc.cause else exc
    return str(cause) or type(cause).__name__
