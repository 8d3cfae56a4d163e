"""The host heartbeat: `HostStatus` to Bigeye every 30 s by signal-with-start.

A failed heartbeat is logged and retried at the next tick; it is never fatal.
"""

from __future__ import annotations

import asyncio

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
from orchestrator.pauses import pause

log = structlog.get_logger("bigeye.orchestrator.heartbeat")


async def send_heartbeat(client: Client, host: HostActivities) -> None:
    status = await host.collect()
    await client.start_workflow(
        HEARTBEAT_WORKFLOW_TYPE,
        HeartbeatStart(host_id=status.host_id).model_dump(mode="json"),
        id=heartbeat_workflow_id(status.host_id),
        task_queue=CONTROL_PLANE_TASK_QUEUE,
        start_signal=HEARTBEAT_SIGNAL,
        start_signal_args=[status.model_dump(mode="json")],
    )


async def heartbeat_loop(
    client: Client, host: HostActivities, every: float, stop: asyncio.Event
) -> None:
    failures = 0
    while not stop.is_set():
        try:
            await send_heartbeat(client, host)
            if failures:
                log.info("heartbeat delivered again", after_failures=failures)
            failures = 0
        except Exception as exc:  # logged and retried at the next tick
            failures += 1
            log.warning(
                "heartbeat failed; retrying",
                error=str(exc).splitlines()[0][:300],
                failures=failures,
            )
        await pause(stop, every)
