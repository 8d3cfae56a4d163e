"""A Docker registry (HTTP API v2) on loopback, owned by the test that starts it.

Integration tests must make the real engine pull without the internet: pulls that take as long
as a test wants (to cancel a job "while pulling"), pulls that never finish, pulls that succeed
with a known digest. The engine allows plain HTTP to 127.0.0.0/8 (after its HTTPS attempt fails),
so a small aiohttp server re-serving local images (exported with `docker save`) is enough.

What the engine does shapes what is served:
- It skips a pull whose config digest (the image id) it already has, and a layer whose compressed
  digest it once pulled from anywhere ("Already exists"). So `add_image(fresh=True)`, the default,
  serves a copy no engine has seen: a label in the config and, ahead of each gzipped layer, an
  empty gzip member naming a salt of this registry (the decompressed layers, so their diff ids,
  are unchanged). Each registry instance therefore gives one really downloading pull per image.
  `fresh=False` serves the image as it is: same image id, and the engine fetches the manifest only.
- It retries a blob download that breaks (the registry went away mid-body) for about 75 s, but a
  404 fails the pull at once: a blob request still stalled when the registry stops gets 404.
"""

from __future__ import annotations

import asyncio
import atexit
import gzip
import hashlib
import io
import json
import logging
import shutil
import subprocess
import tarfile
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self

from aiohttp import web

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
SALT_LABEL = "com.bigeye.test-registry.salt"
CHUNK = 64 * 1024


@dataclass(frozen=True)
class SavedImage:
    """A local image as `docker save` wrote it: its config and gzipped layers (digest, size)."""

    config: bytes
    layers: list[tuple[Path, str, int]]


@dataclass(frozen=True)
class _Blob:
    """Blob bytes: `head` followed by the file at `path`, if any."""

    head: bytes
    path: Path | None = None

    @property
    def size(self) -> int:
        return len(self.head) + (self.path.stat().st_size if self.path else 0)

    def read(self, pos: int, n: int) -> bytes:
        if pos < len(self.head) or self.path is None:
            return self.head[pos : pos + n]
        with self.path.open("rb") as file:
            file.seek(pos - len(self.head))
            return file.read(n)


_EXPORTS: dict[str, SavedImage] = {}  # by local image id, for the whole test session
_EXPORTS_LOCK = threading.Lock()
_LOG = logging.getLogger(__name__)
# The engine's HTTPS attempt on the plain HTTP port is expected: no error log for it.
_LOG.addFilter(lambda record: "HTTPS traffic" not in repr(record.exc_info))


def _sha256(*parts: bytes | Path) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, bytes):
            digest.update(part)
        else:
            with part.open("rb") as file:
                while chunk := file.read(1 << 20):
                    digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def _member(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    file = tar.extractfile(name)  # follows the symbolic links of the OCI layout
    assert file is not None, f"{name} is not a file in the saved image"
    return file


def convert_saved(archive: Path, into: Path) -> SavedImage:
    """Config and gzipped layers of the one image in a `docker save` archive.

    Both layouts carry `manifest.json` naming the config and layer files: `<id>.json` and
    `<id>/layer.tar` (Docker ≤ 24), `blobs/sha256/<hex>` (OCI layout, Docker ≥ 25).
    Uncompressed layers are gzipped; gzipped ones (containerd image store) are kept as they are.
    """
    layers = []
    with tarfile.open(archive) as tar:
        (entry,) = json.load(_member(tar, "manifest.json"))
        config = _member(tar, entry["Config"]).read()
        for index, name in enumerate(entry["Layers"]):
            path = into / f"layer-{index}.tar.gz"
            with _member(tar, name) as source, path.open("wb") as out:
                first = source.read(CHUNK)
                if first.startswith(b"\x1f\x8b"):
                    sink: io.BufferedIOBase = out
                else:
                    sink = gzip.GzipFile("", "wb", compresslevel=1, fileobj=out, mtime=0)
                with sink:
                    sink.write(first)
                    shutil.copyfileobj(source, sink, 1 << 20)
            layers.append((path, _sha256(path), path.stat().st_size))
    return SavedImage(config, layers)


def _export(local_ref: str) -> SavedImage:
    image_id = _docker("image", "inspect", "--format", "{{.Id}}", local_ref).strip()
    with _EXPORTS_LOCK:
        if image_id not in _EXPORTS:
            work = Path(tempfile.mkdtemp(prefix="test-registry-"))
            atexit.register(shutil.rmtree, work, True)
            _docker("save", "--output", str(work / "image.tar"), image_id)
            _EXPORTS[image_id] = convert_saved(work / "image.tar", work)
            (work / "image.tar").unlink()
        return _EXPORTS[image_id]


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def remove_local_image(ref: str) -> None:
    """`docker rmi ref`, ignoring failures: for clean-up."""
    subprocess.run(["docker", "rmi", ref], capture_output=True)


def _error(status: int, code: str, message: str, detail: Any) -> web.Response:
    errors = {"errors": [{"code": code, "message": message, "detail": detail}]}
    return web.json_response(errors, status=status)


class TestRegistry:
    """An in-memory registry serving local images at `127.0.0.1:PORT/<repository>:<tag>`.

    It runs on its own event loop in a background thread, so that synchronous tests and async
    tests (whose loop may be blocked in a call to the engine) can both use it. Its methods are
    plain calls; `add_image` runs `docker save` (seconds) the first time it sees an image.
    """

    __test__ = False  # a helper, not a pytest test class

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self._salt = uuid.uuid4().hex
        self._blobs: dict[str, _Blob] = {}
        self._published: dict[tuple[str, bool], tuple[str, bytes]] = {}
        self._manifests: dict[tuple[str, str], bytes] = {}
        self._tags: dict[tuple[str, str], str] = {}
        self._rate: int | None = None
        self._next_send = 0.0
        self._go = asyncio.Event()  # set while blob requests may be answered
        self._go.set()
        self._stopping = False
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._port}"

    def start(self) -> Self:
        ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(ready),), daemon=True)
        self._thread.start()
        ready.wait(30)
        if not self._port:
            raise RuntimeError("the test registry did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)
            self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_image(self, local_ref: str, repository: str, tag: str, *, fresh: bool = True) -> str:
        """Serves a local image as `repository:tag`; returns its manifest digest."""
        export = _export(local_ref)
        key = (_sha256(export.config), fresh)
        if key not in self._published:
            self._published[key] = self._publish(export, fresh)
        digest, manifest = self._published[key]
        self._manifests[(repository, digest)] = manifest
        self._tags[(repository, tag)] = digest
        return digest

    def _publish(self, export: SavedImage, fresh: bool) -> tuple[str, bytes]:
        config, head = export.config, b""
        if fresh:
            document = json.loads(config)
            inner = document.setdefault("config", {})
            inner["Labels"] = {**(inner.get("Labels") or {}), SALT_LABEL: self._salt}
            config = json.dumps(document).encode()
            member = io.BytesIO()
            with gzip.GzipFile(filename=self._salt, mode="wb", fileobj=member, mtime=0):
                pass
            head = member.getvalue()
        layers = []
        for path, digest, size in export.layers:
            if fresh:
                digest, size = _sha256(head, path), len(head) + size
            self._blobs[digest] = _Blob(head, path)
            layers.append({"mediaType": LAYER_GZIP, "size": size, "digest": digest})
        self._blobs[_sha256(config)] = _Blob(config)
        config_ref = {"mediaType": CONFIG_V1, "size": len(config), "digest": _sha256(config)}
        manifest = {"schemaVersion": 2, "mediaType": MANIFEST_V2, "config": config_ref}
        body = json.dumps({**manifest, "layers": layers}, indent=2).encode()
        return _sha256(body), body

    def remove_tag(self, repository: str, tag: str) -> None:
        """The tag is unknown from now on; its manifest stays reachable by digest."""
        self._tags.pop((repository, tag), None)

    def download_size(self, manifest_digest: str) -> int:
        """Bytes of the config and layer blobs of a manifest, as a pull downloads them."""
        manifest = json.loads(dict(self._published.values())[manifest_digest])
        return sum(blob["size"] for blob in [manifest["config"], *manifest["layers"]])

    def throttle(self, bytes_per_second: int | None) -> None:
        """Limits all blob bodies together to this rate (None: as fast as possible)."""
        self._rate = bytes_per_second

    def stall(self, stalled: bool) -> None:
        """While stalled, a blob GET gets no response at all (bodies under way go on); the
        waiting ones are answered when un-stalled, or with 404 when the registry stops."""
        set_or_clear = self._go.clear if stalled else self._go.set
        if self._loop is None:
            set_or_clear()
        else:
            self._loop.call_soon_threadsafe(set_or_clear)

    async def _serve(self, ready: threading.Event) -> None:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/v2/", self._ping)
        app.router.add_get(r"/v2/{name:.+}/manifests/{reference}", self._manifest)
        app.router.add_get(r"/v2/{name:.+}/blobs/{digest}", self._blob)
        runner = web.AppRunner(app, shutdown_timeout=1, access_log=None, logger=_LOG)
        try:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self._port = runner.addresses[0][1]
            self._loop = asyncio.get_running_loop()
        finally:
            ready.set()
        await self._stop.wait()
        self._stopping = True
        self._go.set()
        await runner.cleanup()

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        response: web.StreamResponse = await handler(request)
        return response

    async def _ping(self, request: web.Request) -> web.Response:
        return web.json_response({}, headers={"Docker-Distribution-API-Version": "registry/2.0"})

    async def _manifest(self, request: web.Request) -> web.Response:
        name, reference = request.match_info["name"], request.match_info["reference"]
        digest = reference if reference.startswith("sha256:") else self._tags.get((name, reference))
        body = self._manifests.get((name, digest or ""))
        if body is None:
            detail = {"name": name, "reference": reference}
            return _error(404, "MANIFEST_UNKNOWN", "manifest unknown", detail)
        headers = {"Docker-Content-Digest": _sha256(body), "Content-Type": MANIFEST_V2}
        return web.Response(body=body, headers=headers)

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        blob = self._blobs.get(digest)
        if blob is not None and request.method == "GET":
            await self._go.wait()
        if blob is None or self._stopping:
            return _error(404, "BLOB_UNKNOWN", "blob unknown to registry", {"digest": digest})
        headers = {"Docker-Content-Digest": digest, "Content-Type": "application/octet-stream"}
        response = web.StreamResponse(headers=headers)
        response.content_length = blob.size
        await response.prepare(request)
        sent, size = 0, blob.size
        while request.method == "GET" and sent < size:
            rate = self._rate
            chunk = blob.read(sent, min(CHUNK, max(512, rate // 20)) if rate else CHUNK)
            if rate:  # one schedule for all blob bodies, restarted when idle
                now = asyncio.get_running_loop().time()
                if now > self._next_send + 0.2:
                    self._next_send = now
                self._next_send += len(chunk) / rate
                await asyncio.sleep(self._next_send - now)
            await response.write(chunk)
            sent += len(chunk)
        await response.write_eof()
        return response
