"""The HTTP API's auth, roles and error shapes, without Temporal (aiohttp's test server)."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from devcloud import db, keys, pki
from devcloud.api import ApiContext, build_app

CA = pki.new_ca("account CA")
ORCH = "/api/v1/agent-orchestrator"


@pytest.fixture
async def api(tmp_path):
    conn = db.connect(tmp_path)
    trusted: list[str] = []
    ctx = ApiContext(
        conn=conn,
        client=None,  # type: ignore[arg-type]  # these paths never reach Temporal
        temporal_address="host.docker.internal:7443",
        namespace="default",
        server_name="host.docker.internal",
        server_ca_pem="SERVER CA",
        on_trusted_ca=trusted.append,
    )
    client = TestClient(TestServer(build_app(ctx)))
    await client.start_server()
    client.keys = {role: keys.create_key(conn, role) for role in ("admin", "member")}
    client.trusted = trusted
    yield client
    await client.close()
    conn.close()


def auth(api, role):
    return {"Authorization": f"apikey {api.keys[role]}"}


def body(host_id="h1", instance_id="i1"):
    return {
        "host_id": host_id,
        "instance_id": instance_id,
        "managed_agents": ["datahealth"],
        "client_cert_pem": pki.issue_leaf(CA, host_id, server=False).cert_pem,
        "client_ca_pem": CA.cert_pem,
    }


async def test_missing_or_unknown_key_is_401_with_a_message(api):
    for headers in ({}, {"Authorization": "apikey nope"}, {"Authorization": "Bearer x"}):
        response = await api.get("/api/v1/personal-api-keys/verify", headers=headers)
        assert response.status == 401
        assert "API key" in (await response.json())["message"]


async def test_member_gets_403_where_admin_is_needed(api):
    admin_only = [
        ("POST", f"{ORCH}/hosts"),
        ("POST", f"{ORCH}/runs"),
        ("PUT", f"{ORCH}/hosts/h1/agents"),
        ("POST", f"{ORCH}/runs/r/cancel"),
    ]
    for method, path in admin_only:
        response = await api.request(method, path, json={}, headers=auth(api, "member"))
        assert response.status == 403, path
    response = await api.get(f"{ORCH}/hosts", headers=auth(api, "member"))
    assert response.status == 200 and await response.json() == []


async def test_register_then_agents_and_account(api):
    response = await api.post(f"{ORCH}/hosts", json=body(), headers=auth(api, "admin"))
    assert response.status == 200
    answer = await response.json()
    assert answer["server_ca_pem"] == "SERVER CA"
    assert answer["temporal"]["address"] == "host.docker.internal:7443"
    assert api.trusted == [CA.cert_pem]  # the front is told once
    response = await api.post(f"{ORCH}/hosts", json=body(), headers=auth(api, "admin"))
    assert response.status == 200 and api.trusted == [CA.cert_pem]
    response = await api.post(f"{ORCH}/hosts", json=body(instance_id="i2"),
                              headers=auth(api, "admin"))  # fmt: skip
    assert response.status == 409
    assert await response.json() == {"message": "Host is already registered"}

    agents = {"managed_agents": ["lineage_plus"], "installed_agents": ["sds"]}
    response = await api.put(f"{ORCH}/hosts/h1/agents", headers=auth(api, "admin"), json=agents)
    assert await response.json() == {
        "host_id": "h1", "health": "no_data", "last_heartbeat_at": None,
        "managed_agents": ["lineage_plus"], "installed_agents": ["sds"],
        "orchestrator_version": None, "last_status": None,
    }  # fmt: skip
    response = await api.put(f"{ORCH}/hosts/h1/agents", headers=auth(api, "admin"),
                             json={"managed_agents": ["datahealth"]})  # fmt: skip
    assert (await response.json())["installed_agents"] == ["sds"], "left as they were"
    agents = {"managed_agents": [], "installed_agents": ["lineage"]}
    response = await api.put(f"{ORCH}/hosts/h1/agents", headers=auth(api, "admin"), json=agents)
    assert response.status == 400, "only persistent agents are installed-not-managed"
    response = await api.put(f"{ORCH}/hosts/nope/agents", headers=auth(api, "admin"),
                             json={"managed_agents": []})  # fmt: skip
    assert response.status == 404
    response = await api.get(f"{ORCH}/account", headers=auth(api, "member"))
    assert (await response.json())["hosts"] == 1


async def test_bad_bodies_are_400_with_one_line(api):
    response = await api.post(f"{ORCH}/hosts", data=b"{", headers=auth(api, "admin"))
    assert response.status == 400 and "JSON" in (await response.json())["message"]
    response = await api.post(f"{ORCH}/hosts", json=[1], headers=auth(api, "admin"))
    assert response.status == 400
    response = await api.post(f"{ORCH}/hosts", json={**body(), "managed_agents": ["x"]},
                              headers=auth(api, "admin"))  # fmt: skip
    message = (await response.json())["message"]
    assert response.status == 400 and "managed_agents" in message and "\n" not in message


async def test_runs_need_a_known_host_that_manages_the_agent(api):
    await api.post(f"{ORCH}/hosts", json=body(), headers=auth(api, "admin"))
    response = await api.post(f"{ORCH}/runs", headers=auth(api, "admin"),
                              json={"host_id": "h9", "agent": "datahealth"})  # fmt: skip
    assert response.status == 400 and "unknown host h9" in (await response.json())["message"]
    response = await api.post(f"{ORCH}/runs", headers=auth(api, "admin"),
                              json={"host_id": "h1", "agent": "lineage_plus"})  # fmt: skip
    assert response.status == 400
    assert "does not manage agent lineage_plus" in (await response.json())["message"]
    response = await api.get(f"{ORCH}/runs/nope", headers=auth(api, "admin"))
    assert response.status == 404 and await response.json() == {"message": "unknown run nope"}


async def test_unknown_path_is_a_json_404(api):
    response = await api.get("/api/v1/nothing", headers=auth(api, "admin"))
    assert response.status == 404 and "message" in await response.json()
