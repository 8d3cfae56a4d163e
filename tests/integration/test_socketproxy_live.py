"""The socket proxy in front of the real Docker engine: what it admits works, what it denies
never reaches the engine and changes nothing.

The proxy runs in-process on a loopback port; the orchestrator's own Docker code
(`activities.*`) talks to it through aiodocker exactly as it does in the compose stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import pytest

from activities import containers
from activities.images import Puller, inspect_image
from activities.logstream import LineReader, LogLine
from activities.network import ensure_job_network
from orchestrator.contract import (
    JOB_NETWORK,
    LABEL_HOST_ID,
    LABEL_MANAGED,
)
from orchestrator.hostconfig import HostConfig
from orchestrator.version import VERSION
from socketproxy.config import ProxyConfig
from socketproxy.server import start
from tests.bodies import plan_for

pytestmark = pytest.mark.integration

DEMO_IMAGE = "bigeye-demo-agent:dev"
SOCKET = "/var/run/docker.sock"


async def log_lines(
    docker: aiodocker.Docker, ref: str, *, follow: bool, tail: int | None = None
) -> AsyncIterator[LogLine]:
    """The container's output as lines, read the way the orchestrator reads it."""
    reader = LineReader()
    async for entry in containers.log_entries(docker, ref, follow=follow, tail=tail):
        for line in reader.feed(entry):
            yield line
    for line in reader.finish():
        yield line


@dataclass
class Live:
    host_id: str
    host_dir: Path
    port: int
    http: aiohttp.ClientSession  # raw HTTP to the proxy
    via_proxy: aiodocker.Docker  # the orchestrator's client, pointed at the proxy
    engine: aiodocker.Docker  # the real socket, for setting up and checking
    foreign: list[str] = field(default_factory=list)  # containers made directly, to remove
    runs: int = 0

    def plan_and_body(self, env: dict[str, str] | None = None) -> tuple[str, str, dict[str, Any]]:
        """(container name, run id, the orchestrator's create body) for a new datahealth run."""
        self.runs += 1
        run_id = f"r{self.runs}-{uuid.uuid4().hex[:6]}"
        host = HostConfig.model_validate(
            {"agents": {"datahealth": {"image": DEMO_IMAGE, "env": env or {}, "memory": "64m"}}}
        )
        request = {
            "job_id": self.host_id,
            "run_id": run_id,
            "agent": "datahealth",
            "parameters": {"file_name": "checks.yml"},
        }
        plan = plan_for(host, request, host_id=self.host_id, host_dir=str(self.host_dir),
                        version=VERSION)  # fmt: skip
        return plan.container_name, run_id, plan.create_body

    async def direct_container(self, name: str, labels: dict[str, str], run: bool) -> str:
        """A container made through the real socket, around the proxy."""
        created = await self.engine.containers.create(
            {
                "Image": DEMO_IMAGE,
                "Entrypoint": ["sleep", "300"],
                "Cmd": [],
                "Labels": labels,
                "HostConfig": {"NetworkMode": "none"},
            },
            name=name,
        )
        self.foreign.append(created.id)
        if run:
            await created.start()
        return str(created.id)

    async def state(self, ref: str) -> dict[str, Any] | None:
        try:
            info = await self.engine.containers.get(ref)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return None
            raise
        return dict(info._container["State"])


async def _network_exists(engine: aiodocker.Docker) -> bool:
    try:
        await engine.networks.get(JOB_NETWORK)
        return True
    except aiodocker.DockerError as exc:
        if exc.status == 404:
            return False
        raise


@pytest.fixture
async def live(docker_engine: None, tmp_path: Path) -> AsyncIterator[Live]:
    host_id = f"proxytest-{uuid.uuid4().hex[:10]}"
    host_dir = tmp_path / "host"
    config_dir = host_dir / "agent_config" / "datahealth"
    config_dir.mkdir(parents=True)
    (config_dir / "connection.yml").write_text("agent: datahealth\n")
    config = ProxyConfig(host_id=host_id, host_dir=str(host_dir), socket_path=SOCKET)
    runner, proxy, port = await start(config, "127.0.0.1", 0)
    engine = aiodocker.Docker(url=f"unix://{SOCKET}")
    network_existed = await _network_exists(engine)
    http = aiohttp.ClientSession(
        base_url=f"http://127.0.0.1:{port}", timeout=aiohttp.ClientTimeout(total=120)
    )
    via_proxy = aiodocker.Docker(url=f"tcp://127.0.0.1:{port}")
    state = Live(host_id, host_dir, port, http, via_proxy, engine)
    try:
        yield state
    finally:
        await via_proxy.close()
        await http.close()
        await runner.cleanup()
        await proxy.close()
        ours = await engine.containers.list(
            all=True, filters={"label": [f"{LABEL_HOST_ID}={host_id}"]}
        )
        for ref in [c.id for c in ours] + state.foreign:
            with contextlib.suppress(aiodocker.DockerError):
                await engine.containers.container(ref).delete(force=True, v=True)
        if not network_existed:
            with contextlib.suppress(aiodocker.DockerError):  # still in use elsewhere: keep
                await engine.networks.get(JOB_NETWORK)
                await (await engine.networks.get(JOB_NETWORK)).delete()
        await engine.close()


async def _json(response: aiohttp.ClientResponse) -> Any:
    return json.loads(await response.read())


async def _denied(response: aiohttp.ClientResponse) -> str:
    body = await _json(response)
    assert response.status == 403, (response.status, body)
    assert response.headers["Content-Type"] == "application/json"
    assert body["message"].startswith("docker-socket-proxy: "), body
    return str(body["message"])


async def test_ping_and_version_pass(live: Live):
    async with live.http.get("/_ping") as response:
        assert response.status == 200
        assert await response.text() == "OK"
        assert response.headers["Api-Version"]
    async with live.http.head("/_ping") as response:
        assert response.status == 200
    async with live.http.get("/v1.41/version") as response:
        assert response.status == 200
        assert (await _json(response))["ApiVersion"]
    assert (await live.via_proxy.version())["ApiVersion"]


async def test_the_orchestrators_job_lifecycle_through_the_proxy(live: Live):
    # The job network, created through the proxy (409 when this engine already has it).
    create = {
        "Name": JOB_NETWORK,
        "Driver": "bridge",
        "CheckDuplicate": True,
        "Labels": {LABEL_MANAGED: "true"},
    }
    async with live.http.post("/v1.41/networks/create", json=create) as response:
        assert response.status in (201, 409), await response.text()
        if response.status == 409:
            assert "already exists" in (await _json(response))["message"]
    await ensure_job_network(live.via_proxy)
    network = await (await live.engine.networks.get(JOB_NETWORK)).show()
    assert network["Labels"].get(LABEL_MANAGED) == "true"

    # The image the orchestrator checks before every launch.
    image = await Puller(live.via_proxy).ensure(DEMO_IMAGE, None, lambda _: None)
    assert image.image_id.startswith("sha256:")

    # Create (idempotent: the second call adopts), start, follow logs while it runs.
    name, run_id, body = live.plan_and_body({"DEMO_SLEEP_SECONDS": "4", "DEMO_LOG_LINES": "4"})
    info, created = await containers.create_or_adopt(
        live.via_proxy, name, body, live.host_id, run_id
    )
    assert created
    again, created_again = await containers.create_or_adopt(
        live.via_proxy, name, body, live.host_id, run_id
    )
    assert (again["Id"], created_again) == (info["Id"], False)
    container_id = info["Id"]
    await containers.start(live.via_proxy, container_id)
    await containers.start(live.via_proxy, container_id)  # 304 passes through: adopted

    lines: list[str] = []
    running_at_first_line: bool | None = None
    async for line in log_lines(live.via_proxy, name, follow=True):
        if running_at_first_line is None:
            state = await live.state(container_id)
            running_at_first_line = bool(state and state["Running"])
        lines.append(line.text)
    # The follow stream is passed through as it comes, not buffered until the end.
    assert running_at_first_line is True
    assert any("config: /app/config/connection.yml" in text for text in lines), lines
    assert lines[-1] == "demo-agent: done, exiting with 0"

    async with live.http.post(
        f"/v1.41/containers/{name}/wait", params={"condition": "not-running"}
    ) as response:
        assert response.status == 200
        assert (await _json(response))["StatusCode"] == 0
    listed = await containers.list_managed(live.via_proxy, live.host_id)
    assert [c["Id"] for c in listed] == [container_id]
    inspected = await containers.inspect_ours(live.via_proxy, name, live.host_id, run_id)
    assert inspected is not None and inspected["State"]["Status"] == "exited"
    assert inspected["HostConfig"]["Binds"] == [
        f"{live.host_dir}/agent_config/datahealth:/app/config:ro"
    ]
    tail = [
        line.text async for line in log_lines(live.via_proxy, container_id, follow=False, tail=2)
    ]
    assert tail[-1] == "demo-agent: done, exiting with 0"
    await containers.remove(live.via_proxy, container_id)
    assert await live.state(container_id) is None
    assert await containers.inspect(live.via_proxy, name) is None  # the engine's 404


async def test_stop_and_kill_of_a_running_job_container(live: Live):
    await ensure_job_network(live.via_proxy)
    name, run_id, body = live.plan_and_body({"DEMO_SLEEP_SECONDS": "120"})
    info, _ = await containers.create_or_adopt(live.via_proxy, name, body, live.host_id, run_id)
    await containers.start(live.via_proxy, info["Id"])
    # Its SIGTERM handler is in place once it prints; leaving the follow stream early closes
    # the proxy's upstream request with it.
    async for _ in log_lines(live.via_proxy, name, follow=True):
        break
    await containers.stop(live.via_proxy, name, grace_seconds=5)
    state = await live.state(info["Id"])
    assert state is not None and state["Status"] == "exited" and state["ExitCode"] == 143

    await containers.start(live.via_proxy, info["Id"])
    async with live.http.post(f"/containers/{name}/kill?signal=SIGKILL") as response:
        assert response.status == 204, await response.text()
    async with live.http.post(f"/containers/{name}/wait") as response:
        assert (await _json(response))["StatusCode"] == 137
    async with live.http.post(f"/containers/{name}/kill?signal=SIGSTOP") as response:
        await _denied(response)
    async with live.http.delete(f"/containers/{name}?force=true") as response:
        assert response.status == 204
    assert await live.state(info["Id"]) is None


async def test_denied_creates_create_nothing(live: Live):
    await ensure_job_network(live.via_proxy)
    name, _, body = live.plan_and_body()
    bad_bodies = [
        {**body, "HostConfig": {**body["HostConfig"], "Privileged": True}},
        {**body, "HostConfig": {**body["HostConfig"], "Binds": [f"{SOCKET}:/app/config:ro"]}},
        {**body, "Labels": {**body["Labels"], LABEL_HOST_ID: "someone-else"}},
    ]
    for bad in bad_bodies:
        async with live.http.post(
            "/v1.41/containers/create", params={"name": name}, json=bad
        ) as response:
            await _denied(response)
    # Go would merge the first HostConfig into the second: the proxy refuses to guess.
    text = json.dumps(body)
    merged = '{"HostConfig": {"Privileged": true}, ' + text[1:]
    async with live.http.post(
        f"/v1.41/containers/create?name={name}",
        data=merged,
        headers={"Content-Type": "application/json"},
    ) as response:
        assert "duplicate key" in await _denied(response)
    assert await live.state(name) is None


async def test_calls_on_containers_that_are_not_ours_are_denied_and_change_nothing(live: Live):
    # Named like job containers, so that only their labels tell them apart.
    plain = f"bigeye-job-proxytest-plain-{uuid.uuid4().hex[:8]}"
    plain_id = await live.direct_container(plain, {}, run=True)
    other = f"bigeye-job-proxytest-other-{uuid.uuid4().hex[:8]}"
    other_id = await live.direct_container(
        other, {LABEL_MANAGED: "true", LABEL_HOST_ID: "another-host"}, run=True
    )
    stopped = f"proxytest-stopped-{uuid.uuid4().hex[:8]}"
    stopped_id = await live.direct_container(stopped, {}, run=False)

    for ref, why in [
        (plain, "not managed"),
        (plain_id, "not managed"),
        (other, "another host"),
        (other_id, "another host"),
        (plain_id[:12], "full id or its job name"),
        (stopped, "full id or its job name"),
    ]:
        for method, path in [
            ("GET", f"/v1.41/containers/{ref}/json"),
            ("POST", f"/v1.41/containers/{ref}/stop?t=1"),
            ("POST", f"/v1.41/containers/{ref}/kill?signal=SIGKILL"),
            ("POST", f"/v1.41/containers/{ref}/wait"),
            ("GET", f"/v1.41/containers/{ref}/logs?stdout=true&stderr=true"),
            ("POST", f"/v1.41/containers/{ref}/start"),
            ("DELETE", f"/v1.41/containers/{ref}?force=true"),
        ]:
            async with live.http.request(method, path) as response:
                assert why in await _denied(response), (ref, method, path)
    with pytest.raises(aiodocker.DockerError) as info:
        await containers.inspect(live.via_proxy, plain)
    assert info.value.status == 403

    # The list shows this host's containers only.
    async with live.http.get("/v1.41/containers/json?all=1") as response:
        listed = {c["Id"] for c in await _json(response)}
    assert not listed & {plain_id, other_id, stopped_id}

    assert (await live.state(plain_id) or {}).get("Running") is True
    assert (await live.state(other_id) or {}).get("Running") is True
    assert (await live.state(stopped_id) or {}).get("Status") == "created"


async def test_forbidden_calls_are_denied_and_change_nothing(live: Live):
    victim = f"proxytest-victim-{uuid.uuid4().hex[:8]}"
    victim_id = await live.direct_container(victim, {}, run=True)
    stopped = f"proxytest-stopped-{uuid.uuid4().hex[:8]}"
    stopped_id = await live.direct_container(stopped, {}, run=False)
    volume = f"proxytest-{uuid.uuid4().hex[:8]}"
    images_before = {i["Id"] for i in await live.engine.images.list()}
    volumes_before = {v["Name"] for v in (await live.engine.volumes.list())["Volumes"] or []}

    calls: list[tuple[str, str, Any]] = [
        ("POST", f"/v1.41/containers/{victim}/exec", {"Cmd": ["id"], "AttachStdout": True}),
        ("POST", f"/containers/{victim_id}/exec", {"Cmd": ["id"]}),
        ("POST", f"/v1.41/containers/{victim}/attach?stream=1&stdout=1", None),
        ("GET", f"/v1.41/containers/{victim}/archive?path=/etc/passwd", None),
        ("PUT", f"/v1.41/containers/{victim}/archive?path=/tmp", None),
        ("GET", f"/v1.41/containers/{victim}/export", None),
        ("POST", f"/v1.41/containers/{victim}/update", {"Memory": 0}),
        ("POST", "/v1.41/build?t=proxytest-built", None),
        ("POST", f"/v1.41/commit?container={victim}&repo=proxytest-committed", None),
        ("POST", "/v1.41/images/create?fromSrc=-&repo=proxytest-imported", None),
        ("POST", "/v1.41/images/create?fromImage=x&fromSrc=-", None),
        ("POST", "/v1.41/volumes/create", {"Name": volume}),
        ("POST", "/v1.41/containers/prune", None),
        ("POST", "/v1.41/images/prune", None),
        ("POST", "/v1.41/volumes/prune", None),
        ("POST", "/v1.41/networks/prune", None),
        ("POST", "/v1.41/build/prune", None),
        ("DELETE", f"/v1.41/images/{DEMO_IMAGE}", None),
        ("POST", "/v1.41/networks/create", {"Name": "proxytest-net", "Driver": "bridge"}),
        ("GET", "/v1.41/networks/bridge", None),
        ("GET", "/v1.41/info", None),
        ("GET", "/v1.41/events", None),
        ("POST", "/v1.41/plugins/pull?remote=x", None),
        ("POST", "/v1.41/swarm/init", {}),
        ("GET", "/v1.41/secrets", None),
    ]
    for method, path, payload in calls:
        kwargs: dict[str, Any] = {"json": payload} if payload is not None else {}
        async with live.http.request(method, path, **kwargs) as response:
            await _denied(response)
    async with live.http.post(
        "/v1.41/containers/json", headers={"X-HTTP-Method-Override": "DELETE"}
    ) as response:
        await _denied(response)
    async with live.http.post(
        f"/v1.41/containers/{victim}/attach?stream=1&stdout=1",
        headers={"Connection": "Upgrade", "Upgrade": "tcp"},
    ) as response:
        await _denied(response)

    victim_info = await live.engine.containers.get(victim_id)
    assert victim_info["State"]["Running"] is True
    assert not victim_info["ExecIDs"]
    assert (await live.state(stopped_id) or {}).get("Status") == "created"
    assert {i["Id"] for i in await live.engine.images.list()} == images_before
    volumes_after = {v["Name"] for v in (await live.engine.volumes.list())["Volumes"] or []}
    assert volume not in volumes_after and volumes_before <= volumes_after
    with pytest.raises(aiodocker.DockerError):
        await live.engine.networks.get("proxytest-net")


async def test_a_pull_is_forwarded_to_the_engine(live: Live):
    # Nothing listens on port 1: the engine's error (not the proxy's 403) proves it went through.
    async with live.http.post(
        "/v1.41/images/create",
        params={"fromImage": "127.0.0.1:1/proxytest/nothing", "tag": "x"},
        headers={"X-Registry-Auth": "e30="},
    ) as response:
        text = await response.text()
        assert response.status != 403, text
        assert "docker-socket-proxy" not in text
        assert "127.0.0.1:1" in text
    assert await inspect_image(live.via_proxy, "127.0.0.1:1/proxytest/nothing:x") is None


async def _raw(port: int, request: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(30):
            data = await reader.read(-1)
    finally:
        writer.close()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data


@pytest.mark.parametrize(
    "target",
    [
        b"/v1.41/containers/../images/json",
        b"/v1.41/containers/x/../../info",
        b"/images%2Fjson",
        b"/v1.41/containers%2Fjson",
        b"//_ping",
        b"/v1.41//_ping",
        b"http://docker/_ping",
        b"/containers/json?all=1&all=0",
        b"/containers/json?all=1;size=1",
    ],
)
async def test_raw_targets_reach_the_rules_unnormalised(live: Live, target: bytes):
    status, data = await _raw(
        live.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status in (400, 403), data[:300]  # 400: aiohttp's parser refused it first
    assert b'"message"' in data or status == 400


async def test_oversized_chunked_body_is_denied(live: Live):
    name, _, _ = live.plan_and_body()
    chunk = b"x" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20)) + b"0\r\n\r\n"
    head = (
        f"POST /v1.41/containers/create?name={name} HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    status, data = await _raw(live.port, head + body)
    assert status == 403, data[:300]
    assert b"larger than" in data
    assert await live.state(name) is None


async def test_form_encoded_bodies_are_denied(live: Live):
    # Go's ParseForm would read a urlencoded body's fields ahead of the query string.
    async with live.http.post(
        "/v1.41/images/create?fromImage=alpine",
        data=b"fromSrc=-&repo=proxytest-x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ) as response:
        assert "Content-Type" in await _denied(response)
