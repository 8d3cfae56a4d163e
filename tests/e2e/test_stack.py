"""The compose stack as customers run it: orchestrator in its container, Docker only through
the body-checking socket proxy, on networks that keep job containers away from the proxy."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import textwrap
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import DEMO_IMAGE, OPERATOR_UID, Cloud, HostDir, run
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

AGENTS = (
    f"lineage_plus={DEMO_IMAGE}",
    f"datahealth={DEMO_IMAGE}",
    f"external_monitors={DEMO_IMAGE}",
)


@pytest.fixture(scope="module")
def stack(cloud: Cloud, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One registered host shared by the tests of this module (bringing a stack up is slow)."""
    path = tmp_path_factory.mktemp("stack-host")
    os.chown(path, OPERATOR_UID, OPERATOR_UID)
    if cloud.agent_config is not None:
        shutil.copytree(cloud.agent_config, path / "agent_config")
        run(["chown", "-R", f"{OPERATOR_UID}:{OPERATOR_UID}", str(path)])
    host = HostDir(
        f"e2e-stack-{uuid.uuid4().hex[:6]}",
        path,
        f"bigeye-{uuid.uuid4().hex[:8]}",
        cloud.endpoints["api_url"],
        cloud.key("admin"),
        cloud,
    )
    done = host.register(*AGENTS)
    assert done.returncode == 0, done.stdout + done.stderr
    wait_for(host.healthy, 120, "the stack to be healthy")
    # A slow agent for the restart test: the orchestrator re-reads the agent set for every job.
    config_path = host.path / "bigeye_agent.yml"
    config = yaml.safe_load(config_path.read_text())
    config["agents"]["external_monitors"]["env"] = {"DEMO_SLEEP_SECONDS": "10"}
    config_path.write_text(yaml.safe_dump(config))
    yield host
    host.compose("down", "--remove-orphans", "-t", "5")
    leftovers = host.job_containers()
    if leftovers:
        run(["docker", "rm", "-f", *leftovers])


def in_orchestrator(host: Any, script: str) -> Any:
    """Runs Python inside the orchestrator container: the only place the proxy is reachable."""
    cid = host.container_id("bigeye-agent-orchestrator")
    done = run(["docker", "exec", "-i", cid, "python3", "-"], input=textwrap.dedent(script))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_stack_services_are_hardened(stack: Any) -> None:
    orch = json.loads(
        run(["docker", "inspect", stack.container_id("bigeye-agent-orchestrator")]).stdout
    )[0]
    proxy = json.loads(
        run(["docker", "inspect", stack.container_id("docker-socket-proxy")]).stdout
    )[0]
    assert orch["Config"]["User"] == f"{OPERATOR_UID}:{OPERATOR_UID}"
    assert orch["HostConfig"]["ReadonlyRootfs"] is True
    assert orch["HostConfig"]["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in orch["HostConfig"]["SecurityOpt"]
    assert orch["Config"]["Env"].count("DOCKER_HOST=tcp://docker-socket-proxy:2375") == 1
    assert not any(m["Destination"] == "/var/run/docker.sock" for m in orch["Mounts"])
    mounts = {m["Destination"]: m for m in proxy["Mounts"]}
    assert set(mounts) == {"/var/run/docker.sock", "/etc/bigeye"}
    assert mounts["/var/run/docker.sock"]["Source"] == "/var/run/docker.sock"
    assert mounts["/etc/bigeye"]["Source"] == str(stack.path)  # the agent set
    assert not any(m["RW"] for m in proxy["Mounts"])
    assert proxy["Config"]["User"] == f"{OPERATOR_UID}:{OPERATOR_UID}"  # never root
    assert proxy["HostConfig"]["ReadonlyRootfs"] is True
    assert set(proxy["NetworkSettings"]["Networks"]) == {f"{stack.project}_orchestrator-internal"}
    # and from the inside: not root, and the root filesystem refuses writes
    cid = stack.container_id("bigeye-agent-orchestrator")
    assert run(["docker", "exec", cid, "id", "-u"]).stdout.strip() == str(OPERATOR_UID)
    assert run(["docker", "exec", cid, "touch", "/opt/bigeye/x"]).returncode != 0


@pytest.mark.parametrize(
    ("agent", "params", "argv"),
    [
        ("lineage_plus", ["connectors=snowflake"], "lineage run -c snowflake"),
        ("datahealth", ["file_name=health.yml"], "datahealth run --file-name health.yml"),
        ("external_monitors", ["connector=dbt"], "external-monitors run -c dbt"),
    ],
)
def test_each_agent_type_runs_through_the_stack(
    stack: Any, cloud: Cloud, agent: str, params: list[str], argv: str
) -> None:
    code, body, err = cloud.run_job(stack.host_id, agent, *params)
    assert code == 0, err
    assert body is not None and body["status"] == "succeeded", body
    assert f"demo-agent argv: {argv}" in body["result"]["log_tail"]
    assert stack.job_containers() == []


def test_the_proxy_denies_what_the_orchestrator_never_needs(stack: Any) -> None:
    statuses = in_orchestrator(
        stack,
        """
        import json, http.client
        def call(method, path, body=None):
            conn = http.client.HTTPConnection("docker-socket-proxy", 2375, timeout=10)
            headers = {"Content-Type": "application/json"} if body is not None else {}
            data = None if body is None else json.dumps(body)
            conn.request(method, path, body=data, headers=headers)
            return conn.getresponse().status
        print(json.dumps({
            "ping": call("GET", "/_ping"),
            "exec": call("POST", "/containers/docker-socket-proxy/exec", {"Cmd": ["sh"]}),
            "build": call("POST", "/build"),
            "import": call("POST", "/images/create?fromSrc=-&repo=evil"),
            "volume": call("POST", "/volumes/create", {"Name": "evil"}),
            "prune": call("POST", "/containers/prune"),
            "privileged": call("POST", "/containers/create?name=evil", {
                "Image": "bigeye-demo-agent:dev", "HostConfig": {"Privileged": True}}),
            "inspect_proxy": call("GET", "/containers/docker-socket-proxy/json"),
        }))
        """,
    )
    assert statuses.pop("ping") == 200
    assert statuses == {k: 403 for k in statuses}, statuses


def test_job_containers_cannot_reach_the_proxy(stack: Any) -> None:
    proxy_id = stack.container_id("docker-socket-proxy")
    proxy = json.loads(run(["docker", "inspect", proxy_id]).stdout)[0]
    proxy_ip = proxy["NetworkSettings"]["Networks"][f"{stack.project}_orchestrator-internal"][
        "IPAddress"
    ]
    probe = textwrap.dedent(
        f"""
        import json, socket
        out = {{}}
        try:
            socket.getaddrinfo("docker-socket-proxy", 2375)
            out["resolves"] = True
        except OSError:
            out["resolves"] = False
        try:
            socket.create_connection(("{proxy_ip}", 2375), timeout=3).close()
            out["connects"] = True
        except OSError:
            out["connects"] = False
        print(json.dumps(out))
        """
    )
    done = run([
        "docker", "run", "--rm", "--network", "bigeye-jobs", "--entrypoint", "python3",
        DEMO_IMAGE, "-c", probe,
    ])  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"resolves": False, "connects": False}


def test_the_proxy_has_no_route_out(stack: Any) -> None:
    """Traffic that must leave `orchestrator-internal` (here, to a listener on another Docker
    network that a peer there reaches) goes nowhere. Docker's internal networks still let a
    container reach the host's own addresses; deploy/socket-proxy/README.md says so."""
    network = f"bigeye-e2e-out-{uuid.uuid4().hex[:6]}"
    assert run(["docker", "network", "create", network]).returncode == 0
    listener = run([
        "docker", "run", "-d", "--rm", "--network", network, "--entrypoint", "python3",
        DEMO_IMAGE, "-c",
        "import socket,time\ns=socket.socket();s.bind(('0.0.0.0',8080));s.listen()\n"
        "while True: s.accept()[0].close()",
    ]).stdout.strip()  # fmt: skip
    try:
        address = json.loads(run(["docker", "inspect", listener]).stdout)[0]["NetworkSettings"][
            "Networks"
        ][network]["IPAddress"]
        probe = textwrap.dedent(
            f"""
            import socket
            try:
                socket.create_connection(("{address}", 8080), timeout=3).close()
                print("connected")
            except OSError:
                print("unreachable")
            """
        )
        peer = run([
            "docker", "run", "--rm", "-i", "--network", network, "--entrypoint", "python3",
            DEMO_IMAGE, "-",
        ], input=probe)  # fmt: skip
        proxy = run(
            ["docker", "exec", "-i", stack.container_id("docker-socket-proxy"), "python3", "-"],
            input=probe,
        )
        assert (peer.stdout.strip(), proxy.stdout.strip()) == ("connected", "unreachable")
    finally:
        run(["docker", "rm", "-f", listener])
        run(["docker", "network", "rm", network])


def test_orchestrator_restart_mid_job_keeps_the_job(stack: Any, cloud: Cloud) -> None:
    since = time.time() - 1
    code, body, err = cloud.run_job(
        stack.host_id, "external_monitors", "connector=slow", wait=False
    )
    assert code == 0, err
    run_id = body["run_id"] if body else ""
    wait_for(lambda: stack.job_containers(), 60, "the job container")
    assert stack.compose("restart", "bigeye-agent-orchestrator").returncode == 0
    wait_for(stack.healthy, 120, "the orchestrator to be healthy again")
    done = cloud.cli("runs", "--json")
    finished = wait_for(
        lambda: next(
            (
                r
                for r in json.loads(cloud.cli("runs", "--json").stdout)
                if r["run_id"] == run_id and r["status"] not in ("queued", "running")
            ),
            None,
        ),
        120,
        "the run to finish",
    )
    assert done.returncode == 0
    assert finished["status"] == "succeeded", finished
    events = run([
        "docker", "events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}",
        "--filter", "event=create", "--filter", f"label=com.bigeye.orchestrator.run-id={run_id}",
        "--format", "{{.ID}}",
    ]).stdout.split()  # fmt: skip
    assert len(events) == 1, events
    assert stack.job_containers() == []


def single_deviations(body: dict[str, Any], host_dir: str) -> dict[str, dict[str, Any]]:
    """Create bodies that differ from a compliant one by exactly one thing."""
    hc = body["HostConfig"]
    source = hc["Binds"][0].split(":")[0]

    def with_hc(**changes: Any) -> dict[str, Any]:
        return {**body, "HostConfig": {**hc, **changes}}

    labels = dict(body["Labels"])
    del labels["com.bigeye.orchestrator.managed"]
    return {
        "privileged": with_hc(Privileged=True),
        "pid-host": with_hc(PidMode="host"),
        "ipc-host": with_hc(IpcMode="host"),
        "net-host": with_hc(NetworkMode="host"),
        "userns-host": with_hc(UsernsMode="host"),
        "pid-container": with_hc(PidMode="container:docker-socket-proxy"),
        "net-container": with_hc(NetworkMode="container:docker-socket-proxy"),
        "cap-add": with_hc(CapAdd=["SYS_ADMIN"]),
        "devices": with_hc(
            Devices=[
                {
                    "PathOnHost": "/dev/sda",
                    "PathInContainer": "/dev/sda",
                    "CgroupPermissions": "rwm",
                }
            ]
        ),
        "bind-socket": with_hc(Binds=["/var/run/docker.sock:/app/config:ro"]),
        "bind-root": with_hc(Binds=["/:/app/config:ro"]),
        "bind-etc": with_hc(Binds=["/etc:/app/config:ro"]),
        "bind-rw": with_hc(Binds=[f"{source}:/app/config:rw"]),
        "bind-outside": with_hc(Binds=["/tmp:/app/config:ro"]),
        "mounts": with_hc(Mounts=[{"Type": "bind", "Source": "/", "Target": "/host"}]),
        "volumes-from": with_hc(VolumesFrom=["docker-socket-proxy"]),
        "internal-network": with_hc(NetworkMode="orchestrator-internal"),
        "other-host": {
            **body,
            "Labels": {**body["Labels"], "com.bigeye.orchestrator.host-id": "other-host"},
        },
        "unmanaged": {**body, "Labels": labels},
        "lowercase-privileged": with_hc(privileged=True),
    }


def test_the_proxy_denies_every_single_deviation_from_a_compliant_create(stack: Any) -> None:
    from orchestrator.hostconfig import load_host_config
    from orchestrator.version import VERSION
    from tests.bodies import plan_for

    host = load_host_config(stack.path / "bigeye_agent.yml")
    request = {"job_id": "e2e-proxy", "run_id": uuid.uuid4().hex[:8], "agent": "datahealth",
               "parameters": {"file_name": "x.yml"}}  # fmt: skip
    plan = plan_for(host, request, host_id=stack.host_id, host_dir=str(stack.path), version=VERSION)
    body = plan.create_body
    if run(["docker", "network", "inspect", "bigeye-jobs"]).returncode != 0:
        network = ["docker", "network", "create", "--label", "com.bigeye.orchestrator.managed=true"]
        run([*network, "bigeye-jobs"])
    cases: list[tuple[str, str]] = []
    for label, bad in single_deviations(body, str(stack.path)).items():
        cases.append((label, json.dumps(bad)))
        cases.append(
            (label + "/spaced-reordered", json.dumps(dict(reversed(bad.items())), indent=3))
        )
    cases.append(("compliant", json.dumps(body)))
    cases.append(("compliant/spaced-reordered", json.dumps(dict(reversed(body.items())), indent=3)))
    statuses = in_orchestrator(
        stack,
        f"""
        import json, http.client
        cases = json.loads({json.dumps(json.dumps(cases))})
        out = {{}}
        for label, text in cases:
            conn = http.client.HTTPConnection("docker-socket-proxy", 2375, timeout=20)
            conn.request("POST", "/containers/create?name={plan.container_name}", body=text,
                         headers={{"Content-Type": "application/json"}})
            response = conn.getresponse()
            answer = json.loads(response.read() or b"{{}}")
            out[label] = response.status
            if response.status == 201:
                conn = http.client.HTTPConnection("docker-socket-proxy", 2375, timeout=20)
                conn.request("DELETE", "/containers/" + answer["Id"] + "?force=true")
                conn.getresponse().read()
        print(json.dumps(out))
        """,
    )
    assert statuses.pop("compliant") == 201
    assert statuses.pop("compliant/spaced-reordered") == 201
    assert statuses == {label: 403 for label in statuses}, statuses
    assert len(statuses) == 40
    assert stack.job_containers() == []


# ---- the deployed proxy and the agent set (deploy/socket-proxy/README.md) --------------------

PROXY_IMAGE = "bigeyedata/agent-docker-socket-proxy:dev"
PARAMETERS = {
    "lineage_plus": {"connectors": ["snowflake"]},
    "datahealth": {"file_name": "probe.yml"},
    "external_monitors": {"connector": "dbt"},
}
# Runs inside the orchestrator's container: each call's status, message and how long it took.
CALLS = """
import http.client, json, sys, time
out = []
for method, path, body, headers in json.loads(sys.stdin.readline()):
    began = time.monotonic()
    conn = http.client.HTTPConnection("docker-socket-proxy", 2375, timeout=60)
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    try:
        message = json.loads(data).get("message") if data.startswith(b"{") else None
    except ValueError:
        message = None
    text = data[:65536].decode(errors="replace")
    out.append([response.status, message, round(time.monotonic() - began, 2), text])
    conn.close()
print(json.dumps(out))
"""


def proxy_calls(stack: Any, *calls: tuple[str, str, Any]) -> list[tuple[int, str | None, str]]:
    """(status, the proxy's message or None, body text) of each (method, path, body) call."""
    requests = []
    for method, path, body in calls:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        text = body if isinstance(body, str) or body is None else json.dumps(body)
        requests.append([method, path, text, headers])
    cid = stack.container_id("bigeye-agent-orchestrator")
    done = run(
        ["docker", "exec", "-i", cid, "python3", "-c", CALLS], input=json.dumps(requests) + "\n"
    )
    assert done.returncode == 0, done.stderr
    return [(status, message, text) for status, message, _, text in json.loads(done.stdout)]


def proxy_log(stack: Any, since: float) -> list[dict[str, Any]]:
    done = run(
        ["docker", "logs", "--since", f"{since:.3f}", stack.container_id("docker-socket-proxy")]
    )
    events = []
    for line in (done.stdout + done.stderr).splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


def write_agent_set(stack: Any, config: dict[str, Any] | str) -> None:
    """bigeye_agent.yml replaced atomically, owned by the operator, as `sync` writes it."""
    path = stack.path / "bigeye_agent.yml"
    tmp = path.with_name(".bigeye_agent.yml.e2e")
    tmp.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    os.chown(tmp, OPERATOR_UID, OPERATOR_UID)
    os.replace(tmp, path)


@contextlib.contextmanager
def changed_agent_set(stack: Any, change: Callable[[dict[str, Any]], None]) -> Iterator[None]:
    original = (stack.path / "bigeye_agent.yml").read_text()
    config = yaml.safe_load(original)
    change(config)
    write_agent_set(stack, config)
    try:
        yield
    finally:
        write_agent_set(stack, original)


def agent_body(stack: Any, agent: str, run_id: str | None = None) -> tuple[str, dict[str, Any]]:
    """(container name, the orchestrator's own create body) for a run of `agent` on the stack."""
    from orchestrator.hostconfig import load_host_config
    from orchestrator.version import VERSION
    from tests.bodies import plan_for

    host = load_host_config(stack.path / "bigeye_agent.yml")
    request = {"job_id": "e2e-probe", "run_id": run_id or uuid.uuid4().hex[:8], "agent": agent,
               "parameters": PARAMETERS[agent]}  # fmt: skip
    plan = plan_for(host, request, host_id=stack.host_id, host_dir=str(stack.path), version=VERSION)
    return plan.container_name, plan.create_body


def exists(ref: str, kind: str = "container") -> bool:
    return run(["docker", kind, "inspect", ref]).returncode == 0


def ensure_job_network() -> None:
    if run(["docker", "network", "inspect", "bigeye-jobs"]).returncode != 0:
        network = ["docker", "network", "create", "--label", "com.bigeye.orchestrator.managed=true"]
        run([*network, "bigeye-jobs"])


def test_each_agents_own_calls_pass_the_deployed_proxy(stack: Any) -> None:
    """create, start, logs, wait, inspect, remove of every agent's body — the compliant calls."""
    ensure_job_network()
    for agent in PARAMETERS:
        name, body = agent_body(stack, agent)
        ((created, _, text),) = proxy_calls(
            stack, ("POST", f"/containers/create?name={name}", body)
        )
        assert created == 201, (agent, text)
        container = json.loads(text)["Id"]
        statuses = proxy_calls(
            stack,
            ("POST", f"/v1.41/containers/{container}/start", None),
            ("POST", f"/v1.41/containers/{name}/wait?condition=not-running", None),
            ("GET", f"/v1.41/containers/{name}/logs?stdout=1&stderr=1&tail=all", None),
            ("GET", f"/v1.41/containers/{name}/json", None),
            ("GET", f"/v1.41/images/{body['Image']}/json", None),
            ("DELETE", f"/v1.41/containers/{container}?force=true&v=true", None),
        )
        assert [s for s, _, _ in statuses] == [204, 200, 200, 200, 200, 204], (agent, statuses)
        assert json.loads(statuses[1][2])["StatusCode"] == 0
        assert "demo-agent argv:" in statuses[2][2]
        assert json.loads(statuses[3][2])["HostConfig"]["LogConfig"]["Config"] == {
            "max-size": "10m",
            "max-file": "3",
        }
        assert not exists(container)


def test_the_proxy_reads_the_agent_set_and_follows_its_changes(stack: Any) -> None:
    since = time.time() - 1

    def inspect_statuses() -> list[int]:
        calls = [("GET", f"/images/{image}/json", None) for image in (DEMO_IMAGE, PROXY_IMAGE)]
        return [status for status, _, _ in proxy_calls(stack, *calls)]

    assert inspect_statuses() == [200, 403]

    def swap(config: dict[str, Any]) -> None:
        for entry in config["agents"].values():
            entry["image"] = PROXY_IMAGE

    with changed_agent_set(stack, swap):
        assert inspect_statuses() == [403, 200]  # re-read on the next request
        # A broken file keeps the last good agent set, and says so once.
        write_agent_set(stack, "agents:\n  datahealth: {image: [unclosed\n")
        assert inspect_statuses() == [403, 200]
        assert inspect_statuses() == [403, 200]
    assert inspect_statuses() == [200, 403]
    events = proxy_log(stack, since)
    broken = [e for e in events if "cannot be used" in e["event"]]
    assert len(broken) == 1 and "keeping the last agent set read" in broken[0]["event"], events
    assert sum(e["event"] == "agent set read" for e in events) == 2


def test_only_the_agents_images_are_pulled_inspected_or_created(stack: Any) -> None:
    from tests.registry import TestRegistry, remove_local_image

    with TestRegistry() as registry:
        registry.add_image(DEMO_IMAGE, "e2e/agent", "t1")
        loopback = f"{registry.address}/e2e/agent:t1"
        name, body = agent_body(stack, "datahealth")

        def on_loopback(config: dict[str, Any]) -> None:
            config["agents"]["lineage_plus"]["image"] = loopback

        since = time.time() - 1
        with changed_agent_set(stack, on_loopback):
            lp_name, lp_body = agent_body(stack, "lineage_plus")
            results = proxy_calls(
                stack,
                ("POST", f"/images/create?fromImage={registry.address}/e2e/agent&tag=t1", None),
                ("GET", f"/images/{loopback}/json", None),
                ("POST", f"/containers/create?name={lp_name}", lp_body),
                ("POST", "/images/create?fromImage=alpine&tag=latest", None),
                ("POST", f"/images/create?fromImage={registry.address}/e2e/other&tag=t1", None),
                ("POST", "/images/create?fromImage=bigeye-demo-agent", None),  # every tag
                ("GET", f"/images/{PROXY_IMAGE}/json", None),  # its Env, for one
                ("GET", "/images/bigeyedata/agent-orchestrator:dev/json", None),
                ("POST", f"/containers/create?name={name}", {**body, "Image": PROXY_IMAGE}),
            )
            refused = [e for e in proxy_log(stack, since) if e["event"] == "agent refused"]
        assert [status for status, _, _ in results] == [403] * len(results), results
        for _, message, _ in results[:3]:
            assert message and "loopback" in message, message
        assert refused and "BIGEYE_PROXY_ALLOW_LOOPBACK_REGISTRY=1" in refused[0]["reason"]
        assert registry.requests == []  # nothing reached the registry
        assert not exists(loopback, "image") and not exists(
            f"{registry.address}/e2e/other:t1", "image"
        )
        assert not exists(name) and not exists(lp_name)
        # The engine itself would have pulled it: the proxy is what stopped it.
        try:
            assert run(["docker", "pull", "-q", loopback]).returncode == 0
            assert registry.requests
        finally:
            remove_local_image(loopback)


def test_binds_labels_limits_and_logs_are_held_to_the_agents_entry(stack: Any) -> None:
    ensure_job_network()
    name, body = agent_body(stack, "datahealth")
    hc, labels = body["HostConfig"], body["Labels"]
    key_dir = f"{stack.path}/agent_config"

    def with_hc(**changes: Any) -> dict[str, Any]:
        return {**body, "HostConfig": {**hc, **changes}}

    def logs(**options: str) -> dict[str, Any]:
        return with_hc(LogConfig={"Type": "json-file", "Config": options})

    bodies = {
        "agent_config": with_hc(Binds=[f"{key_dir}:/app/config:ro"]),
        "mtls.key": with_hc(Binds=[f"{key_dir}/mtls.key:/app/config:ro"]),
        "another agent's dir": with_hc(Binds=[f"{key_dir}/lineage_plus:/app/config:ro"]),
        "missing dir": with_hc(Binds=[f"{key_dir}/e2e-missing:/app/config:ro"]),
        "compose label": {**body, "Labels": {**labels, "com.docker.compose.project": "x"}},
        "compose service": {**body, "Labels": {**labels, "com.docker.compose.service": "sds"}},
        "traefik label": {**body, "Labels": {**labels, "traefik.enable": "true"}},
        "memory": with_hc(Memory=2**40, MemorySwap=2**40),
        "cpus": with_hc(NanoCpus=64 * 10**9),
        "pids": with_hc(PidsLimit=2**22),
        "log size": logs(**{"max-size": "100g", "max-file": "3"}),
        "log files": logs(**{"max-size": "10m", "max-file": "999"}),
        "log unbounded": logs(),
    }  # fmt: skip
    results = proxy_calls(
        stack, *[("POST", f"/containers/create?name={name}", bad) for bad in bodies.values()]
    )
    statuses = dict(zip(bodies, [status for status, _, _ in results], strict=True))
    assert statuses == {label: 403 for label in bodies}, results
    assert not exists(name)

    # An agent whose config directory does not exist: denied, and the engine does not create it.
    missing = stack.path / "agent_config" / "e2e-missing"

    def elsewhere(config: dict[str, Any]) -> None:
        config["agents"]["datahealth"]["config_dir"] = "agent_config/e2e-missing"

    with changed_agent_set(stack, elsewhere):
        name, body = agent_body(stack, "datahealth")
        ((status, message, _),) = proxy_calls(
            stack, ("POST", f"/containers/create?name={name}", body)
        )
    assert status == 403 and message and "does not exist" in message, message
    assert not missing.exists() and not exists(name)


def test_api_versions_and_list_filters(stack: Any) -> None:
    ensure_job_network()
    name, body = agent_body(stack, "datahealth")
    results = proxy_calls(
        stack,
        ("GET", "/v1.24/containers/json", None),
        ("GET", "/v1.40/_ping", None),
        ("POST", f"/v1.30/containers/create?name={name}", body),
        ("GET", "/v1.99/version", None),  # the engine would answer 400: too new
        ("GET", "/_ping", None),
        ("GET", "/version", None),
    )
    assert [status for status, _, _ in results] == [403, 403, 403, 200, 200, 200], results
    assert not exists(name)
    assert run(["docker", "version"]).returncode == 0

    foreign = json.loads(
        run(["docker", "inspect", stack.container_id("docker-socket-proxy")]).stdout
    )[0]
    filters = [
        {"before": [foreign["Id"]]}, {"since": [foreign["Id"]]}, {"id": [foreign["Id"]]},
        {"name": [foreign["Name"].lstrip("/")]}, {"ancestor": [PROXY_IMAGE]},
        {"volume": ["/var/run/docker.sock"]}, {"network": ["bridge"]}, {"status": ["running"]},
    ]  # fmt: skip
    calls = [
        ("GET", "/containers/json?all=1&filters=" + urllib.parse.quote(json.dumps(f)), None)
        for f in filters
    ]
    own = {"label": ["com.bigeye.orchestrator.managed=true"]}
    calls.append(
        ("GET", "/containers/json?all=1&filters=" + urllib.parse.quote(json.dumps(own)), None)
    )
    calls.append(("GET", "/networks/bigeye-jobs", None))
    results = proxy_calls(stack, *calls)
    assert [status for status, _, _ in results] == [403] * len(filters) + [200, 200], results
    assert all("label only" in (message or "") for _, message, _ in results[: len(filters)])
    assert all(c["Labels"]["com.bigeye.orchestrator.host-id"] == stack.host_id
               for c in json.loads(results[-2][2]))  # fmt: skip
    assert "Containers" not in json.loads(results[-1][2])


SLOW = """
import json, socket, sys, time
mode = sys.argv[1]
s = socket.create_connection(("docker-socket-proxy", 2375), timeout=30)
began = time.monotonic()
if mode == "body":
    s.sendall(b"POST /containers/create?name=bigeye-job-slow-loris HTTP/1.1\\r\\nHost: x\\r\\n"
              b"Content-Type: application/json\\r\\nContent-Length: 100000\\r\\n\\r\\n{")
else:
    s.sendall(b"GET /_ping HTTP/1.1\\r\\n")
s.settimeout(0.5)
answer = b""
while time.monotonic() - began < 25:
    try:
        s.sendall(b" " if mode == "body" else b"X-Slow: 1\\r\\n")
    except OSError:
        break
    try:
        chunk = s.recv(65536)
    except socket.timeout:
        continue
    except OSError:
        break
    if not chunk:
        break
    answer += chunk
print(json.dumps({"answer": answer.decode(errors="replace"), "after": time.monotonic() - began}))
"""

CROWD = """
import http.client, json, socket, time
held = [socket.create_connection(("docker-socket-proxy", 2375), timeout=10) for _ in range(70)]
conn = http.client.HTTPConnection("docker-socket-proxy", 2375, timeout=10)
conn.request("GET", "/_ping")
crowded = conn.getresponse()
crowded_status, crowded_body = crowded.status, crowded.read().decode()
for s in held:
    s.close()
deadline = time.monotonic() + 10
while True:
    try:
        conn = http.client.HTTPConnection("docker-socket-proxy", 2375, timeout=10)
        conn.request("GET", "/_ping")
        after = conn.getresponse().status
    except OSError:
        after = 0
    if after == 200 or time.monotonic() > deadline:
        break
    time.sleep(0.2)
print(json.dumps({"crowded": crowded_status, "body": crowded_body, "after": after}))
"""


def in_orchestrator_argv(stack: Any, script: str, *args: str) -> dict[str, Any]:
    cid = stack.container_id("bigeye-agent-orchestrator")
    done = run(["docker", "exec", cid, "python3", "-c", script, *args])
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_slow_crowded_and_malformed_requests(stack: Any) -> None:
    body = in_orchestrator_argv(stack, SLOW, "body")
    assert body["answer"].startswith("HTTP/1.1 408"), body
    assert 9 <= body["after"] <= 20, body  # 10 s, then the connection is closed
    head = in_orchestrator_argv(stack, SLOW, "head")
    assert head["answer"].startswith("HTTP/1.1 408"), head
    assert 9 <= head["after"] <= 20, head
    assert not exists("bigeye-job-slow-loris")

    crowd = in_orchestrator_argv(stack, CROWD)
    assert crowd["crowded"] == 503 and "too many connections" in crowd["body"], crowd
    assert crowd["after"] == 200, crowd

    name, good = agent_body(stack, "datahealth")
    text = json.dumps(good)
    create = f"/containers/create?name={name}"
    pids = '"PidsLimit": 512'
    results = proxy_calls(
        stack,
        ("POST", create, text.replace(pids, '"PidsLimit": ' + "9" * 5000)),
        ("POST", create, text.replace(pids, '"PidsLimit": 1e3')),
        ("POST", create, text[:-1]),
        ("POST", create, '{"HostConfig": {}, "hostconfig": {}}'),
        ("POST", "/networks/create", '{"Name": "bigeye-jobs", "x": ' + "1" * 30 + "}"),
        ("GET", "/containers/json?filters=" + urllib.parse.quote("{" * 100), None),
    )  # fmt: skip
    assert [status for status, _, _ in results] == [400] * len(results), results
    assert not exists(name)
    assert proxy_calls(stack, ("GET", "/_ping", None))[0][0] == 200  # the proxy is still fine


def test_the_proxy_image_holds_only_what_the_proxy_runs() -> None:
    probe = (
        "import importlib.util as u, json; print(json.dumps([n for n in ('temporalio', "
        "'aiodocker', 'prometheus_client', 'cryptography', 'devcloud', 'workflows', "
        "'bigeye_agent', 'yaml', 'pydantic', 'aiohttp', 'structlog') if u.find_spec(n)]))"
    )
    done = run(["docker", "run", "--rm", "--entrypoint", "python3", PROXY_IMAGE, "-c", probe])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["yaml", "pydantic", "aiohttp", "structlog"]
