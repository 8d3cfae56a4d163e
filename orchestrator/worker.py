"""Worker assembly and the daemon's life: connect, reconcile, poll, shut down on SIGTERM.

Two workers share one client. The host queue (`agent-orchestrator.<host_id>`) carries `HostPing`
and the first task of every job run, which moves the run to this release's queue
(`…@<version>`, orchestrator/releases.py). That queue carries the runs and all their activities:
each is scheduled on the run's own queue so that it comes back with the workflow task that
scheduled it (eager activity execution saves a round trip to the server per activity). Its pool
holds the control activities' room (a stop) beside four job activities a slot. A drainer runs
the release queue only. How many job containers exist at once is bounded by the `SlotGate`
(BIGEYE_MAX_CONCURRENT_JOBS, and each agent's `max_concurrent`), never by a worker slot: a run
that waits for a slot waits in its workflow.

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
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import aiodocker
import structlog
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.docker_api import connect as connect_docker
from activities.docker_api import describe
from activities.hoststatus import HostActivities
from activities.images import Puller
from activities.runs import JobActivities, Report, ReportTo
from activities.slots import SlotGate, Waiter, Wake
from activities.sweeping import Sweeper
from orchestrator import metrics
from orchestrator.connection import connect, connect_error, runtime_with_metrics
from orchestrator.contract import (
    RUN_STATUS_SIGNAL,
    SLOT_SIGNAL,
    HostStatus,
    JobStatus,
    task_queue,
)
from orchestrator.health import HealthState, listening_at, serve_health, stop_health
from orchestrator.heartbeat import heartbeat_loop
from orchestrator.hostconfig import ConfigError
from orchestrator.liveness import run_checker
from orchestrator.memory import release_freed_memory
from orchestrator.pauses import Outage, pause, until_stopped
from orchestrator.releases import (
    DRAIN_SETTLE_SECONDS,
    DrainState,
    build_identity,
    open_runs,
    run_queue,
)
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
# A slot's job is one `run_job` (launch, then watch), and at times another run's launch attempt
# or a pull waits (a pull is shared by every run that waits for its image): cheap to hold, and
# the gate, not a worker slot, bounds the jobs. The rest of the pool keeps room for the control
# activities (a stop).
JOB_ACTIVITIES_A_SLOT = 4
SIGNAL_TIMEOUT = timedelta(seconds=5)
DEFAULT_STOP_GRACE = 10
DRAIN_LOOK_SECONDS = 5.0
DRAIN_INTERRUPTED = 75  # EX_TEMPFAIL: stopped with runs of this version possibly left
# The host queue only takes pings and moves each new run to the release queue, and the release
# queue's only remote control activity is a stop: a few pollers do, and at fleet scale every
# idle poller is a long poll the server holds open.
HOST_QUEUE_POLLS = 2
# The sandbox re-imports and recompiles the workflow module for every run it starts: a sixth of
# the daemon's CPU per job and ~10 ms per workflow task. Its checks still run where they catch
# something, in the unit tests' workers and every replay of a recorded history (both sandboxed).
RUNNER = UnsandboxedWorkflowRunner()


def build_workers(
    client: Client,
    settings: Settings,
    acts: JobActivities,
    host: HostActivities,
    drain: bool = False,
) -> list[Worker]:
    """This release's workers; a drainer's leave the host queue to the current release."""
    common = {
        "max_heartbeat_throttle_interval": HEARTBEAT_THROTTLE,
        "default_heartbeat_throttle_interval": HEARTBEAT_THROTTLE,
        "graceful_shutdown_timeout": SHUTDOWN_GRACE,
        "deployment_config": build_identity(VERSION),
        "workflow_runner": RUNNER,
    }
    slots = settings.max_concurrent_jobs
    runs = run_queue(settings.host_id, VERSION)
    workers = [
        Worker(
            client,
            task_queue=runs,
            workflows=[AgentJobRun],
            # every activity of a run is scheduled on the run's own queue and comes back with
            # the workflow task that schedules it (eager activity execution)
            activities=[*control_activities(acts), acts.run_job, acts.ensure_image],
            max_concurrent_activities=CONTROL_ACTIVITY_SLOTS
            + max(JOB_ACTIVITIES_A_SLOT * slots, 64),
            max_concurrent_activity_task_polls=HOST_QUEUE_POLLS,
            **common,  # type: ignore[arg-type]
        ),
    ]
    if not drain:
        workers.insert(0, host_queue_worker(client, settings.host_id, host, acts, **common))
    return workers


def control_activities(acts: JobActivities) -> list[Callable[..., Any]]:
    """What the worker running a job workflow runs itself: resolve and finish (as local
    activities) and the stop."""
    return [acts.resolve_job, acts.stop_container, acts.finish_run]


def host_queue_worker(
    client: Client,
    host_id: str,
    host: HostActivities,
    acts: JobActivities | None = None,
    **options: Any,
) -> Worker:
    """Pings, and the first task of every job run, which moves the run to this release's queue.
    A run canceled on arrival ends here instead: it resolves and stops (`acts`), never launches."""
    return Worker(
        client,
        task_queue=task_queue(host_id),
        workflows=[AgentJobRun, HostPing],
        activities=[host.host_status, *(control_activities(acts) if acts else [])],
        max_concurrent_workflow_task_polls=HOST_QUEUE_POLLS,
        max_concurrent_activity_task_polls=HOST_QUEUE_POLLS,
        max_concurrent_activities=CONTROL_ACTIVITY_SLOTS,
        **{"deployment_config": build_identity(VERSION), "workflow_runner": RUNNER, **options},
    )


async def signal_run(
    client: Client, workflow_id: str, run_id: str, signal: str, *args: Any
) -> Exception | None:
    """One signal to one run; what went wrong instead of raising (the run may have ended)."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    try:
        await handle.signal(signal, *args, rpc_timeout=SIGNAL_TIMEOUT)
    except Exception as exc:
        return exc
    return None


def slot_waker(client: Client) -> Wake:
    """Tells a waiting run that a slot is held for it; False when the run is gone."""

    async def wake(waiter: Waiter) -> bool:
        failed = await signal_run(client, waiter.workflow_id, waiter.workflow_run_id, SLOT_SIGNAL)
        return failed is None

    return wake


def status_reporter(client: Client) -> Report:
    """Tells a child's parent its phase; a run that has ended (or a Temporal away for longer
    than the timeout) only misses a phase it no longer shows, or that the child's next one
    replaces."""

    async def report(to: ReportTo, status: JobStatus) -> None:
        body = {**status.model_dump(mode="json"), "sequence": to.sequence}
        failed = await signal_run(client, to.workflow_id, to.run_id, RUN_STATUS_SIGNAL, body)
        if failed is not None:
            error = describe(failed)
            log.debug("run status not delivered", workflow_id=to.workflow_id, error=error)

    return report


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


async def run_daemon(settings: Settings, drain: bool = False) -> int:
    """The daemon's start-up order: settings (done) → Temporal → Docker → reconcile → poll.

    `drain`: a retired release finishing the runs on its release queue; no heartbeat, no
    sweeping, no new runs, and it exits once nothing of its version is left (see releases).
    """
    runtime, sdk_metrics = runtime_with_metrics()
    health = HealthState(sdk_metrics_url=f"http://{sdk_metrics}/metrics" if sdk_metrics else None)
    if sdk_metrics is None:
        log.warning("no free loopback port for the Temporal SDK's metrics; /metrics goes without")
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

    log.info(
        "starting",
        version=VERSION,
        temporal=settings.temporal_address,
        mode="drain" if drain else "run",
        health=listening_at(health_servers[0]),
        metrics=listening_at(health_servers[1]) if len(health_servers) > 1 else None,
    )
    client = await _until_connected(settings, stop, runtime)
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
        # adopt them); the others are marked for sweeping. A drainer leaves that to the daemon.
        if not drain:
            try:
                await sweeper.sweep()
            except Exception as exc:
                log.warning("start-up sweep failed; the next pass retries", error=describe(exc))
        acts = JobActivities(settings, docker, gate, Puller(docker), report=status_reporter(client))
        host = HostActivities(settings, docker, gate, lambda: health.polling)
        workers = build_workers(client, settings, acts, host, drain)
        tasks = [asyncio.create_task(w.run()) for w in workers]
        health.polling = True
        metrics.RUNS_QUEUED.set_function(lambda: gate.waiting)

        def on_beat(delivered: bool, status: HostStatus | None) -> None:
            release_freed_memory()
            health.heartbeat_ok = delivered
            if status is not None:
                health.docker_ok = status.docker.reachable
                metrics.SLOTS_USED.set(status.worker.slots_used)

        if drain:
            health.heartbeat_ok = True  # the current version's daemon reports the host
            background: list[asyncio.Task[Any]] = [
                asyncio.create_task(
                    drain_loop(client, settings.host_id, DRAIN_LOOK_SECONDS, stop), name="drain"
                )
            ]
        else:
            background = [
                asyncio.create_task(
                    heartbeat_loop(client, host, settings.heartbeat_seconds, stop, on_beat),
                    name="heartbeat",
                ),
                asyncio.create_task(
                    _sweep_after(sweeper, settings.sweep_seconds, stop), name="orphan sweep"
                ),
            ]
        for loop_task in background:
            loop_task.add_done_callback(_report_unexpected_end)
        log.info(
            "draining" if drain else "polling",
            task_queue=task_queue(settings.host_id),
            release_queue=run_queue(settings.host_id, VERSION),
            slots=settings.max_concurrent_jobs,
            version=VERSION,
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
        for task in background:
            task.cancel()
        try:
            async with asyncio.timeout(WORKERS_STOP_SECONDS):
                await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
        except TimeoutError:
            log.warning("workers did not stop in time; leaving them", seconds=WORKERS_STOP_SECONDS)
        await asyncio.wait(background, timeout=1.0)
        stopped.cancel()
        if failed:
            return 1
        drained = drain and any(
            t.done() and not t.cancelled() and t.exception() is None and t.result() is True
            for t in background
        )
        # A drainer stopped before it drained exits non-zero: its `on-failure` restart policy
        # then brings it back (after a reboot too) to finish the runs it still has.
        return DRAIN_INTERRUPTED if drain and not drained else 0
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await docker.close()
        await stop_health(health_servers)


async def drain_loop(
    client: Client,
    host_id: str,
    every: float,
    stop: asyncio.Event,
    version: str = VERSION,
    settle_seconds: float = DRAIN_SETTLE_SECONDS,
) -> bool:
    """Looks at what is left of `version`; stops the process when nothing is. True: drained."""
    outage = Outage(log, "cannot see what is left to drain; retrying", "drain check works again")
    state = DrainState(time.monotonic(), settle_seconds)
    reported: int | None = None
    while not stop.is_set():
        try:
            left = await open_runs(client, host_id, version)
        except Exception as exc:
            outage.failed(describe(exc), every)
        else:
            outage.succeeded()
            if left != reported:
                log.info("drain progress", open_runs=left)
                reported = left
            if state.observe(left, time.monotonic()):
                log.info("drained: no run of this version is open; exiting", version=version)
                stop.set()
                return True
        await pause(stop, every)
    return False


def _report_unexpected_end(task: asyncio.Task[None]) -> None:
    """A background loop must only end at shutdown; say so loudly if one does not."""
    error = None if task.cancelled() else task.exception()
    if error is not None:
        log.error("a background loop stopped", loop=task.get_name(), error=describe(error))


async def _sweep_after(sweeper: Sweeper, every: float, stop: asyncio.Event) -> None:
    await pause(stop, every)  # the start-up sweep was the first pass
    await sweep_loop(sweeper, every, stop)


async def _until_connected(
    settings: Settings, stop: asyncio.Event, runtime: Runtime
) -> Client | None:
    async def attempt() -> Client:
        client = await connect(settings, runtime)
        log.info("connected to Temporal", namespace=settings.namespace)
        return client

    outage = Outage(log, "cannot connect to Temporal; retrying", "Temporal reachable again")
    return await until_stopped(
        attempt,
        outage,
        connect_error,
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
