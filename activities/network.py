"""The job network `bigeye-jobs`: created by the orchestrator when missing."""

from __future__ import annotations

import aiodocker

from activities.docker_api import is_conflict, is_not_found
from orchestrator.contract import JOB_NETWORK, LABEL_MANAGED


async def ensure_job_network(docker: aiodocker.Docker) -> None:
    try:
        await docker.networks.get(JOB_NETWORK)
        return
    except aiodocker.DockerError as exc:
        if not is_not_found(exc):
            raise
    try:
        await docker.networks.create(
            {
                "Name": JOB_NETWORK,
                "Driver": "bridge",
                "CheckDuplicate": True,
                "Labels": {LABEL_MANAGED: "true"},
            }
        )
    except aiodocker.DockerError as exc:
        if not is_conflict(exc):  # another orchestrator on this engine created it first
            raise
