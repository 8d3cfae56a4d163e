"""Job containers: idempotent create (adopt by name), start, stop with grace, remove, logs.

Every call on an existing container first checks that it carries the managed label and this
host's id: the orchestrator never touches a container it did not create.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import aiodocker
import aiohttp

from activities.docker_api import is_conflict, is_not_found
from activities.logstream import Entry, entries, tail_lines
from orchestrator.contract import LABEL_HOST_ID, LABEL_MANAGED, LABEL_RUN_ID, LOG_TAIL_LINES


class NotManagedError(RuntimeError):
    """A container with a job's name that this orchestrator did not create."""


def is_ours(info: dict[str, Any], host_id: str, run_id: str | None = None) -> bool:
    labels = (info.get("Config") or {}).get("Labels") or info.get("Labels") or {}
    if labels.get(LABEL_MANAGED) != "true" or labels.get(LABEL_HOST_ID) != host_id:
        return False
    return run_id is None or labels.get(LABEL_RUN_ID) == run_id


async def inspect(docker: aiodocker.Docker, ref: str) -> dict[str, Any] | None:
    try:
        data = await docker._query_json(f"containers/{ref}/json", method="GET")
    except aiodocker.DockerError as exc:
        if is_not_found(exc):
            return None
        raise
    return dict(data)


async def inspect_ours(
    docker: aiodocker.Docker, ref: str, host_id: str, run_id: str | None = None
) -> dict[str, Any] | None:
    info = await inspect(docker, ref)
    if info is None:
        return None
    if not is_ours(info, host_id, run_id):
        raise NotManagedError(
            f"container {ref} exists but is not managed by this orchestrator for host {host_id}"
        )
    return info


class ImageMissing(RuntimeError):
    """The engine does not have the image a container is to be created from."""


async def create(docker: aiodocker.Docker, name: str, body: dict[str, Any]) -> str | None:
    """The new container's id; None when the name is taken (the run was already launched)."""
    try:
        data = await docker._query_json(
            "containers/create",
            method="POST",
            params={"name": name},
            data=json.dumps(body),
        )
    except aiodocker.DockerError as exc:
        if is_conflict(exc):
            return None
        if is_not_found(exc) and "no such image" in str(exc.message).lower():
            raise ImageMissing(str(exc.message)) from None
        raise
    return str(data["Id"])


async def create_or_adopt(
    docker: aiodocker.Docker, name: str, body: dict[str, Any], host_id: str, run_id: str
) -> tuple[dict[str, Any], bool]:
    """(inspect data, created) — a name conflict means the run was already launched."""
    created_id = await create(docker, name, body)
    info = await inspect_ours(docker, created_id or name, host_id, run_id)
    if info is None:
        raise RuntimeError(f"container {name} vanished right after it was created")
    return info, created_id is not None


async def start(docker: aiodocker.Docker, container_id: str) -> None:
    try:
        async with docker._query(f"containers/{container_id}/start", method="POST"):
            pass
    except aiodocker.DockerError as exc:
        if exc.status != 304:  # already started: an adopted container
            raise


async def stop(docker: aiodocker.Docker, container_id: str, grace_seconds: int) -> None:
    """SIGTERM, `grace_seconds`, then SIGKILL — done by the engine."""
    timeout = aiohttp.ClientTimeout(total=grace_seconds + 30, connect=10)
    try:
        async with docker._query(
            f"containers/{container_id}/stop",
            method="POST",
            params={"t": grace_seconds},
            timeout=timeout,
        ):
            pass
    except aiodocker.DockerError as exc:
        if exc.status not in (304, 404):
            raise


async def remove(docker: aiodocker.Docker, container_id: str) -> None:
    try:
        async with docker._query(
            f"containers/{container_id}", method="DELETE", params={"force": "true", "v": "true"}
        ):
            pass
    except aiodocker.DockerError as exc:
        if exc.status != 404 and not (exc.status == 409 and "in progress" in exc.message):
            raise


async def list_managed(
    docker: aiodocker.Docker, host_id: str, *, all_states: bool = True
) -> list[dict[str, Any]]:
    filters = {"label": [f"{LABEL_MANAGED}=true", f"{LABEL_HOST_ID}={host_id}"]}
    data = await docker._query_json(
        "containers/json",
        method="GET",
        params={"all": "true" if all_states else "false", "filters": json.dumps(filters)},
    )
    return [dict(item) for item in data]


async def log_entries(
    docker: aiodocker.Docker,
    container_id: str,
    *,
    since: str | None = None,
    follow: bool,
    tail: int | None = None,
    timestamps: bool = True,
) -> AsyncGenerator[Entry, None]:
    """A container's stdout and stderr entries; ends when the engine (or a proxy) ends it."""
    params: dict[str, Any] = {
        "stdout": "true",
        "stderr": "true",
        "follow": "true" if follow else "false",
        "timestamps": "true" if timestamps else "false",
    }
    if since is not None:
        params["since"] = since
    if tail is not None:
        params["tail"] = str(tail)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None, connect=10)
    async with docker._query(
        f"containers/{container_id}/logs", method="GET", params=params, timeout=timeout
    ) as response:
        try:
            async for entry in entries(response.content.iter_any(), timestamps=timestamps):
                yield entry
        finally:
            # aiodocker leaves the response open: a followed stream given up on would keep
            # its connection, and the engine its reader, until garbage collection.
            response.close()


TAIL_FIRST_READ = 4 * LOG_TAIL_LINES


async def read_tail(
    docker: aiodocker.Docker, container_id: str, count: int = LOG_TAIL_LINES
) -> list[str]:
    """The exact last `count` lines: Docker's `tail` counts entries, and a long line is many."""
    want = TAIL_FIRST_READ
    while True:
        read = [
            entry
            async for entry in log_entries(
                docker, container_id, follow=False, tail=want, timestamps=False
            )
        ]
        lines = tail_lines(read, count, whole_log=len(read) < want)
        if lines is not None:
            return lines
        want *= 8
