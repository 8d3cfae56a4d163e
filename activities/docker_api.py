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
    if isinstance(exc, aiodocker.DockerError):
        return f"Docker engine answered {exc.status}: {exc.message}"
    if isinstance(exc, aiohttp.ClientConnectionError | OSError):
        where = docker_url() or "the local socket /var/run/docker.sock"
        return f"cannot reach the Docker engine at {where} ({exc}): start Docker or fix DOCKER_HOST"
    return f"{type(exc).__name__}: {exc}"
