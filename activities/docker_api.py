"""The Docker connection: one aiodocker client per process, errors made readable and classified."""

from __future__ import annotations

import os

import aiodocker
import aiohttp
from temporalio.exceptions import ApplicationError

# Short calls must not hang on a wedged engine or proxy; streams set their own timeouts.
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60, connect=10)
# Error types an activity fails with; the workflow's retry policies name them.
DOCKER_REJECTED = "DockerRejected"  # the engine refused the request: retrying cannot help
DOCKER_UNAVAILABLE = "DockerUnavailable"  # the engine did not answer, or failed: retry


def docker_url(docker_host: str | None = None) -> str | None:
    return docker_host or os.environ.get("DOCKER_HOST") or None


def connect(docker_host: str | None = None) -> aiodocker.Docker:
    return aiodocker.Docker(url=docker_url(docker_host), timeout=REQUEST_TIMEOUT)


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, aiodocker.DockerError) and exc.status == 404


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, aiodocker.DockerError) and exc.status == 409


def is_unreachable(exc: BaseException) -> bool:
    """The engine (or the proxy in front of it) did not answer at all."""
    return isinstance(exc, aiohttp.ClientError | OSError | TimeoutError) or (
        # aiodocker reports a connection it could not make as status 900
        isinstance(exc, aiodocker.DockerError) and exc.status == 900
    )


def is_refusal(exc: BaseException) -> bool:
    """The engine answered no for a reason that a retry cannot change (4xx)."""
    return (
        isinstance(exc, aiodocker.DockerError)
        and 400 <= exc.status < 500
        and not is_unreachable(exc)
    )


def describe(exc: BaseException) -> str:
    """One line for a failed Docker call, with the fix when we know it."""
    if is_unreachable(exc):
        where = docker_url() or "the local socket /var/run/docker.sock"
        detail = str(exc) or type(exc).__name__
        return (
            f"cannot reach the Docker engine at {where} ({detail}): start Docker or fix DOCKER_HOST"
        )
    if isinstance(exc, aiodocker.DockerError):
        return f"Docker engine answered {exc.status}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def activity_error(exc: BaseException, doing: str) -> ApplicationError:
    """The failure an activity reports: refusals end the run, everything else is retried."""
    if is_refusal(exc):
        return ApplicationError(
            f"{doing}: {describe(exc)}", type=DOCKER_REJECTED, non_retryable=True
        )
    return ApplicationError(f"{doing}: {describe(exc)}", type=DOCKER_UNAVAILABLE)
