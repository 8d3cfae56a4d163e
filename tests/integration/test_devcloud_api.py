"""`bigeye-cloud-dev server` for real: HTTP API, mTLS front, AgentHeartbeat worker, restart.

One server process on a temporary state directory serves the whole module; the tests run in
file order and build on each other (keys → registration → front → heartbeat → runs → restart).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from temporalio.client import Client
from temporalio.service import TLSConfig

from tests.integration.conftest import DEMO_IMAGE, Host, containers_of_host

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS_FRAME = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
HOST_ID = "it-dc-host-01"


# ---- certificates, made here with cryptography (not with devcloud's own helpers) -----------


@dataclass
class Pair:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def key_pem(self) -> str:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    def files(self, directory: Path, name: str) -> tuple[Path, Path]:
        cert, key = directory / f"{name}.pem", directory / f"{name}.key"
        cert.write_text(self.cert_pem)
        key.write_text(self.key_pem)
        return cert, key


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str) -> Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Pair(cert, key)


def make_client(ca: Pair, cn: str) -> Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca.key, hashes.SHA256())
    )
    return Pair(cert, key)


# ---- the server process --------------------------------------------------------------------


@dataclass
class Cloud:
    state_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    log_paths: list[Path] = field(default_factory=list)
    endpoints: dict[str, Any] = field(default_factory=dict)
    ca = make_ca("account CA")
    client = make_client(ca, HOST_ID)

    def start(self) -> None:
        log_path = self.state_dir.parent / f"server-{len(self.log_paths)}.log"
        self.log_paths.append(log_path)
        with open(log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [str(BIN / "bigeye-cloud-dev"), "server", "--state-dir", str(self.state_dir)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        endpoints = self.state_dir / "endpoints.json"
        deadline = time.monotonic() + 90
        while not endpoints.exists():
            assert self.proc.poll() is None, f"server exited: {self.logs()[-2000:]}"
            assert time.monotonic() < deadline, "server not ready in 90 s"
            time.sleep(0.2)
        self.endpoints = json.loads(endpoints.read_text())

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(40)

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.log_paths if p.exists())

    @property
    def api(self) -> str:
        return str(self.endpoints["api_url"])

    @property
    def front_port(self) -> int:
        return int(self.endpoints["temporal_address"].rsplit(":", 1)[1])

    @property
    def devcloud_ca_pem(self) -> str:
        return (self.state_dir / "devcloud_ca.pem").read_text()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [str(BIN / "bigeye-cloud-dev"), *args, "--state-dir", str(self.state_dir)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    cloud = Cloud(tmp_path_factory.mktemp("devcloud") / "state")
    cloud.start()
    yield cloud
    if cloud.proc is not None and cloud.proc.poll() is None:
        cloud.stop()


@pytest.fixture(scope="module")
def admin_key(cloud: Cloud) -> str:
    out = cloud.cli("keys", "create", "--role", "admin")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture(scope="module")
def member_key(cloud: Cloud) -> str:
    return cloud.cli("keys", "create", "--role", "member").stdout.strip()


def http(method: str, url: str, key: str | None = None, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if key is not None:
        request.add_header("Authorization", f"apikey {key}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    return status, (json.loads(text) if text.strip() else None)


def registration(cloud: Cloud, **overrides: Any) -> dict[str, Any]:
    return {
        "host_id": HOST_ID,
        "instance_id": "instance-a",
        "managed_agents": ["datahealth"],
        "client_cert_pem": cloud.client.cert_pem,
        "client_ca_pem": cloud.ca.cert_pem,
        "cli_version": "0.1.0",
        **overrides,
    }


ORCH = "/api/v1/agent-orchestrator"


def tls_exchange(cloud: Cloud, tmp: Path, pair: Pair | None) -> tuple[str | None, bytes]:
    """A TLS client (ALPN h2) through the front on 127.0.0.1: (ALPN chosen, first bytes back).

    Sends the HTTP/2 preface and an empty SETTINGS frame: the dev server answers with its own
    SETTINGS frame. A rejected client certificate raises ssl.SSLError or reads nothing.
    """
    context = ssl.create_default_context(cadata=cloud.devcloud_ca_pem)
    context.set_alpn_protocols(["h2"])
    if pair is not None:
        cert, key = pair.files(tmp, f"client-{uuid.uuid4().hex[:6]}")
        context.load_cert_chain(cert, key)
    with socket.create_connection(("127.0.0.1", cloud.front_port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="host.docker.internal") as tls:
            tls.sendall(H2_PREFACE + EMPTY_SETTINGS_FRAME)
            return tls.selected_alpn_protocol(), tls.recv(9)


def assert_rejected(cloud: Cloud, tmp: Path, pair: Pair | None) -> None:
    try:
        _, data = tls_exchange(cloud, tmp, pair)
    except (ssl.SSLError, ConnectionError):
        return
    assert data == b"", "the front accepted a client it must reject"


def signal_heartbeat(client: Client, host_id: str, status: Any) -> Any:
    return client.start_workflow(
        "AgentHeartbeat",
        {"host_id": host_id},
        id=f"agent-heartbeat-{host_id}",
        task_queue="bigeye-control-plane",
        start_signal="heartbeat",
        start_signal_args=[status],
    )


def host_status(host_id: str) -> dict[str, Any]:
    return {
        "host_id": host_id,
        "sent_at": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
        "orchestrator_version": "0.1.0",
        "build_id": "test",
        "managed_agents": ["datahealth"],
        "running_runs": [],
        "docker": {"reachable": True, "version": "20.10"},
        "worker": {"polling": True, "slots_used": 0, "slots_max": 8},
    }


def hosts_json(cloud: Cloud) -> list[dict[str, Any]]:
    out = cloud.cli("hosts", "--json")
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout))


async def tls_client(cloud: Cloud, pair: Pair) -> Client:
    return await Client.connect(
        f"127.0.0.1:{cloud.front_port}",
        tls=TLSConfig(
            server_root_ca_cert=cloud.devcloud_ca_pem.encode(),
            domain="host.docker.internal",
            client_cert=pair.cert_pem.encode(),
            client_private_key=pair.key_pem.encode(),
        ),
    )


# ---- the tests, in order -------------------------------------------------------------------


def test_endpoints_and_key_files(cloud: Cloud) -> None:
    endpoints = cloud.endpoints
    assert endpoints["api_url"].startswith("http://127.0.0.1:")
    assert endpoints["temporal_address"].startswith("host.docker.internal:")
    assert endpoints["temporal_plain_address"].startswith("127.0.0.1:")
    assert f"127.0.0.1:{cloud.front_port}" in endpoints["temporal_front_addresses"]
    assert (cloud.state_dir / "service.key").stat().st_mode & 0o777 == 0o600
    assert (cloud.state_dir / "cloud.db").exists()


def test_keys_verify_204_or_401(cloud: Cloud, admin_key: str, member_key: str) -> None:
    assert admin_key.startswith("bigeye_pak_") and "\n" not in admin_key
    verify = f"{cloud.api}/api/v1/personal-api-keys/verify"
    assert http("GET", verify, admin_key)[0] == 204
    assert http("GET", verify, member_key)[0] == 204
    assert http("GET", verify, "bigeye_pak_nope") == (
        401,
        {"message": "missing or unknown API key (Authorization: apikey <key>)"},
    )
    assert http("GET", verify)[0] == 401
    me = f"{cloud.api}/api/v1/personal-api-keys/me"
    assert http("GET", me, member_key) == (200, {"role": "member"})
    assert http("GET", me, admin_key) == (200, {"role": "admin"})
    # Only hashes are stored.
    assert admin_key.encode() not in (cloud.state_dir / "cloud.db").read_bytes()


def test_member_key_gets_403_on_register(cloud: Cloud, member_key: str) -> None:
    status, body = http("POST", f"{cloud.api}{ORCH}/hosts", member_key, registration(cloud))
    assert status == 403 and body["message"]


def test_no_account_ca_yet_every_handshake_fails(cloud: Cloud, tmp_path: Path) -> None:
    assert_rejected(cloud, tmp_path, cloud.client)


def test_register_first_host_trusts_its_ca(cloud: Cloud, admin_key: str) -> None:
    status, body = http("POST", f"{cloud.api}{ORCH}/hosts", admin_key, registration(cloud))
    assert status == 200, body
    assert body["host_id"] == HOST_ID
    assert body["temporal"] == {
        "address": cloud.endpoints["temporal_address"],
        "namespace": "default",
        "server_name": "host.docker.internal",
    }
    assert body["server_ca_pem"] == cloud.devcloud_ca_pem
    x509.load_pem_x509_certificate(body["server_ca_pem"].encode())
    der = cloud.ca.cert.public_bytes(serialization.Encoding.DER)
    status, account = http("GET", f"{cloud.api}{ORCH}/account", admin_key)
    assert account == {"hosts": 1, "client_ca_fingerprint": hashlib.sha256(der).hexdigest()}


def test_same_host_id_from_another_instance_is_409(cloud: Cloud, admin_key: str) -> None:
    other = registration(cloud, instance_id="instance-b")
    assert http("POST", f"{cloud.api}{ORCH}/hosts", admin_key, other) == (
        409,
        {"message": "Host is already registered"},
    )
    again = registration(cloud, managed_agents=["datahealth", "external_monitors"])
    assert http("POST", f"{cloud.api}{ORCH}/hosts", admin_key, again)[0] == 200
    [host] = hosts_json(cloud)
    assert host["managed_agents"] == ["datahealth", "external_monitors"]
    assert host["health"] == "no_data" and host["last_heartbeat_at"] is None


def test_other_ca_or_foreign_client_cert_is_400(cloud: Cloud, admin_key: str) -> None:
    rogue = make_ca("rogue CA")
    other_ca = registration(
        cloud,
        host_id="it-dc-host-02",
        client_ca_pem=rogue.cert_pem,
        client_cert_pem=make_client(rogue, "h2").cert_pem,
    )
    status, body = http("POST", f"{cloud.api}{ORCH}/hosts", admin_key, other_ca)
    assert status == 400 and "account CA" in body["message"]
    foreign_cert = registration(
        cloud, host_id="it-dc-host-02", client_cert_pem=make_client(rogue, "h2").cert_pem
    )
    status, body = http("POST", f"{cloud.api}{ORCH}/hosts", admin_key, foreign_cert)
    assert status == 400 and "account CA" in body["message"]
    status, body = http(
        "POST", f"{cloud.api}{ORCH}/hosts", admin_key, registration(cloud, host_id="bad_id!")
    )
    assert status == 400 and "host_id" in body["message"]


def test_front_handshake_with_the_account_cert_only(cloud: Cloud, tmp_path: Path) -> None:
    alpn, answer = tls_exchange(cloud, tmp_path, cloud.client)
    assert alpn == "h2"
    assert answer[3] == 0x04, f"expected the dev server's SETTINGS frame, got {answer!r}"

    def failures() -> list[dict[str, Any]]:
        lines = cloud.logs().splitlines()
        return [json.loads(line) for line in lines if '"front_handshake_failed"' in line]

    before = len(failures())
    assert_rejected(cloud, tmp_path, make_client(make_ca("rogue CA"), HOST_ID))
    assert_rejected(cloud, tmp_path, None)
    # the front logs a failed handshake as it happens, a moment after the client saw it fail
    deadline = time.monotonic() + 10
    while len(failures()) < before + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    logged = failures()[before:]
    assert len(logged) == 2, logged
    assert all(f["peer"].startswith("127.0.0.1:") and f["reason"] for f in logged)


async def test_temporal_client_through_the_front(cloud: Cloud) -> None:
    client = await tls_client(cloud, cloud.client)
    assert await client.count_workflows() is not None


async def test_heartbeat_makes_the_host_healthy(cloud: Cloud) -> None:
    client = await tls_client(cloud, cloud.client)
    await signal_heartbeat(client, HOST_ID, {"host_id": HOST_ID, "bogus": True})  # ignored
    await asyncio.sleep(1)
    assert hosts_json(cloud)[0]["health"] == "no_data"
    before = dt.datetime.now(dt.UTC)
    handle = await signal_heartbeat(client, HOST_ID, host_status(HOST_ID))
    deadline = time.monotonic() + 30
    while (host := hosts_json(cloud)[0])["health"] != "healthy":
        assert time.monotonic() < deadline, host
        await asyncio.sleep(0.3)
    received = dt.datetime.fromisoformat(host["last_heartbeat_at"].replace("Z", "+00:00"))
    assert before - dt.timedelta(seconds=1) <= received <= dt.datetime.now(dt.UTC)
    assert (await handle.describe()).status is not None
    assert "ignoring an invalid heartbeat" in cloud.logs()


def test_runs_go_through_the_host_and_agent_checks(cloud: Cloud, admin_key: str) -> None:
    runs = f"{cloud.api}{ORCH}/runs"
    status, body = http("POST", runs, admin_key, {"host_id": "nope", "agent": "datahealth"})
    assert status == 400 and "unknown host" in body["message"]
    status, body = http("POST", runs, admin_key, {"host_id": HOST_ID, "agent": "lineage_plus"})
    assert status == 400 and "does not manage agent lineage_plus" in body["message"]
    rejected = cloud.cli("run", "--host", HOST_ID, "--agent", "lineage_plus")
    assert rejected.returncode == 1 and "does not manage" in rejected.stderr

    # No orchestrator polls this host: the run stays queued.
    out = cloud.cli("run", "--host", HOST_ID, "--agent", "datahealth", "--param", "file_name=a.yml")
    assert out.returncode == 0, out.stderr
    run = json.loads(out.stdout)
    assert run["status"] == "queued" and run["job_id"] == f"{HOST_ID}-datahealth"
    again = cloud.cli("run", "--host", HOST_ID, "--agent", "datahealth")
    assert again.returncode == 1 and "active run" in again.stderr
    status, _ = http("POST", runs, admin_key, {"host_id": HOST_ID, "agent": "datahealth"})
    assert status == 409

    listed = json.loads(cloud.cli("runs", "--json").stdout)
    assert [(r["run_id"], r["status"]) for r in listed] == [(run["run_id"], "queued")]
    jobs = json.loads(cloud.cli("jobs", "--json").stdout)
    assert jobs == [
        {
            "job_id": f"{HOST_ID}-datahealth",
            "host_id": HOST_ID,
            "agent": "datahealth",
            "parameters": {"file_name": "a.yml"},
        }
    ]
    assert "queued" in cloud.cli("runs").stdout and HOST_ID in cloud.cli("hosts").stdout
    cancel = cloud.cli("cancel", "--run", run["run_id"])
    assert cancel.returncode == 0, cancel.stderr
    assert cloud.cli("cancel", "--run", "r-unknown").returncode == 1


async def test_restart_keeps_everything(
    cloud: Cloud, admin_key: str, member_key: str, tmp_path: Path
) -> None:
    before = dict(cloud.endpoints)
    hosts_before = hosts_json(cloud)
    runs_before = json.loads(cloud.cli("runs", "--json").stdout)
    cloud.stop()
    assert not (cloud.state_dir / "endpoints.json").exists()
    cloud.start()
    assert cloud.endpoints == before  # same ports, same addresses
    assert http("GET", f"{cloud.api}/api/v1/personal-api-keys/verify", admin_key)[0] == 204
    assert http("GET", f"{cloud.api}/api/v1/personal-api-keys/verify", member_key)[0] == 204
    assert hosts_json(cloud) == hosts_before
    assert json.loads(cloud.cli("runs", "--json").stdout) == runs_before
    # The trusted account CA is back in the front, and the same devcloud CA signs it.
    alpn, answer = tls_exchange(cloud, tmp_path, cloud.client)
    assert alpn == "h2" and answer[3] == 0x04
    client = await tls_client(cloud, cloud.client)
    await signal_heartbeat(client, HOST_ID, host_status(HOST_ID))


def test_an_orchestrator_through_the_front_runs_and_cancels_jobs(
    cloud: Cloud, docker_engine: None, tmp_path: Path
) -> None:
    """The whole path: API → Temporal → mTLS front → a real orchestrator → Docker, and back."""
    cert, key = cloud.client.files(tmp_path, "mtls")
    server_ca = tmp_path / "bigeye_workflows_ca.pem"
    server_ca.write_text(cloud.devcloud_ca_pem)
    directory = tmp_path / "host"
    directory.mkdir()
    host = Host(
        HOST_ID,
        directory,
        f"127.0.0.1:{cloud.front_port}",
        env_extra={
            "BIGEYE_TLS_CERT": str(cert),
            "BIGEYE_TLS_KEY": str(key),
            "BIGEYE_TLS_CA": str(server_ca),
            "BIGEYE_TLS_SERVER_NAME": "host.docker.internal",
        },
    )
    fast = {"DEMO_SLEEP_SECONDS": "0.5", "DEMO_LOG_LINES": "3"}
    host.write_config(
        {
            "datahealth": {"image": DEMO_IMAGE, "env": fast, "memory": "128m"},
            "external_monitors": {"image": DEMO_IMAGE, "memory": "128m",
                                  "env": {**fast, "DEMO_SLEEP_SECONDS": "120"}},
        }
    )  # fmt: skip
    last_seen = hosts_json(cloud)[0]["last_heartbeat_at"]

    def runs_json() -> dict[str, dict[str, Any]]:
        return {r["run_id"]: r for r in json.loads(cloud.cli("runs", "--json").stdout)}

    def wait_status(run_id: str, wanted: str, within: float) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while (run := runs_json()[run_id])["status"] != wanted:
            assert time.monotonic() < deadline, run
            time.sleep(0.5)
        return run

    host.start()
    try:
        # The run canceled while no orchestrator polled ends as canceled now that one does.
        [queued] = [r for r in runs_json().values() if r["job_id"] == f"{HOST_ID}-datahealth"]
        wait_status(queued["run_id"], "canceled", 60)

        out = cloud.cli("run", "--host", HOST_ID, "--agent", "datahealth", "--param",
                        "file_name=health.yml", "--wait")  # fmt: skip
        assert out.returncode == 0, out.stderr
        run = json.loads(out.stdout)
        assert run["status"] == "succeeded" and run["result"]["exit_code"] == 0, run
        assert "datahealth run --file-name health.yml" in run["result"]["log_tail"][0]

        out = cloud.cli("run", "--host", HOST_ID, "--agent", "external_monitors", "--param",
                        "connector=mc", "--job", "long-job")  # fmt: skip
        long_run = json.loads(out.stdout)["run_id"]
        wait_status(long_run, "running", 60)
        assert cloud.cli("cancel", "--run", long_run).returncode == 0
        canceled = wait_status(long_run, "canceled", 60)
        assert canceled["result"]["status"] == "canceled"

        # The orchestrator's own heartbeats arrive through the front.
        deadline = time.monotonic() + 45
        while (current := hosts_json(cloud)[0])["last_heartbeat_at"] == last_seen:
            assert time.monotonic() < deadline, current
            time.sleep(1)
        assert current["health"] == "healthy"
    finally:
        host.terminate()
        leftovers = containers_of_host(HOST_ID)
        if leftovers:
            subprocess.run(["docker", "rm", "-f", *leftovers], capture_output=True)


CONTAINER_PROBE = """
import socket, ssl, sys
port = int(sys.argv[1])
context = ssl.create_default_context(cafile="/certs/server_ca.pem")
context.set_alpn_protocols(["h2"])
context.load_cert_chain("/certs/client.pem", "/certs/client.key")
with socket.create_connection(("host.docker.internal", port), timeout=10) as raw:
    with context.wrap_socket(raw, server_hostname="host.docker.internal") as tls:
        tls.sendall(bytes.fromhex(sys.argv[2]))
        frame = tls.recv(9)
        print(tls.selected_alpn_protocol(), frame[3] if len(frame) > 3 else None)
"""


def test_a_container_reaches_the_front_as_host_docker_internal(
    cloud: Cloud, docker_engine: None, tmp_path: Path
) -> None:
    """From a network of its own, via `--add-host host.docker.internal:host-gateway`."""
    certs = tmp_path / "certs"
    certs.mkdir()
    cloud.client.files(certs, "client")
    (certs / "server_ca.pem").write_text(cloud.devcloud_ca_pem)
    for path in certs.iterdir():
        path.chmod(0o644)
    network = f"devcloud-it-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "network", "create", network], check=True, capture_output=True)
    try:
        out = subprocess.run(
            [
                "docker", "run", "--rm", "--network", network,
                "--add-host", "host.docker.internal:host-gateway",
                "-v", f"{certs}:/certs:ro", "--entrypoint", "python3", DEMO_IMAGE,
                "-c", CONTAINER_PROBE, str(cloud.front_port),
                (H2_PREFACE + EMPTY_SETTINGS_FRAME).hex(),
            ],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        subprocess.run(["docker", "network", "rm", network], capture_output=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["h2", "4"]  # ALPN h2, then the dev server's SETTINGS frame
