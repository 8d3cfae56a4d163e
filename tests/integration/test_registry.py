"""The test-owned registry (`tests/registry.py`) against the real Docker engine.

Other tests rely on it to pull for real: a pull that succeeds with a known digest, one as slow as
they want, one that never ends until they say so. These tests prove each of those with
`docker pull`, and that what the engine stores is what the registry served.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.conftest import DEMO_IMAGE
from tests.registry import MANIFEST_V2, TestRegistry, convert_saved, remove_local_image
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

REPOSITORY = "bigeye/demo"  # a name with a slash, as real ones have


@pytest.fixture
def registry(docker_engine: None) -> Iterator[TestRegistry]:
    with TestRegistry() as registry:
        yield registry


@pytest.fixture
def pulled() -> Iterator[list[str]]:
    """References the test pulls; removed from the engine afterwards."""
    refs: list[str] = []
    yield refs
    for ref in refs:
        remove_local_image(ref)


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    assert not check or result.returncode == 0, f"docker {args}: {result.stderr}"
    return result


def inspect(ref: str) -> dict[str, Any]:
    return dict(json.loads(docker("image", "inspect", ref).stdout)[0])


def manifest(registry: TestRegistry, digest: str) -> dict[str, Any]:
    url = f"http://{registry.address}/v2/{REPOSITORY}/manifests/{digest}"
    with urllib.request.urlopen(url) as response:
        return dict(json.load(response))


def blob_downloads(registry: TestRegistry) -> list[str]:
    """The digests of the blob GET requests the registry received, in order."""
    return [path.rsplit("/", 1)[1] for method, path in registry.requests if "/blobs/" in path]


def start_pull(ref: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["docker", "pull", ref], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_a_fresh_copy_is_downloaded_blob_by_blob_and_runs(
    registry: TestRegistry, pulled: list[str]
) -> None:
    digest = registry.add_image(DEMO_IMAGE, REPOSITORY, "t1")
    assert registry.add_image(DEMO_IMAGE, REPOSITORY, "t2") == digest  # same image, cached
    ref = f"{registry.address}/{REPOSITORY}:t1"
    pulled.append(ref)

    docker("pull", ref)

    image, local, served = inspect(ref), inspect(DEMO_IMAGE), manifest(registry, digest)
    assert image["RepoDigests"] == [f"{registry.address}/{REPOSITORY}@{digest}"]
    # A fresh copy has its own config (hence image id) but the very same layer contents.
    assert image["Id"] == served["config"]["digest"] != local["Id"]
    assert image["RootFS"]["Layers"] == local["RootFS"]["Layers"]
    served_blobs = [served["config"]["digest"], *(layer["digest"] for layer in served["layers"])]
    assert sorted(blob_downloads(registry)) == sorted(served_blobs)
    assert registry.requests[0] == ("GET", "/v2/")

    run = docker(
        "run", "--rm", "--network", "none", ref, "datahealth", "run", "--file-name", "a.yml"
    )
    assert "demo-agent argv: datahealth run --file-name a.yml" in run.stdout


def test_an_as_is_copy_keeps_the_image_id_and_downloads_no_blob(
    registry: TestRegistry, pulled: list[str]
) -> None:
    digest = registry.add_image(DEMO_IMAGE, REPOSITORY, "same", fresh=False)
    ref = f"{registry.address}/{REPOSITORY}:same"
    pulled.append(ref)
    local = inspect(DEMO_IMAGE)

    docker("pull", ref)

    image = inspect(ref)
    assert image["Id"] == local["Id"]
    assert f"{registry.address}/{REPOSITORY}@{digest}" in image["RepoDigests"]
    assert blob_downloads(registry) == []  # the engine had the image: manifest only

    remove_local_image(ref)  # untags only: the local image keeps its tags and loses the digest
    after = inspect(DEMO_IMAGE)
    assert after["RepoTags"] == local["RepoTags"]
    assert not any(registry.address in repo_digest for repo_digest in after["RepoDigests"])


def test_a_throttled_pull_takes_at_least_its_size_over_the_rate(
    registry: TestRegistry, pulled: list[str]
) -> None:
    seconds = 4
    digest = registry.add_image(DEMO_IMAGE, REPOSITORY, "slow")
    registry.throttle(registry.download_size(digest) // seconds)
    ref = f"{registry.address}/{REPOSITORY}:slow"
    pulled.append(ref)

    started = time.monotonic()
    docker("pull", ref)
    elapsed = time.monotonic() - started

    assert elapsed >= seconds, f"the throttled pull took {elapsed:.1f} s"
    assert inspect(ref)["RepoDigests"] == [f"{registry.address}/{REPOSITORY}@{digest}"]


def test_a_stalled_pull_waits_until_the_registry_stops(
    registry: TestRegistry, pulled: list[str]
) -> None:
    digest = registry.add_image(DEMO_IMAGE, REPOSITORY, "stalled")
    blobs = 1 + len(manifest(registry, digest)["layers"])
    ref = f"{registry.address}/{REPOSITORY}:stalled"
    pulled.append(ref)
    registry.stall(True)
    pull = start_pull(ref)
    try:
        wait_for(lambda: len(blob_downloads(registry)) == blobs, 30, "every blob to be requested")
        assert pull.poll() is None, "the pull ended while every blob was stalled"

        registry.stop()

        _, stderr = pull.communicate(timeout=30)
        assert pull.returncode != 0
        assert "unknown blob" in stderr
    finally:
        if pull.poll() is None:
            pull.kill()
            pull.wait()


def test_a_stalled_pull_completes_once_unstalled(registry: TestRegistry, pulled: list[str]) -> None:
    digest = registry.add_image(DEMO_IMAGE, REPOSITORY, "later")
    ref = f"{registry.address}/{REPOSITORY}:later"
    pulled.append(ref)
    registry.stall(True)
    pull = start_pull(ref)
    try:
        wait_for(lambda: blob_downloads(registry), 30, "a blob to be requested")
        assert pull.poll() is None

        registry.stall(False)

        _, stderr = pull.communicate(timeout=60)
        assert pull.returncode == 0, stderr
    finally:
        if pull.poll() is None:
            pull.kill()
            pull.wait()
    assert inspect(ref)["RepoDigests"] == [f"{registry.address}/{REPOSITORY}@{digest}"]


def test_an_unknown_or_removed_tag_is_not_found(registry: TestRegistry, pulled: list[str]) -> None:
    registry.add_image(DEMO_IMAGE, REPOSITORY, "gone")
    registry.remove_tag(REPOSITORY, "gone")

    for tag in ("gone", "never"):
        ref = f"{registry.address}/{REPOSITORY}:{tag}"
        pulled.append(ref)
        result = docker("pull", ref, check=False)
        assert result.returncode != 0
        assert "manifest unknown" in result.stderr or "not found" in result.stderr
    assert ("GET", f"/v2/{REPOSITORY}/manifests/never") in registry.requests
    assert blob_downloads(registry) == []


async def test_speaks_the_registry_api_to_an_async_client(registry: TestRegistry) -> None:
    digest = registry.add_image(DEMO_IMAGE, REPOSITORY, "t1")
    base = f"http://{registry.address}/v2"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/") as response:
            assert response.status == 200
            assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        async with http.head(f"{base}/{REPOSITORY}/manifests/t1") as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == MANIFEST_V2
            assert response.headers["Docker-Content-Digest"] == digest
            length = int(response.headers["Content-Length"])
        async with http.get(f"{base}/{REPOSITORY}/manifests/{digest}") as response:
            body = await response.read()
            assert (len(body), f"sha256:{hashlib.sha256(body).hexdigest()}") == (length, digest)
        config = json.loads(body)["config"]
        async with http.head(f"{base}/{REPOSITORY}/blobs/{config['digest']}") as response:
            assert int(response.headers["Content-Length"]) == config["size"]
        for path, code in [
            ("manifests/nope", "MANIFEST_UNKNOWN"),
            ("blobs/sha256:0", "BLOB_UNKNOWN"),
        ]:
            async with http.get(f"{base}/{REPOSITORY}/{path}") as response:
                assert response.status == 404
                assert (await response.json())["errors"][0]["code"] == code
        async with http.get(f"{base}/other/manifests/t1") as response:
            assert response.status == 404  # tags belong to their repository


def _tar(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


def test_both_docker_save_layouts_convert_to_the_same_image(tmp_path: Path) -> None:
    """Docker 20.10 writes `<id>/layer.tar`; Docker 25+ the OCI layout, whose legacy paths are
    symbolic links into `blobs/`, and with the containerd store its layers may be gzipped."""
    layers = [_tar({"a.txt": b"a" * 5000}), _tar({"b/c.txt": b"c" * 7000})]
    diff_ids = [f"sha256:{hashlib.sha256(layer).hexdigest()}" for layer in layers]
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    hexes = [hashlib.sha256(blob).hexdigest() for blob in [config, *layers]]
    classic = {
        "manifest.json": json.dumps(
            [{"Config": f"{hexes[0]}.json", "Layers": ["1/layer.tar", "2/layer.tar"]}]
        ).encode(),
        f"{hexes[0]}.json": config,
        "1/layer.tar": layers[0],
        "2/layer.tar": layers[1],
    }
    zipped = gzip.compress(layers[1], mtime=0)
    zipped_hex = hashlib.sha256(zipped).hexdigest()
    oci = {
        "oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
        "index.json": b'{"schemaVersion": 2, "manifests": []}',
        "manifest.json": json.dumps(
            [
                {
                    "Config": f"blobs/sha256/{hexes[0]}",
                    "Layers": ["1/layer.tar", f"blobs/sha256/{zipped_hex}"],
                }
            ]
        ).encode(),
        f"blobs/sha256/{hexes[0]}": config,
        f"blobs/sha256/{hexes[1]}": layers[0],
        f"blobs/sha256/{zipped_hex}": zipped,
    }
    legacy_link = {"1/layer.tar": f"../blobs/sha256/{hexes[1]}"}

    for name, archive in [("classic", _tar(classic)), ("oci", _tar(oci, legacy_link))]:
        into = tmp_path / name
        into.mkdir()
        (tmp_path / f"{name}.tar").write_bytes(archive)
        saved = convert_saved(tmp_path / f"{name}.tar", into)
        assert saved.config == config
        assert [gzip.decompress(path.read_bytes()) for path, _, _ in saved.layers] == layers
        for path, digest, size in saved.layers:
            assert (digest, size) == (
                f"sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}",
                path.stat().st_size,
            )
