"""What the host tells Bigeye about itself: the `HostStatus` of the heartbeat and of `HostPing`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import aiodocker
from temporalio import activity

from activities.slots import SlotGate
from orchestrator.contract import LABEL_RUN_ID, DockerStatus, HostStatus, WorkerStatus
from orchestrator.hostconfig import ConfigError
from orchestrator.settings import Settings
from orchestrator.version import VERSION

DOCKER_TIMEOUT_SECONDS = 5.0  # a wedged engine is reported as unreachable, not waited for


class HostActivities:
    def __init__(
        self,
        settings: Settings,
        docker: aiodocker.Docker,
        gate: SlotGate,
        polling: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.docker = docker
        self.gate = gate
        self.polling = polling

    async def collect(self) -> HostStatus:
        try:
            agents = sorted(self.settings.load_host().agents)
        except ConfigError:
            agents = []
        reachable, version, running = False, None, []
        try:
            async with asyncio.timeout(DOCKER_TIMEOUT_SECONDS):
                version = str((await self.docker.version()).get("Version"))
                active = await self.gate.used()
            running = sorted(str((c.get("Labels") or {}).get(LABEL_RUN_ID)) for c in active)
            reachable = True
        except Exception:  # an unreachable engine is reported, never fatal
            reachable = False
        return HostStatus(
            host_id=self.settings.host_id,
            sent_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            orchestrator_version=VERSION,
            build_id=VERSION,
            managed_agents=agents,
            running_runs=running,
            docker=DockerStatus(reachable=reachable, version=version),
            worker=WorkerStatus(
                polling=self.polling(),
                slots_used=len(running),
                slots_max=self.settings.max_concurrent_jobs,
            ),
        )

    @activity.defn(name="host_status")
    async def host_status(self) -> HostStatus:
        return await self.collect()
