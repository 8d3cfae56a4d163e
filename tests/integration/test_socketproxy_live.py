"""The socket proxy in front of the real Docker engine: what it admits works, what it denies
never reaches the engine and changes nothing.

The proxy runs in-process on a loopback port, reading a `bigeye_agent.yml` the test writes (its
directory stands for the host directory, as the compose file's mount does); the orchestrator's
own Docker code (`activities.*`) talks to it through aiodocker exactly as it does in the
compose stack. Pulls use a registry on 127.0.0.1 (tests/registry.py), which the proxy refuses
unless it is started with `allow_loopback_registry`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import pytest
import yaml

from activities import containers
from activities.images import Puller, inspect_image
from activities.logstream import LineReader, LogLine
from activities.network import ensure_job_network
from orchestrator.contract import (
    JOB_NETWORK,
    LABEL_HOST_ID,
    LABEL_MANAGED,
    LABEL_RUN_ID,
)
from orchestrator.hostconfig import HostConfig
from orchestrator.version import VERSION
from socketproxy.config import ProxyConfig
from socketproxy.server import BODY_TIMEOUT, HEAD_TIMEOUT, Proxy, start
from tests.bodies import plan_for
from tests.registry import TestRegistry, remove_local_image
from tests.waiting import async_wait_for

pytestmark = pytest.mark.integration

DEMO_IMAGE = "bigeye-demo-agent:dev"
PROXY_IMAGE = "bigeyedata/agent-docker-socket-proxy:dev"
SOCKET = "/var/run/docker.sock"
AGENTS: dict[str, dict[str, Any]] = {"datahealth": {"image": DEMO_IMAGE, "memory": "64m"}}


def write_agent_set(host_dir: Path, agents: dict[str, dict[str, Any]]) -> None:
    """bigeye_agent.yml replaced atomically, as `bigeye-agent sync` does."""
    tmp = host_dir / ".bigeye_agent.yml.tmp"
    tmp.write_text(yaml.safe_dump({"docker_compose_enabled": True, "agents": agents}))
    os.replace(tmp, host_dir / "bigeye_agent.yml")


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
    proxy: Proxy
    foreign: list[str] = field(default_factory=list)  # containers made directly, to remove
    runs: int = 0
    agents: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(AGENTS))

    def set_agents(self, agents: dict[str, dict[str, Any]]) -> None:
        self.agents = agents
        write_agent_set(self.host_dir, agents)

    def plan_and_body(
        self, env: dict[str, str] | None = None, agent: str = "datahealth"
    ) -> tuple[str, str, dict[str, Any]]:
        """(container name, run id, the orchestrator's create body) for a new run."""
        self.runs += 1
        run_id = f"r{self.runs}-{uuid.uuid4().hex[:6]}"
        entry = {**self.agents[agent], "env": env or {}}  # env is the orchestrator's check
        host = HostConfig.model_validate({"agents": {agent: entry}})
        parameters = {
            "datahealth": {"file_name": "checks.yml"},
            "lineage_plus": {"connectors": ["snowflake"]},
            "external_monitors": {"connector": "dbt"},
        }[agent]
        request = {
            "job_id": self.host_id,
            "run_id": run_id,
            "agent": agent,
            "parameters": parameters,
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


def proxy_config(host_id: str, host_dir: Path, **changes: Any) -> ProxyConfig:
    return ProxyConfig(
        host_id=host_id,
        host_dir=str(host_dir),
        socket_path=SOCKET,
        agent_config=str(host_dir / "bigeye_agent.yml"),
        **changes,
    )


@pytest.fixture
async def live(docker_engine: None, tmp_path: Path) -> AsyncIterator[Live]:
    host_id = f"proxytest-{uuid.uuid4().hex[:10]}"
    host_dir = tmp_path / "host"
    config_dir = host_dir / "agent_config" / "datahealth"
    config_dir.mkdir(parents=True)
    (config_dir / "connection.yml").write_text("agent: datahealth\n")
    write_agent_set(host_dir, AGENTS)
    config = proxy_config(host_id, host_dir, allow_loopback_registry=True)
    runner, proxy, port = await start(config, "127.0.0.1", 0)
    engine = aiodocker.Docker(url=f"unix://{SOCKET}")
    network_existed = await _network_exists(engine)
    http = aiohttp.ClientSession(
        base_url=f"http://127.0.0.1:{port}", timeout=aiohttp.ClientTimeout(total=120)
    )
    via_proxy = aiodocker.Docker(url=f"tcp://127.0.0.1:{port}")
    state = Live(host_id, host_dir, port, http, via_proxy, engine, proxy)
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


async def _denied(response: aiohttp.ClientResponse, status: int = 403) -> str:
    body = await _json(response)
    assert response.status == status, (response.status, body)
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


async def test_a_container_the_proxy_created_is_not_inspected_again_before_each_call(
    live: Live, monkeypatch: pytest.MonkeyPatch
):
    """Labels never change: what the proxy created under the policy, named by its full id, is
    acted on at once; a container made around the proxy, even with this host's labels, and any
    call by name are still inspected first."""
    inspected: list[str] = []
    check = live.proxy._check_target

    async def counting(decision: Any, version: Any) -> Any:
        inspected.append(decision.target)
        return await check(decision, version)

    monkeypatch.setattr(live.proxy, "_check_target", counting)
    await ensure_job_network(live.via_proxy)
    name, run_id, body = live.plan_and_body({"DEMO_SLEEP_SECONDS": "0", "DEMO_LOG_LINES": "2"})
    created = await containers.create(live.via_proxy, name, body)
    assert created is not None
    await containers.start(live.via_proxy, created)
    info = await containers.inspect_ours(live.via_proxy, created, live.host_id, run_id)
    assert info is not None and info["Id"] == created
    assert inspected == []  # start and inspect by id: no inspect first
    assert await containers.inspect_ours(live.via_proxy, name, live.host_id, run_id) is not None
    assert inspected == [name]  # by name: a name can be taken again after a removal
    await containers.remove(live.via_proxy, created)
    assert await live.state(created) is None
    assert created not in live.proxy._created  # removed: forgotten

    labels = {LABEL_MANAGED: "true", LABEL_HOST_ID: live.host_id, LABEL_RUN_ID: "around-1"}
    around = await live.direct_container(f"bigeye-job-around-{run_id}", labels, run=False)
    await containers.start(live.via_proxy, around)
    assert inspected[-1] == around  # not created through the proxy: inspected first
    denied = {LABEL_MANAGED: "true", LABEL_HOST_ID: "another-host"}
    foreign = await live.direct_container(f"bigeye-job-foreign-{run_id}", denied, run=False)
    with pytest.raises(aiodocker.DockerError) as refused:
        await containers.start(live.via_proxy, foreign)
    assert refused.value.status == 403
    assert (await live.state(foreign) or {}).get("Status") == "created"


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
        assert "duplicate key" in await _denied(response, 400)
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
    dangling_before = {
        i["Id"] for i in await live.engine.images.list(filters={"dangling": ["true"]})
    }
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
    # other test files build and remove images meanwhile: look at what these calls would touch
    images_after = await live.engine.images.list()
    tags_after = {tag for i in images_after for tag in i.get("RepoTags") or []}
    assert not {t for t in tags_after if t.split(":")[0].startswith("proxytest-")}, tags_after
    assert f"{DEMO_IMAGE}" in tags_after  # not deleted
    assert dangling_before <= {i["Id"] for i in images_after}  # not pruned
    volumes_after = {v["Name"] for v in (await live.engine.volumes.list())["Volumes"] or []}
    assert volume not in volumes_after and volumes_before <= volumes_after
    with pytest.raises(aiodocker.DockerError):
        await live.engine.networks.get("proxytest-net")


async def test_a_pull_of_an_agents_image_is_forwarded_to_the_engine(live: Live):
    with TestRegistry() as registry:
        digest = registry.add_image(DEMO_IMAGE, "proxytest/agent", "t1")
        image = f"{registry.address}/proxytest/agent:t1"
        pinned = f"{registry.address}/proxytest/agent@{digest}"
        live.set_agents({"datahealth": {"image": image}, "lineage_plus": {"image": pinned}})
        try:
            pulled = await Puller(live.via_proxy).ensure(image, None, lambda _: None)
            assert pulled.image_id.startswith("sha256:")
            # By digest: only because an agent's image is that digest.
            await Puller(live.via_proxy).ensure(pinned, None, lambda _: None)
            other_tag = registry.add_image(DEMO_IMAGE, "proxytest/agent", "t2")
            assert other_tag == digest
            before = len(registry.requests)
            for params in (
                {"fromImage": f"{registry.address}/proxytest/agent", "tag": "t2"},
                {"fromImage": f"{registry.address}/proxytest/agent"},  # every tag
                {"fromImage": f"{registry.address}/proxytest/other", "tag": "t1"},
                {"fromImage": f"{registry.address}/proxytest/agent", "tag": "sha256:" + "0" * 64},
            ):
                async with live.http.post("/v1.41/images/create", params=params) as response:
                    await _denied(response)
            assert len(registry.requests) == before  # nothing reached the registry
            assert (
                await inspect_image(live.engine, f"{registry.address}/proxytest/agent:t2") is None
            )
        finally:
            for ref in (image, pinned, f"{registry.address}/proxytest/agent:t2"):
                remove_local_image(ref)


async def test_a_loopback_registry_is_refused_unless_allowed(live: Live, tmp_path: Path):
    with TestRegistry() as registry:
        registry.add_image(DEMO_IMAGE, "proxytest/agent", "t1")
        image = f"{registry.address}/proxytest/agent:t1"
        live.set_agents({"datahealth": {"image": image}})
        strict = proxy_config(live.host_id, live.host_dir)  # no allow_loopback_registry
        runner, proxy, port = await start(strict, "127.0.0.1", 0)
        try:
            async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
                params = {"fromImage": f"{registry.address}/proxytest/agent", "tag": "t1"}
                async with http.post("/v1.41/images/create", params=params) as response:
                    why = await _denied(response)
                assert "loopback" in why and "BIGEYE_PROXY_ALLOW_LOOPBACK_REGISTRY=1" in why
            assert registry.requests == []
            assert await inspect_image(live.engine, image) is None
        finally:
            await runner.cleanup()
            await proxy.close()


async def test_only_the_agents_images_are_pulled_or_inspected(live: Live):
    others = ("alpine:latest", "bigeye-demo-agent:latest", "127.0.0.1:1/proxytest/nothing:x")
    present = {ref: await inspect_image(live.engine, ref) for ref in others}
    # Local images that are not an agent's: an inspect would show their Env.
    for name in (PROXY_IMAGE, "bigeyedata/agent-orchestrator:dev", "sha256:" + "0" * 64):
        async with live.http.get(f"/v1.41/images/{name}/json") as response:
            await _denied(response)
    for ref in others:
        repository, _, tag = ref.rpartition(":")
        params = {"fromImage": repository, "tag": tag}
        async with live.http.post("/v1.41/images/create", params=params) as response:
            await _denied(response)
    assert {ref: await inspect_image(live.engine, ref) for ref in others} == present
    info = await inspect_image(live.via_proxy, DEMO_IMAGE)  # the agent's image: fine
    assert info is not None and info.image_id.startswith("sha256:")


async def test_the_agent_set_is_re_read_when_the_file_changes(live: Live):
    async def inspect_status(image: str) -> int:
        async with live.http.get(f"/v1.41/images/{image}/json") as response:
            await response.read()
            return response.status

    assert await inspect_status(DEMO_IMAGE) == 200
    live.set_agents({"datahealth": {"image": PROXY_IMAGE}})
    await async_wait_for(lambda: _status_is(inspect_status, DEMO_IMAGE, 403), 5, "the new set")
    assert await inspect_status(PROXY_IMAGE) == 200
    # A broken file keeps the last good agent set.
    (live.host_dir / "bigeye_agent.yml").write_text("agents: {datahealth: {image: [broken\n")
    assert await inspect_status(PROXY_IMAGE) == 200  # read again at once: its stat changed
    assert await inspect_status(DEMO_IMAGE) == 403
    live.set_agents(AGENTS)
    await async_wait_for(lambda: _status_is(inspect_status, DEMO_IMAGE, 200), 5, "the old set")


async def _status_is(probe: Any, image: str, status: int) -> bool:
    return bool(await probe(image) == status)


async def test_creates_are_held_to_the_agents_entry_and_change_nothing(live: Live):
    await ensure_job_network(live.via_proxy)
    live.set_agents({**AGENTS, "lineage_plus": {"image": DEMO_IMAGE, "memory": "64m"}})
    name, _, body = live.plan_and_body()
    hc = body["HostConfig"]
    missing_dir = live.host_dir / "agent_config" / "lineage_plus"
    lp_name, _, lp_body = live.plan_and_body(agent="lineage_plus")
    bad: dict[str, tuple[str, dict[str, Any]]] = {
        "compose label": (name, {**body, "Labels": {**body["Labels"],
                                                    "com.docker.compose.project": "x"}}),
        "traefik label": (name, {**body, "Labels": {**body["Labels"], "traefik.enable": "true"}}),
        "agent_config": (name, {**body, "HostConfig": {
            **hc, "Binds": [f"{live.host_dir}/agent_config:/app/config:ro"]}}),
        "mtls.key": (name, {**body, "HostConfig": {
            **hc, "Binds": [f"{live.host_dir}/agent_config/mtls.key:/app/config:ro"]}}),
        "memory": (name, {**body, "HostConfig": {**hc, "Memory": 2**40, "MemorySwap": 2**40}}),
        "log size": (name, {**body, "HostConfig": {**hc, "LogConfig": {
            "Type": "json-file", "Config": {"max-size": "100g", "max-file": "3"}}}}),
        "other image": (name, {**body, "Image": PROXY_IMAGE}),
        "missing config dir": (lp_name, lp_body),
    }  # fmt: skip
    (live.host_dir / "agent_config" / "mtls.key").write_text("secret")
    for label, (container, payload) in bad.items():
        async with live.http.post(
            "/v1.41/containers/create", params={"name": container}, json=payload
        ) as response:
            why = await _denied(response)
        assert await live.state(container) is None, label
        if label == "missing config dir":
            assert "does not exist" in why
    assert not missing_dir.exists()  # the engine did not create it (as root)
    missing_dir.mkdir()
    async with live.http.post(
        "/v1.41/containers/create", params={"name": lp_name}, json=lp_body
    ) as response:
        assert response.status == 201, await response.text()


async def test_every_request_goes_upstream_under_the_proxys_api_version(live: Live):
    engine_version = (await live.engine.version())["ApiVersion"]
    fixed = live.proxy.api_version
    assert fixed is not None and f"{fixed[0]}.{fixed[1]}" <= engine_version
    major, minor = (int(part) for part in engine_version.split("."))
    newer = f"/v{major}.{minor + 1}"
    # The engine itself refuses a version newer than its own...
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=SOCKET)) as direct:
        async with direct.get(f"http://docker{newer}/version") as response:
            assert response.status == 400, await response.text()
    # ...through the proxy the client's version is never the one sent upstream.
    async with live.http.get(f"{newer}/version") as response:
        assert response.status == 200
    await ensure_job_network(live.via_proxy)
    name, _, body = live.plan_and_body()
    async with live.http.post(
        f"{newer}/containers/create", params={"name": name}, json=body
    ) as response:
        assert response.status == 201, await response.text()
    name, _, body = live.plan_and_body()
    for old in ("/v1.24", "/v1.40"):
        async with live.http.get(f"{old}/_ping") as response:
            assert "API version below" in await _denied(response)
        async with live.http.post(
            f"{old}/containers/create", params={"name": name}, json=body
        ) as response:
            await _denied(response)
    assert await live.state(name) is None


async def test_lists_are_filtered_by_label_only(live: Live):
    foreign = f"proxytest-foreign-{uuid.uuid4().hex[:8]}"
    await live.direct_container(foreign, {}, run=False)
    for key in ("before", "since", "id", "name", "ancestor", "volume", "network", "status"):
        filters = json.dumps({key: [foreign]})
        async with live.http.get(
            "/v1.41/containers/json", params={"all": "1", "filters": filters}
        ) as response:
            assert "label only" in await _denied(response)
    await ensure_job_network(live.via_proxy)
    async with live.http.get(f"/v1.41/networks/{JOB_NETWORK}") as response:
        network = await _json(response)
    assert network["Name"] == JOB_NETWORK and "Containers" not in network


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


async def test_a_body_trickled_too_slowly_gets_408_and_the_connection_closed(live: Live):
    name, _, body = live.plan_and_body()
    data = json.dumps(body).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    began = time.monotonic()
    try:
        writer.write(
            f"POST /v1.41/containers/create?name={name} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        )
        answer = b""
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    answer += await reader.read(4096)
            if answer or time.monotonic() - began > BODY_TIMEOUT + 10:
                break
        async with asyncio.timeout(10):
            answer += await reader.read(-1)  # the proxy closes the connection
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert BODY_TIMEOUT - 1 <= time.monotonic() - began <= BODY_TIMEOUT + 10
    assert await live.state(name) is None


async def test_a_head_trickled_too_slowly_gets_408_and_the_connection_closed(live: Live):
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    began = time.monotonic()
    try:
        writer.write(b"GET /v1.41/_ping HTTP/1.1\r\nHost: x\r\n")
        answer = b""
        while not answer and time.monotonic() - began < HEAD_TIMEOUT + 10:
            writer.write(b"X-Slow: 1\r\n")
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    answer = await reader.read(-1)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - began <= HEAD_TIMEOUT + 5


async def test_connections_beyond_the_cap_get_503_until_one_closes(live: Live, tmp_path: Path):
    config = proxy_config(live.host_id, live.host_dir, max_connections=4)
    runner, proxy, port = await start(config, "127.0.0.1", 0)
    held = []
    try:
        for _ in range(4):  # idle keep-alive connections, as a client pool holds them
            held.append(await asyncio.open_connection("127.0.0.1", port))
        # Accepted in order: the fifth is the one over the cap.
        status, data = await _raw(port, b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 503, data[:300]
        assert b"too many connections" in data
        held.pop()[1].close()

        async def answered() -> bool:
            ping = b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            return (await _raw(port, ping))[0] == 200

        await async_wait_for(answered, 5, "a connection once one closed")
    finally:
        for _, writer in held:
            writer.close()
        await runner.cleanup()
        await proxy.close()


@pytest.mark.parametrize("digits", [20, 5000])
async def test_huge_integers_and_broken_bodies_are_bad_requests(live: Live, digits: int):
    name, _, body = live.plan_and_body()
    text = json.dumps(body).replace('"PidsLimit": 512', f'"PidsLimit": {"9" * digits}')
    async with live.http.post(
        f"/v1.41/containers/create?name={name}",
        data=text,
        headers={"Content-Type": "application/json"},
    ) as response:
        assert "64 bits" in await _denied(response, 400)
    head = (
        f"POST /v1.41/containers/create?name={name} HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    status, data = await _raw(live.port, head + b"zz\r\n{}\r\n0\r\n\r\n")
    assert status == 400, data[:300]
    assert await live.state(name) is None


async def test_form_encoded_bodies_are_denied(live: Live):
    # Go's ParseForm would read a urlencoded body's fields ahead of the query string.
    async with live.http.post(
        "/v1.41/images/create?fromImage=alpine",
        data=b"fromSrc=-&repo=proxytest-x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ) as response:
        assert "Content-Type" in await _denied(response)
