"""Images: pull only when missing, with the registry's credentials, every stream item checked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiodocker
from pydantic import BaseModel

from activities.docker_api import is_not_found
from orchestrator.hostconfig import RegistryConfig


class ImagePullError(RuntimeError):
    pass


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


def registry_auth(
    image: str, registry: RegistryConfig | None, host_dir: Path
) -> dict[str, str] | None:
    """Credentials from the `registry:` section, used only for images on that registry."""
    if registry is None or registry.username is None or registry.password_file is None:
        return None
    if not image.startswith(registry.server.rstrip("/") + "/"):
        return None
    password = (host_dir / registry.password_file).read_text(encoding="utf-8").strip()
    return {
        "username": registry.username,
        "password": password,
        "serveraddress": registry.server,
    }


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


async def ensure_image(
    docker: aiodocker.Docker,
    image: str,
    auth: dict[str, str] | None,
    on_progress: Callable[[str], None],
) -> ImageInfo:
    """The image's identity; pulls it first only when the engine does not have it."""
    present = await inspect_image(docker, image)
    if present is not None:
        return present
    repository, tag = split_reference(image)
    on_progress(f"pulling {image}")
    stream = docker.images.pull(repository, tag=tag, auth=auth, stream=True)
    try:
        async for item in stream:
            # An engine reports a failed pull inside a 200 stream, not as an HTTP error.
            if isinstance(item, dict) and (item.get("error") or item.get("errorDetail")):
                detail = item.get("error") or item["errorDetail"].get("message")
                raise ImagePullError(f"pull of {image} failed: {detail}")
            if isinstance(item, dict) and item.get("status"):
                on_progress(str(item["status"]))
    except aiodocker.DockerError as exc:
        raise ImagePullError(f"pull of {image} failed: {exc.message}") from exc
    pulled = await inspect_image(docker, image)
    if pulled is None:
        raise ImagePullError(f"pull of {image} ended but the engine does not have the image")
    return pulled
