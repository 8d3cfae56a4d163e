"""The operator's migration against devcloud, with real Docker and Compose: register, compose,
sync, more hosts, mTLS, upgrade and rollback."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.conftest import DEMO_IMAGE, OPERATOR_UID, Cloud, HostDir, run
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

KEY_FILES = ("mtls.pem", "mtls.key", "mtls_ca.pem", "mtls_ca.key")
NOT_ENABLED = "Docker Compose mode is not enabled — re-run bigeye-agent register"

EXISTING_CONFIG = """\
# Bigeye agent configuration — maintained by the data platform team
company_uuid: 7c1d4e2a   # do not change
   # odd indentation below is on purpose
data_source:
    type: snowflake
    account:  "acme.eu-west-1"   # two spaces
    warehouse: 'COMPUTE_WH'

lineage:
  connectors: [snowflake, tableau]
"""


def snapshot(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def host_health(cloud: Cloud, host_id: str) -> str | None:
    for host in cloud.hosts():
        if host["host_id"] == host_id:
            return str(host["health"])
    return None


def become_healthy(cloud: Cloud, host: HostDir) -> None:
    wait_for(host.healthy, 120, f"{host.host_id}'s stack to be healthy")
    wait_for(lambda: host_health(cloud, host.host_id) == "healthy", 90, "a heartbeat")


def foreign_client_cert(directory: Path) -> None:
    """A client certificate and key from a CA the account never trusted."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "someone else's CA")])
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intruder")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "mtls.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "mtls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@pytest.fixture
def fresh_cloud(make_cloud: Any) -> Cloud:
    """An account with no orchestrator host yet."""
    return make_cloud()


def test_fresh_host_generates_keys_comes_up_healthy_and_runs_a_job(
    fresh_cloud: Cloud, make_host_dir: Any
) -> None:
    host = make_host_dir(cloud=fresh_cloud)
    done = host.register(f"datahealth={DEMO_IMAGE}")
    assert done.returncode == 0, done.stdout + done.stderr
    agent_config = host.path / "agent_config"
    for name in (*KEY_FILES, "bigeye_workflows_ca.pem"):
        assert (agent_config / name).is_file(), name
    assert (agent_config / "mtls.key").stat().st_mode & 0o777 == 0o600
    assert (agent_config / "mtls_ca.key").stat().st_mode & 0o777 == 0o600
    assert "compose status" in done.stdout and "compose logs" in done.stdout

    become_healthy(fresh_cloud, host)
    code, body, err = fresh_cloud.run_job(host.host_id, "datahealth", "file_name=fresh.yml")
    assert code == 0, err
    assert body is not None and body["status"] == "succeeded", body

    status = host.agent_cli("compose", "status")
    assert status.returncode == 0 and "bigeye-agent-orchestrator" in status.stdout
    logs = host.agent_cli("compose", "logs", "-s", "bigeye-agent-orchestrator")
    assert logs.returncode == 0 and "connected to Temporal" in logs.stdout


def test_existing_host_keeps_its_keys_and_every_other_byte(
    fresh_cloud: Cloud, make_host_dir: Any
) -> None:
    first = make_host_dir(cloud=fresh_cloud)
    assert first.register(f"datahealth={DEMO_IMAGE}").returncode == 0
    host = make_host_dir(cloud=fresh_cloud)
    shutil.copytree(first.path / "agent_config", host.path / "agent_config")
    (host.path / "bigeye_agent.yml").write_text(EXISTING_CONFIG)
    keys_before = {n: (host.path / "agent_config" / n).read_bytes() for n in KEY_FILES}

    done = host.register(f"external_monitors={DEMO_IMAGE}")
    assert done.returncode == 0, done.stdout + done.stderr

    assert {n: (host.path / "agent_config" / n).read_bytes() for n in KEY_FILES} == keys_before
    backups = list(host.path.glob("bigeye_agent.yml.bak-*"))
    assert len(backups) == 1 and backups[0].read_text() == EXISTING_CONFIG
    after = (host.path / "bigeye_agent.yml").read_text()
    assert after.startswith(EXISTING_CONFIG.rstrip("\n")), "the operator's lines are untouched"
    added = after[len(EXISTING_CONFIG.rstrip("\n")) :]
    assert "docker_compose_enabled: true" in added and host.host_id in added
    assert "company_uuid" not in added and "data_source" not in added
    become_healthy(fresh_cloud, host)
    code, body, _ = fresh_cloud.run_job(host.host_id, "external_monitors", "connector=dbt")
    assert code == 0 and body is not None and body["status"] == "succeeded", body


def test_more_hosts_share_the_account_keys_and_ids_are_unique(
    fresh_cloud: Cloud, make_host_dir: Any
) -> None:
    first = make_host_dir(cloud=fresh_cloud)
    assert first.register(f"datahealth={DEMO_IMAGE}").returncode == 0

    second = make_host_dir(cloud=fresh_cloud)
    before = snapshot(second.path)
    refused = second.register(f"datahealth={DEMO_IMAGE}")
    assert refused.returncode == 1
    assert "copy the agent_config/ directory from a registered host" in refused.stderr
    assert snapshot(second.path) == before, "nothing written"

    shutil.copytree(first.path / "agent_config", second.path / "agent_config")
    done = second.register(f"datahealth={DEMO_IMAGE}")
    assert done.returncode == 0, done.stdout + done.stderr
    become_healthy(fresh_cloud, second)
    code, body, _ = fresh_cloud.run_job(second.host_id, "datahealth", "file_name=second.yml")
    assert code == 0 and body is not None and body["status"] == "succeeded", body

    third = make_host_dir(first.host_id, cloud=fresh_cloud)
    shutil.copytree(first.path / "agent_config", third.path / "agent_config")
    clash = third.register(f"datahealth={DEMO_IMAGE}")
    assert clash.returncode == 1
    assert "Host is already registered" in clash.stderr


@pytest.mark.parametrize("host_id", ["", "h" * 257, "prod_agent", "prod agent"])
def test_invalid_host_ids_are_refused_before_anything_is_written(
    cloud: Cloud, make_host_dir: Any, host_id: str
) -> None:
    host = make_host_dir()
    host.host_id = host_id
    (host.path / "bigeye_agent.yml").write_text(EXISTING_CONFIG)
    before = snapshot(host.path)
    done = host.register(f"datahealth={DEMO_IMAGE}")
    assert done.returncode in (1, 2)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert snapshot(host.path) == before


def test_a_member_key_is_refused_before_anything_is_written(
    cloud: Cloud, make_host_dir: Any
) -> None:
    host = make_host_dir()
    (host.path / "bigeye_agent.yml").write_text(EXISTING_CONFIG)
    before = snapshot(host.path)
    done = host.register(f"datahealth={DEMO_IMAGE}", BIGEYE_API_KEY=cloud.key("member"))
    assert done.returncode == 1
    assert "admin" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert snapshot(host.path) == before


def test_compose_commands_before_register_say_how_to_enable(
    cloud: Cloud, make_host_dir: Any
) -> None:
    host = make_host_dir()
    (host.path / "bigeye_agent.yml").write_text(EXISTING_CONFIG)
    for command in (["status"], ["logs"], ["up"], ["down"], ["upgrade"]):
        done = host.agent_cli("compose", *command)
        assert done.returncode == 1
        assert NOT_ENABLED in done.stderr, done.stderr


def test_mtls_refuses_foreign_or_missing_client_certificates(
    fresh_cloud: Cloud, make_host_dir: Any
) -> None:
    host = make_host_dir(cloud=fresh_cloud)
    assert host.register(f"datahealth={DEMO_IMAGE}").returncode == 0
    become_healthy(fresh_cloud, host)

    # no client certificate at all: the front's handshake fails
    server_ca = host.path / "agent_config" / "bigeye_workflows_ca.pem"
    front_port = int(fresh_cloud.endpoints["temporal_address"].rsplit(":", 1)[1])
    assert not handshake_without_client_cert(front_port, server_ca)

    # a certificate from another CA: the orchestrator says so and keeps retrying
    foreign_client_cert(host.path / "agent_config")
    shutil.chown(host.path / "agent_config" / "mtls.key", OPERATOR_UID, OPERATOR_UID)
    shutil.chown(host.path / "agent_config" / "mtls.pem", OPERATOR_UID, OPERATOR_UID)
    since = time.time()
    assert host.compose("restart", "bigeye-agent-orchestrator").returncode == 0

    def retries() -> list[dict[str, Any]]:
        out = host.compose(
            "logs", "--no-log-prefix", "--since", f"{since:.0f}", "bigeye-agent-orchestrator"
        ).stdout
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        failures = [e for e in lines if e.get("event") == "cannot connect to Temporal; retrying"]
        at_ceiling = [f for f in failures if f["retry_in_seconds"] >= 30]
        return failures if at_ceiling else []

    # one line when it starts failing, one when the backoff reaches its ceiling (and one per
    # change of error): not one per attempt
    failures = wait_for(retries, 90, "the retries to reach the backoff ceiling")
    assert all("\n" not in f["error"] for f in failures)
    assert failures[0]["attempts"] == 1 and failures[0]["retry_in_seconds"] == 1
    attempts = [f["attempts"] for f in failures]
    delays = [f["retry_in_seconds"] for f in failures]
    assert attempts == sorted(attempts) and delays == sorted(delays), failures
    assert len(failures) < attempts[-1], f"one line per state change, not per attempt: {failures}"


def test_upgrade_mid_job_keeps_the_job_and_trigger_rules_hold(
    cloud: Cloud, make_host_dir: Any
) -> None:
    host = make_host_dir(cloud=cloud, first_host_keys=True)
    assert host.register(f"datahealth={DEMO_IMAGE}").returncode == 0
    become_healthy(cloud, host)
    # a slow job: the orchestrator re-reads the agent set for every job
    config_path = host.path / "bigeye_agent.yml"
    config = yaml.safe_load(config_path.read_text())
    config["agents"]["datahealth"]["env"] = {"DEMO_SLEEP_SECONDS": "12"}
    config_path.write_text(yaml.safe_dump(config))

    since = time.time() - 1
    code, body, err = cloud.run_job(host.host_id, "datahealth", "file_name=up.yml", wait=False)
    assert code == 0 and body is not None, err
    run_id = body["run_id"]
    again, _, again_err = cloud.run_job(host.host_id, "datahealth", "file_name=up.yml", wait=False)
    assert again == 1 and "active run" in again_err

    wait_for(lambda: host.job_containers(), 60, "the job container")
    upgrade = host.agent_cli("compose", "upgrade")
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    finished = wait_for(lambda: finished_run(cloud, run_id), 120, "the run to finish")
    assert finished["status"] == "succeeded", finished
    created = run([
        "docker", "events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}",
        "--filter", "event=create", "--filter", f"label=com.bigeye.orchestrator.run-id={run_id}",
        "--format", "{{.ID}}",
    ]).stdout.split()  # fmt: skip
    assert len(created) == 1, created

    code, body, _ = cloud.run_job(host.host_id, "datahealth", "file_name=c.yml", wait=False)
    assert code == 0 and body is not None
    wait_for(lambda: host.job_containers(), 60, "the second job's container")
    assert cloud.cli("cancel", "--run", body["run_id"]).returncode == 0
    canceled = wait_for(lambda: finished_run(cloud, body["run_id"]), 60, "the cancel")
    assert canceled["status"] == "canceled"
    wait_for(lambda: not host.job_containers(), 30, "the container to be removed")


def handshake_without_client_cert(port: int, server_ca: Path) -> bool:
    """True when the front completes a TLS session for a client that shows no certificate."""
    context = ssl.create_default_context(cafile=str(server_ca))
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="host.docker.internal") as tls:
                # TLS 1.3 reports a refused client certificate on the first read
                tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                return bool(tls.recv(1))
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return False


def finished_run(cloud: Cloud, run_id: str) -> dict[str, Any] | None:
    done = cloud.cli("runs", "--json")
    for item in json.loads(done.stdout or "[]"):
        if item["run_id"] == run_id and item["status"] not in ("queued", "running"):
            return dict(item)
    return None


def test_rollback_restores_the_host(cloud: Cloud, make_host_dir: Any) -> None:
    host = make_host_dir(cloud=cloud, first_host_keys=True)
    (host.path / "bigeye_agent.yml").write_text(EXISTING_CONFIG)
    assert host.register(f"datahealth={DEMO_IMAGE}").returncode == 0
    wait_for(host.healthy, 120, "the stack")

    assert host.agent_cli("compose", "down").returncode == 0
    backup = next(host.path.glob("bigeye_agent.yml.bak-*"))
    shutil.copyfile(backup, host.path / "bigeye_agent.yml")

    assert (host.path / "bigeye_agent.yml").read_text() == EXISTING_CONFIG
    left = run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={host.project}"]
    )
    assert left.stdout.split() == []
    assert host.job_containers() == []
    after = host.agent_cli("compose", "status")
    assert after.returncode == 1 and NOT_ENABLED in after.stderr
