"""The host heartbeat: `HostStatus` to Bigeye every 30 s by signal-with-start.

A failed heartbeat is retried at the next tick; it is never fatal. The log says when the first
one is delivered, when they start failing and when they are delivered again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import structlog
from temporalio.client import Client

from activities.hoststatus import HostActivities
from orchestrator import metrics
from orchestrator.contract import (
    CONTROL_PLANE_TASK_QUEUE,
    HEARTBEAT_SIGNAL,
    HEARTBEAT_WORKFLOW_TYPE,
    HeartbeatStart,
    HostStatus,
    heartbeat_workflow_id,
)
from orchestrator.pauses import Outage, pause

log = structlog.get_logger("bigeye.orchestrator.heartbeat")
RPC_TIMEOUT = timedelta(seconds=10)  # a frozen frontend must not hold the loop (or a shutdown)


async def send_heartbeat(
    client: Client, status: HostStatus, deadline: timedelta = RPC_TIMEOUT
) -> None:
    await client.start_workflow(
        HEARTBEAT_WORKFLOW_TYPE,
        HeartbeatStart(host_id=status.host_id).model_dump(mode="json"),
        id=heartbeat_workflow_id(status.host_id),
        task_queue=CONTROL_PLANE_TASK_QUEUE,
        start_signal=HEARTBEAT_SIGNAL,
        start_signal_args=[status.model_dump(mode="json")],
        rpc_timeout=deadline,
    )


Beat = Callable[[bool, HostStatus | None], None]  # (delivered, what was sent)


def first_line(exc: BaseException) -> str:
    """An error as one short line (a timeout's text is empty: its type names it)."""
    lines = str(exc).splitlines()
    return lines[0][:300] if lines and lines[0].strip() else type(exc).__name__


async def heartbeat_loop(
    client: Client,
    host: HostActivities,
    every: float,
    stop: asyncio.Event,
    on_beat: Beat = lambda delivered, status: None,
) -> None:
    outage = Outage(log, "heartbeat failed; retrying", "heartbeat delivered again")
    delivered = False
    # a beat that cannot get through says so before the next one is due
    timeout = min(RPC_TIMEOUT, timedelta(seconds=max(every, 1.0)))
    while not stop.is_set():
        status: HostStatus | None = None
        try:
            status = await host.collect()
            # the SDK retries a call it cannot place; a beat must not outlast its interval
            async with asyncio.timeout(timeout.total_seconds()):
                await send_heartbeat(client, status, timeout)
        except Exception as exc:  # retried at the next tick
            metrics.HEARTBEATS.labels("failed").inc()
            outage.failed(first_line(exc), every)
            on_beat(False, status)
        else:
            metrics.HEARTBEATS.labels("delivered").inc()
            outage.succeeded()
            on_beat(True, status)
            if not delivered:
                log.info("heartbeat delivered", every_seconds=every)
                delivered = True
        await pause(stop, every)
