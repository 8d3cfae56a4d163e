"""cloud.db rows: hosts and the account CA, heartbeats, jobs and runs; small pure helpers."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta

import pytest

from devcloud import db, hosts, jobs, pki, tables
from devcloud.docker_bridge import gateway_of
from devcloud.front import describe_failure

CA = pki.new_ca("account CA")


@pytest.fixture
def conn(tmp_path):
    connection = db.connect(tmp_path)
    yield connection
    connection.close()


def registration(host_id="h1", instance_id="i1", agents=("datahealth",), ca=CA):
    return hosts.RegisterHost.model_validate(
        {
            "host_id": host_id,
            "instance_id": instance_id,
            "managed_agents": list(agents),
            "client_cert_pem": pki.issue_leaf(ca, host_id, server=False).cert_pem,
            "client_ca_pem": ca.cert_pem,
        }
    )


def test_register_refresh_and_another_instance(conn):
    host, trust = hosts.register_host(conn, registration())
    assert trust.newly_trusted and host.managed_agents == ["datahealth"]
    assert hosts.trusted_ca_pem(conn) == CA.cert_pem
    host, trust = hosts.register_host(conn, registration(agents=["lineage_plus"]))
    assert not trust.newly_trusted and host.managed_agents == ["lineage_plus"]
    with pytest.raises(hosts.HostAlreadyRegistered):
        hosts.register_host(conn, registration(instance_id="i2"))
    assert hosts.account_summary(conn) == {
        "hosts": 1,
        "client_ca_fingerprint": pki.fingerprint(CA.cert),
    }


def test_a_rejected_registration_changes_nothing(conn):
    rogue = pki.new_ca("rogue")
    hosts.register_host(conn, registration())
    with pytest.raises(pki.CertificateRejected):
        hosts.register_host(conn, registration(host_id="h2", ca=rogue))
    assert [h.host_id for h in hosts.list_hosts(conn)] == ["h1"]


def test_registration_input_rules():
    with pytest.raises(ValueError, match="host_id"):
        registration(host_id="-bad")
    with pytest.raises(ValueError, match="managed_agents"):
        registration(agents=["sds"])
    assert registration(agents=["datahealth", "datahealth"]).managed_agents == ["datahealth"]


def test_heartbeats_set_health(conn):
    hosts.register_host(conn, registration())
    assert hosts.get_host(conn, "h1").listing()["health"] == "no_data"
    now = datetime.now(UTC)
    hosts.record_heartbeat(conn, "h1", {"host_id": "h1"}, now - timedelta(minutes=10))
    hosts.record_heartbeat(conn, "h1", {"host_id": "h1", "n": 2}, now - timedelta(minutes=7))
    listed = hosts.get_host(conn, "h1").listing(now)
    assert listed["health"] == "degraded" and listed["last_heartbeat_at"].endswith("Z")
    assert hosts.last_status(conn, "h1") == {"host_id": "h1", "n": 2}
    (received,) = conn.execute("SELECT received FROM heartbeats").fetchone()
    assert received == 2


def test_set_managed_agents(conn):
    hosts.register_host(conn, registration())
    assert hosts.set_managed_agents(conn, "h1", ["external_monitors"]).managed_agents == [
        "external_monitors"
    ]
    with pytest.raises(hosts.UnknownHost):
        hosts.set_managed_agents(conn, "nope", [])


def test_jobs_keep_their_host_agent_and_last_parameters(conn):
    job = jobs.save_job(conn, "j1", "h1", "datahealth", {"file_name": "a.yml"})
    assert job.parameters == {"file_name": "a.yml"}
    assert jobs.save_job(conn, "j1", "h1", "datahealth", None).parameters == {"file_name": "a.yml"}
    assert jobs.save_job(conn, "j1", "h1", "datahealth", {"file_name": "b.yml"}).parameters == {
        "file_name": "b.yml"
    }
    with pytest.raises(jobs.JobConflict, match="belongs to host h1"):
        jobs.save_job(conn, "j1", "h2", "datahealth", None)


def test_runs_are_cached_once_final(conn):
    run = jobs.Run("r1", "j1", "h1", "datahealth", "agent-job-j1", "t1", "default", "2025-01-01Z")
    jobs.insert_run(conn, run)
    assert jobs.get_run(conn, "r1").view() == {
        "job_id": "j1", "run_id": "r1", "host_id": "h1", "agent": "datahealth",
        "status": "queued", "result": None,
    }  # fmt: skip
    jobs.finish_run(conn, "r1", "failed", None, {"type": "InvalidJobRequest", "message": "m"})
    jobs.finish_run(conn, "r1", "succeeded", {"status": "succeeded"}, None)  # ignored: final
    final = jobs.get_run(conn, "r1")
    assert final.final and final.status == "failed"
    assert final.view()["error"] == {"type": "InvalidJobRequest", "message": "m"}


@pytest.mark.parametrize(
    ("network", "gateway"),
    [
        (
            {"IPAM": {"Config": [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]}},
            "172.17.0.1",
        ),
        ({"IPAM": {"Config": [{"Subnet": "172.30.0.0/16"}]}}, "172.30.0.1"),
        ({"IPAM": {"Config": [{"Gateway": "10.0.0.1/24"}]}}, "10.0.0.1"),
        ({"IPAM": {"Config": []}}, None),
        ({}, None),
    ],
)
def test_bridge_gateway_from_network_inspect(network, gateway):
    assert gateway_of(network) == gateway


def test_handshake_failure_reasons():
    verify = ssl.SSLCertVerificationError(1, "x")
    verify.reason, verify.verify_message = "CERTIFICATE_VERIFY_FAILED", "unable to get issuer"
    assert describe_failure(verify) == "CERTIFICATE_VERIFY_FAILED: unable to get issuer"
    assert describe_failure(ConnectionResetError()) == "connection closed during the handshake"
    assert describe_failure(ConnectionAbortedError()).startswith("no handshake within")


def test_tables():
    text = tables.render(("A", "LONGER"), [("x", None), ("yyyy", 1)])
    assert text.splitlines() == ["A     LONGER", "x     -", "yyyy  1"]
