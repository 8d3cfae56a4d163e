"""Worker assembly and the daemon's life: connect, reconcile, poll, shut down on SIGTERM.

Three workers share one client. The host queue (`agent-orchestrator.<host_id>`) carries the
workflows and the short control activities; its siblings `.launch` and `.watch` carry the job
activities, so control work always has room. The number of job containers that exist at once
is bounded by the `SlotGate` (BIGEYE_MAX_CONCURRENT_JOBS, and each agent's `max_concurrent`).
"""

from __future__ import annotations

import asyncio
import signal
from datetime import timedelta

import aiodocker
import structlog
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from activities.docker_api import connect as connect_docker
from activities.docker_api import describe
from activities.hoststatus import HostActivities
from activities.runs import JobActivities
from activities.slots import SlotGate
from activities.sweeping import RunIsOpen, Sweeper
from orchestrator.connection import connect, make_runtime
from orchestrator.contract import (
    launch_queue,
    task_queue,
    watch_queue,
)
from orchestrator.health import HealthState, serve_health
from orchestrator.heartbeat import heartbeat_loop
from orchestrator.pauses import pause, until_stopped
from orchestrator.settings import Settings
from orchestrator.version import VERSION
from workflows.agent_job import AgentJobRun
from workflows.host_ping import HostPing

log = structlog.get_logger("bigeye.orchestrator")

SHUTDOWN_GRACE = timedelta(seconds=3)
HEARTBEAT_THROTTLE = timedelta(seconds=2)
CONTROL_ACTIVITY_SLOTS = 64


def build_workers(
    client: Client, settings: Settings, acts: JobActivities, host: HostActivities
) -> list[Worker]:
    common = {
        "max_heartbeat_throttle_interval": HEARTBEAT_THROTTLE,
        "default_heartbeat_throttle_interval": HEARTBEAT_THROTTLE,
        "graceful_shutdown_timeout": SHUTDOWN_GRACE,
    }
    slots = settings.max_concurrent_jobs
    return [
        Worker(
            client,
            task_queue=task_queue(settings.host_id),
            workflows=[AgentJobRun, HostPing],
            activities=[acts.resolve_job, acts.stop_container, host.host_status],
            max_concurrent_activities=CONTROL_ACTIVITY_SLOTS,
            **common,  # type: ignore[arg-type]
        ),
        Worker(
            client,
            task_queue=launch_queue(task_queue(settings.host_id)),
            activities=[acts.ensure_image, acts.launch_container],
            max_concurrent_activities=slots + 4,
            **common,  # type: ignore[arg-type]
        ),
        Worker(
            client,
            task_queue=watch_queue(task_queue(settings.host_id)),
            activities=[acts.watch_container],
            max_concurrent_activities=max(2 * slots, 16),
            **common,  # type: ignore[arg-type]
        ),
    ]


def run_checker(client: Client) -> RunIsOpen:
    """Whether a job's workflow is still open; None when Temporal cannot say right now."""

    async def run_is_open(workflow_id: str) -> bool | None:
        if not workflow_id:
            return False
        try:
            description = await client.get_workflow_handle(workflow_id).describe()
        except RPCError as exc:
            return False if exc.status == RPCStatusCode.NOT_FOUND else None
        return description.status == WorkflowExecutionStatus.RUNNING

    return run_is_open


async def sweep_loop(sweeper: Sweeper, every: float, stop: asyncio.Event) -> None:
    """Phase one ran at start-up; every pass after it marks new orphans, removes old ones."""
    while not stop.is_set():
        await pause(stop, every)
        if stop.is_set():
            return
        try:
            await sweeper.sweep()
        except Exception as exc:  # a failed pass is retried at the next one
            log.warning("orphan sweep failed; retrying", error=describe(exc))


async def run_daemon(settings: Settings) -> int:
    """The daemon's start-up order: settings (done) → Temporal → Docker → reconcile → poll."""
    health = HealthState()
    health_server = await serve_health(settings.health_addr, health)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    log.info("starting", version=VERSION, temporal=settings.temporal_address)
    client = await _until_connected(settings, stop)
    if client is None:
        await health_server.cleanup()
        return 0
    docker = connect_docker(settings.docker_host)
    try:
        version = await _until_docker(docker, stop)
        if version is None:
            return 0
        health.docker_version = version
        # Reconcile before polling: open runs' containers are left to their activities (which
        # adopt them); the others are marked for sweeping.
        sweeper = Sweeper(
            docker, settings.host_id, run_checker(client), settings.orphan_grace_seconds
        )
        await sweeper.sweep()
        gate = SlotGate(settings.max_concurrent_jobs)
        acts = JobActivities(settings, docker, gate)
        host = HostActivities(settings, docker, gate, lambda: health.polling)
        workers = build_workers(client, settings, acts, host)
        tasks = [asyncio.create_task(w.run()) for w in workers]
        health.polling = True
        beating = asyncio.create_task(
            heartbeat_loop(client, host, settings.heartbeat_seconds, stop)
        )
        sweeping = asyncio.create_task(sweep_loop(sweeper, settings.sweep_seconds, stop))
        log.info(
            "polling",
            task_queue=task_queue(settings.host_id),
            slots=settings.max_concurrent_jobs,
        )
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
        health.polling = False
        failed = [t for t in done if t is not stopped and t.exception() is not None]
        for task in failed:
            log.error("worker stopped", error=str(task.exception()))
        # SIGTERM: stop polling, leave job containers running; a restart re-adopts them.
        log.info("shutting down: job containers keep running and will be re-adopted")
        stop.set()
        await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
        await asyncio.gather(beating, sweeping, return_exceptions=True)
        stopped.cancel()
        return 1 if failed else 0
    finally:
        await docker.close()
        await health_server.cleanup()


async def _until_connected(settings: Settings, stop: asyncio.Event) -> Client | None:
    runtime = make_runtime()

    async def attempt() -> Client:
        client = await connect(settings, runtime)
        log.info("connected to Temporal", namespace=settings.namespace)
        return client

    def failed(exc: Exception, delay: float) -> None:
        log.error(
            "cannot connect to Temporal; retrying",
            address=settings.temporal_address,
            error=str(exc).splitlines()[0][:300],
            retry_in_seconds=delay,
        )

    return await until_stopped(attempt, failed, stop, retry_on=(RuntimeError,))


async def _until_docker(docker: aiodocker.Docker, stop: asyncio.Event) -> str | None:
    async def attempt() -> str:
        version = str((await docker.version()).get("Version"))
        log.info("connected to Docker", version=version)
        return version

    def failed(exc: Exception, delay: float) -> None:
        # any failure to reach the engine is retried the same way
        log.error("cannot reach Docker; retrying", error=describe(exc), retry_in_seconds=delay)

    return await until_stopped(attempt, failed, stop)
