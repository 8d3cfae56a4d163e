"""The end of a job container: stop it (SIGTERM, grace, SIGKILL) and read what it left.

`finalize` is the one reader of a container's ending (exit code, OOM flag, times, exact log
tail); watch, stop and the orphan sweeper all use it, and none of them removes a container:
removal comes after the ending is recorded, by whoever owns the record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiodocker

from activities import containers
from orchestrator.contract import ContainerEnd

ENDED_STATES = frozenset({"exited", "dead", "created"})


def docker_time(value: str | None) -> str | None:
    if not value or value.startswith("0001-01-01"):
        return None
    return value


def has_ended(info: dict[str, Any]) -> bool:
    return (info.get("State") or {}).get("Status") in ENDED_STATES


def ending_of(info: dict[str, Any], log_tail: list[str]) -> ContainerEnd:
    state = info.get("State") or {}
    status = str(state.get("Status"))
    return ContainerEnd(
        container_id=str(info["Id"]),
        state=status,
        exit_code=None if status == "created" else state.get("ExitCode"),
        oom_killed=bool(state.get("OOMKilled")),
        started_at=docker_time(state.get("StartedAt")),
        finished_at=docker_time(state.get("FinishedAt")),
        log_tail=log_tail,
    )


async def finalize(
    docker: aiodocker.Docker, ref: str, host_id: str, run_id: str | None = None
) -> ContainerEnd | None:
    """The ending of a container that has stopped; None when there is no such container."""
    info = await containers.inspect_ours(docker, ref, host_id, run_id)
    if info is None:
        return None
    if not has_ended(info):
        raise RuntimeError(f"container {ref} is still {info['State'].get('Status')}")
    return ending_of(info, await containers.read_tail(docker, info["Id"]))


async def stop_and_drain(
    docker: aiodocker.Docker,
    container_id: str,
    grace_seconds: int,
    drain: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Stop with the grace while `drain()` keeps forwarding what the job prints meanwhile.

    `drain` follows the log stream, which the engine ends when the container exits.
    """
    stopping = asyncio.create_task(containers.stop(docker, container_id, grace_seconds))
    try:
        if drain is not None:
            async with asyncio.timeout(grace_seconds + 30):
                await drain()
    except asyncio.CancelledError:
        stopping.cancel()
        raise
    except Exception:  # forwarding is best effort here: the stop is what matters
        pass
    await stopping
