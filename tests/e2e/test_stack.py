"""The compose stack as customers run it: orchestrator in its container, Docker only through
the body-checking socket proxy, on networks that keep job containers away from the proxy."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
import time
import uuid
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
    assert [m["Source"] for m in proxy["Mounts"]] == ["/var/run/docker.sock"]
    assert proxy["Mounts"][0]["RW"] is False
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
