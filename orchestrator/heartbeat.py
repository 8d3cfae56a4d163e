"""The host heartbeat: `HostStatus` to Bigeye every 30 s by signal-with-start.

A failed heartbeat is retried at the next tick; it is never fatal. The log says when the first
one is delivered, when they start failing and when they are delivered again.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog
from temporalio.client import Client

from activities.hoststatus import HostActivities
from orchestrator.contract import (
    CONTROL_PLANE_TASK_QUEUE,
    HEARTBEAT_SIGNAL,
    HEARTBEAT_WORKFLOW_TYPE,
    HeartbeatStart,
    heartbeat_workflow_id,
)
from orchestrator.pauses import Outage, pause

log = structlog.get_logger("bigeye.orchestrator.heartbeat")
RPC_TIMEOUT = timedelta(seconds=10)  # a frozen frontend must not hold the loop (or a shutdown)


async def send_heartbeat(client: Client, host: HostActivities) -> None:
    status = await host.collect()
    await client.start_workflow(
        HEARTBEAT_WORKFLOW_TYPE,
        HeartbeatStart(host_id=status.host_id).model_dump(mode="json"),
        id=heartbeat_workflow_id(status.host_id),
        task_queue=CONTROL_PLANE_TASK_QUEUE,
        start_signal=HEARTBEAT_SIGNAL,
        start_signal_args=[status.model_dump(mode="json")],
        rpc_timeout=RPC_TIMEOUT,
    )


async def heartbeat_loop(
    client: Client, host: HostActivities, every: float, stop: asyncio.Event
) -> None:
    outage = Outage(log, "heartbeat failed; retrying", "heartbeat delivered again")
    delivered = False
    while not stop.is_set():
        try:
            await send_heartbeat(client, host)
        except Exception as exc:  # retried at the next tick
            outage.failed(str(exc).splitlines()[0][:300] or type(exc).__name__, every)
        else:
            outage.succeeded()
            if not delivered:
                log.info("heartbeat delivered", every_seconds=every)
                delivered = True
        await pause(stop, every)
