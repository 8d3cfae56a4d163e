"""Images: pull only when missing, with the registry's credentials, every stream item checked.

Runs that want the same missing image share one pull: a second pull would only wait on the
engine's, and a run that is canceled stops waiting without stopping the others' pull.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiodocker
from pydantic import BaseModel

from activities.agents import RegistryLogin
from activities.docker_api import is_not_found
from orchestrator import metrics

PULL_TIMEOUT_SECONDS = 30 * 60
# What the engine says when the image is not there to pull or may not be pulled: retrying
# cannot change the answer.
_PERMANENT = (
    "not found",
    "manifest unknown",
    "unauthorized",
    "denied",
    "invalid reference format",
    "repository name must",
    "does not exist",
)


class ImagePullError(RuntimeError):
    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


def pull_failed(image: str, detail: str) -> ImagePullError:
    permanent = any(marker in detail.lower() for marker in _PERMANENT)
    return ImagePullError(f"pull of {image} failed: {detail}", permanent=permanent)


class ImageInfo(BaseModel):
    image: str
    image_id: str
    image_digest: str | None


def split_reference(image: str) -> tuple[str, str | None]:
    """(repository, tag) for `docker.io/org/name:tag`; the tag is None for a digest."""
    if "@" in image:
        return image, None
    name, sep, tag = image.rpartition(":")
    if sep and "/" not in tag:
        return name, tag
    return image, "latest"


def registry_auth(login: RegistryLogin | None) -> dict[str, str] | None:
    if login is None:
        return None
    password = Path(login.password_file).read_text(encoding="utf-8").strip()
    return {"username": login.username, "password": password, "serveraddress": login.server}


def _digest(info: dict[str, Any], image: str) -> str | None:
    digests = info.get("RepoDigests") or []
    repository = split_reference(image)[0].split("@")[0]
    short = repository.removeprefix("docker.io/").removeprefix("library/")
    for digest in digests:
        name = digest.split("@")[0]
        if name in (repository, short) or name.endswith("/" + short):
            return str(digest)
    return str(digests[0]) if digests else None


async def inspect_image(docker: aiodocker.Docker, image: str) -> ImageInfo | None:
    try:
        info = await docker.images.inspect(image)
    except aiodocker.DockerError as exc:
        if is_not_found(exc):
            return None
        raise
    return ImageInfo(image=image, image_id=info["Id"], image_digest=_digest(info, image))


async def pull(
    docker: aiodocker.Docker,
    image: str,
    auth: dict[str, str] | None,
    on_progress: Callable[[str], None],
) -> None:
    repository, tag = split_reference(image)
    on_progress(f"pulling {image}")
    stream = docker.images.pull(repository, tag=tag, auth=auth, stream=True)
    began = time.monotonic()
    try:
        async with asyncio.timeout(PULL_TIMEOUT_SECONDS):
            async for item in stream:
                # An engine reports a failed pull inside a 200 stream, not as an HTTP error.
                if isinstance(item, dict) and (item.get("error") or item.get("errorDetail")):
                    detail = item.get("error") or item["errorDetail"].get("message")
                    raise pull_failed(image, str(detail))
                if isinstance(item, dict) and item.get("status"):
                    on_progress(str(item["status"]))
    except aiodocker.DockerError as exc:
        raise pull_failed(image, exc.message) from exc
    except TimeoutError:
        metrics.IMAGE_PULLS.labels("failed").inc()
        raise ImagePullError(
            f"pull of {image} did not finish in {PULL_TIMEOUT_SECONDS} s", permanent=False
        ) from None
    except ImagePullError:
        metrics.IMAGE_PULLS.labels("failed").inc()
        raise
    metrics.IMAGE_PULLS.labels("pulled").inc()
    metrics.IMAGE_PULL_DURATION.observe(time.monotonic() - began)


class Puller:
    """One pull per missing image at a time, shared by every run that needs it."""

    def __init__(self, docker: aiodocker.Docker) -> None:
        self.docker = docker
        self._pulls: dict[str, asyncio.Task[None]] = {}

    async def present(self, image: str) -> ImageInfo | None:
        """The image's identity when the engine has it; never pulls."""
        return await inspect_image(self.docker, image)

    async def ensure(
        self, image: str, auth: dict[str, str] | None, on_progress: Callable[[str], None]
    ) -> ImageInfo:
        """The image's identity; pulls it first only when the engine does not have it."""
        present = await inspect_image(self.docker, image)
        if present is not None:
            return present
        task = self._pulls.get(image)
        if task is None:
            task = asyncio.create_task(pull(self.docker, image, auth, on_progress))
            self._pulls[image] = task

            def done(finished: asyncio.Task[None]) -> None:
                self._pulls.pop(image, None)
                if not finished.cancelled():
                    finished.exception()  # retrieved here too: every waiter may be gone

            task.add_done_callback(done)
        await asyncio.shield(task)
        pulled = await inspect_image(self.docker, image)
        if pulled is None:
            raise ImagePullError(
                f"pull of {image} ended but the engine does not have the image", permanent=True
            )
        return pulled
