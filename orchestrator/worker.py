"""Worker assembly and the daemon's life: connect, reconcile, poll, shut down on SIGTERM.

Three workers share one client. The host queue (`agent-orchestrator.<host_id>`) carries the
workflows and the short control activities; its siblings `.launch` and `.watch` carry the job
activities, so control work always has room. How many job containers exist at once is bounded
by the `SlotGate` (BIGEYE_MAX_CONCURRENT_JOBS, and each agent's `max_concurrent`), never by a
worker slot: a run that waits for a slot waits in its workflow.

Start-up never crash-loops: Temporal and Docker are retried with backoff, and a failed first
sweep is only logged. SIGTERM stops polling and leaves job containers running (a restarted
orchestrator re-adopts them); the process exits within `EXIT_DEADLINE_SECONDS` whatever state
its dependencies are in.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from datetime import timedelta

import aiodocker
import structlog
from temporalio.client import Client
from temporalio.worker import Worker

from activities.docker_api import connect as connect_docker
from activities.docker_api import describe
from activities.hoststatus import HostActivities
from activities.images import Puller
from activities.runs import JobActivities
from activities.slots import SlotGate, Waiter, Wake
from activities.sweeping import Sweeper
from orchestrator import metrics
from orchestrator.connection import connect, free_loopback_address, make_runtime
from orchestrator.contract import SLOT_SIGNAL, HostStatus, launch_queue, task_queue, watch_queue
from orchestrator.health import HealthState, serve_health, stop_health
from orchestrator.heartbeat import heartbeat_loop
from orchestrator.hostconfig import ConfigError
from orchestrator.liveness import run_checker
from orchestrator.pauses import Outage, pause, until_stopped
from orchestrator.settings import Settings
from orchestrator.version import VERSION
from workflows.agent_job import AgentJobRun
from workflows.host_ping import HostPing

log = structlog.get_logger("bigeye.orchestrator")

SHUTDOWN_GRACE = timedelta(seconds=3)
WORKERS_STOP_SECONDS = 5.0
EXIT_DEADLINE_SECONDS = 9.0
HEARTBEAT_THROTTLE = timedelta(seconds=2)
CONTROL_ACTIVITY_SLOTS = 64
SIGNAL_TIMEOUT = timedelta(seconds=5)
DEFAULT_STOP_GRACE = 10


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
            activities=[acts.resolve_job, acts.stop_container, acts.finish_run, host.host_status],
            max_concurrent_activities=CONTROL_ACTIVITY_SLOTS,
            **common,  # type: ignore[arg-type]
        ),
        Worker(
            client,
            task_queue=launch_queue(task_queue(settings.host_id)),
            activities=[acts.ensure_image, acts.launch_container],
            max_concurrent_activities=max(2 * slots, 16),
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


def slot_waker(client: Client) -> Wake:
    """Tells a waiting run that a slot is held for it; False when the run is gone."""

    async def wake(waiter: Waiter) -> bool:
        handle = client.get_workflow_handle(waiter.workflow_id, run_id=waiter.workflow_run_id)
        try:
            await handle.signal(SLOT_SIGNAL, rpc_timeout=SIGNAL_TIMEOUT)
        except Exception:
            return False
        return True

    return wake


def stop_grace_of(settings: Settings) -> Callable[[str], int]:
    """An orphan's stop grace: its agent's `stop_grace_seconds`, read when it is swept."""

    def grace(agent: str) -> int:
        try:
            config = settings.load_host().agents.get(agent)
        except ConfigError:
            config = None
        return config.stop_grace_seconds if config is not None else DEFAULT_STOP_GRACE

    return grace


async def sweep_loop(sweeper: Sweeper, every: float, stop: asyncio.Event) -> None:
    """Every pass marks new orphans and removes the ones marked at least a grace ago."""
    outage = Outage(log, "orphan sweep failed; retrying", "orphan sweep works again")
    while not stop.is_set():
        try:
            await sweeper.sweep()
        except Exception as exc:  # a failed pass is retried at the next one
            outage.failed(describe(exc), every)
        else:
            outage.succeeded()
        await pause(stop, every)


def exit_deadline(seconds: float) -> threading.Timer:
    """A backstop: whatever is stuck (a frozen frontend, a wedged engine), the process exits."""

    def leave() -> None:
        log.warning("shutdown overran its deadline; exiting now", deadline_seconds=seconds)
        sys.stdout.flush()
        os._exit(0)

    timer = threading.Timer(seconds, leave)
    timer.daemon = True
    return timer


async def run_daemon(settings: Settings) -> int:
    """The daemon's start-up order: settings (done) → Temporal → Docker → reconcile → poll."""
    health = HealthState(sdk_metrics_url=None)
    sdk_metrics = free_loopback_address()
    health.sdk_metrics_url = f"http://{sdk_metrics}/metrics"
    health_servers = await serve_health(settings.health_addr, health, settings.metrics_addr)
    metrics.SLOTS_MAX.set(settings.max_concurrent_jobs)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    deadline = exit_deadline(EXIT_DEADLINE_SECONDS)

    def on_signal() -> None:
        if not stop.is_set():
            stop.set()
            deadline.start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)

    log.info("starting", version=VERSION, temporal=settings.temporal_address)
    client = await _until_connected(settings, stop, sdk_metrics)
    if client is None:
        await stop_health(health_servers)
        return 0
    docker = connect_docker(settings.docker_host)
    try:
        version = await _until_docker(docker, stop)
        if version is None:
            return 0
        health.docker_version, health.docker_ok = version, True
        gate = SlotGate(
            docker, settings.host_id, settings.max_concurrent_jobs, wake=slot_waker(client)
        )
        sweeper = Sweeper(
            docker,
            settings.host_id,
            run_checker(client),
            settings.orphan_grace_seconds,
            stop_grace=stop_grace_of(settings),
            on_removed=gate.released,
        )
        # Reconcile before polling: open runs' containers are left to their activities (which
        # adopt them); the others are marked for sweeping.
        try:
            await sweeper.sweep()
        except Exception as exc:
            log.warning("start-up sweep failed; the next pass retries", error=describe(exc))
        acts = JobActivities(settings, docker, gate, Puller(docker))
        host = HostActivities(settings, docker, gate, lambda: health.polling)
        workers = build_workers(client, settings, acts, host)
        tasks = [asyncio.create_task(w.run()) for w in workers]
        health.polling = True
        metrics.RUNS_QUEUED.set_function(lambda: gate.waiting)

        def on_beat(delivered: bool, status: HostStatus | None) -> None:
            health.heartbeat_ok = delivered
            if status is not None:
                health.docker_ok = status.docker.reachable
                metrics.SLOTS_USED.set(status.worker.slots_used)

        beating = asyncio.create_task(
            heartbeat_loop(client, host, settings.heartbeat_seconds, stop, on_beat),
            name="heartbeat",
        )
        sweeping = asyncio.create_task(
            _sweep_after(sweeper, settings.sweep_seconds, stop), name="orphan sweep"
        )
        for loop_task in (beating, sweeping):
            loop_task.add_done_callback(_report_unexpected_end)
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
        on_signal()
        for task in (beating, sweeping):
            task.cancel()
        try:
            async with asyncio.timeout(WORKERS_STOP_SECONDS):
                await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
        except TimeoutError:
            log.warning("workers did not stop in time; leaving them", seconds=WORKERS_STOP_SECONDS)
        await asyncio.wait([beating, sweeping], timeout=1.0)
        stopped.cancel()
        return 1 if failed else 0
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await docker.close()
        await stop_health(health_servers)


def _report_unexpected_end(task: asyncio.Task[None]) -> None:
    """A background loop must only end at shutdown; say so loudly if one does not."""
    error = None if task.cancelled() else task.exception()
    if error is not None:
        log.error("a background loop stopped", loop=task.get_name(), error=describe(error))


async def _sweep_after(sweeper: Sweeper, every: float, stop: asyncio.Event) -> None:
    await pause(stop, every)  # the start-up sweep was the first pass
    await sweep_loop(sweeper, every, stop)


async def _until_connected(
    settings: Settings, stop: asyncio.Event, sdk_metrics: str | None = None
) -> Client | None:
    runtime = make_runtime(sdk_metrics)

    async def attempt() -> Client:
        client = await connect(settings, runtime)
        log.info("connected to Temporal", namespace=settings.namespace)
        return client

    outage = Outage(log, "cannot connect to Temporal; retrying", "Temporal reachable again")
    return await until_stopped(
        attempt,
        outage,
        lambda exc: str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__,
        stop,
        retry_on=(RuntimeError,),
    )


async def _until_docker(docker: aiodocker.Docker, stop: asyncio.Event) -> str | None:
    async def attempt() -> str:
        version = str((await docker.version()).get("Version"))
        log.info("connected to Docker", version=version)
        return version

    outage = Outage(log, "cannot reach Docker; retrying", "Docker reachable again")
    return await until_stopped(attempt, outage, describe, stop)
