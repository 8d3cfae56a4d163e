"""The Docker connection: one aiodocker client per process, errors made readable."""

from __future__ import annotations

import os

import aiodocker
import aiohttp

# Short calls must not hang on a wedged engine or proxy; streams set their own timeouts.
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60, connect=10)


def docker_url(docker_host: str | None = None) -> str | None:
    return docker_host or os.environ.get("DOCKER_HOST") or None


def connect(docker_host: str | None = None) -> aiodocker.Docker:
    return aiodocker.Docker(url=docker_url(docker_host), timeout=REQUEST_TIMEOUT)


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, aiodocker.DockerError) and exc.status == 404


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, aiodocker.DockerError) and exc.status == 409


def describe(exc: BaseException) -> str:
    """One line for a failed Docker call, with the fix when we know it."""
    unreachable = isinstance(exc, aiohttp.ClientConnectionError | OSError) or (
        # aiodocker reports a connection it could not make as status 900
        isinstance(exc, aiodocker.DockerError) and exc.status == 900
    )
    if isinstance(exc, aiodocker.DockerError) and not unreachable:
        return f"Docker engine answered {exc.status}: {exc.message}"
    if unreachable:
        where = docker_url() or "the local socket /var/run/docker.sock"
        return f"cannot reach the Docker engine at {where} ({exc}): start Docker or fix DOCKER_HOST"
    return f"{type(exc).__name__}: {exc}"
