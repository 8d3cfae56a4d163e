"""Hosts as they are in the field, migrated with the real CLI, Docker Compose and devcloud:
an installation with per-agent sections, a host already in Docker Compose mode with a
long-running agent, `install`, a root-owned host directory, a Kubernetes host, an upgrade."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import DEMO_IMAGE, OPERATOR_UID, Cloud, HostDir, run
from tests.e2e.test_register import become_healthy, finished_run, snapshot
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e
HERE = Path(__file__).parent


def as_operator(path: Path) -> None:
    """Files a test writes into a host directory belong to its operator, as in the field."""
    run(["chown", "-R", f"{OPERATOR_UID}:{OPERATOR_UID}", str(path)])


def cloud_host(cloud: Cloud, host_id: str) -> dict[str, Any]:
    return next(h for h in cloud.hosts() if h["host_id"] == host_id)


def job_succeeds(cloud: Cloud, host: HostDir, agent: str, *params: str) -> dict[str, Any]:
    code, body, err = cloud.run_job(host.host_id, agent, *params, wait=True)
    assert code == 0 and body is not None, err
    assert body["status"] == "succeeded", body
    return body


# ---- an installation that predates the orchestrator -----------------------------------------

LEGACY = f"""\
# written by an earlier Bigeye agent installation
company_uuid: 7c1d4e2a
lineage:
  image: {DEMO_IMAGE}
  connections: [snowflake]
external-monitors:
  image: {DEMO_IMAGE}
sds:
  port: 8080
"""


def test_installed_agents_are_found_and_registered_without_flags(
    cloud: Cloud, make_host_dir: Any
) -> None:
    host = make_host_dir(cloud=cloud, first_host_keys=True)
    (host.path / "bigeye_agent.yml").write_text(LEGACY)
    for directory in ("lineage", "datahealth", "sds"):
        (host.path / "agent_config" / directory).mkdir(parents=True, exist_ok=True)
    (host.path / "agent_config" / "lineage" / "connection.yml").write_text("lineage: yes\n")
    as_operator(host.path)

    done = host.register()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "lineage_plus (Lineage Plus): managed" in done.stdout
    assert "sds (SDS): installed, runs on its own (not managed)" in done.stdout
    assert (host.path / "bigeye_agent.yml").read_text().startswith(LEGACY)
    listed = cloud_host(cloud, host.host_id)
    assert listed["managed_agents"] == ["lineage_plus", "datahealth", "external_monitors"]
    assert listed["installed_agents"] == ["sds"]
    become_healthy(cloud, host)
    # the lineage agent runs from the image and the config directory the host already had
    result = job_succeeds(cloud, host, "lineage_plus", "connectors=snowflake")["result"]
    assert result["image"] == DEMO_IMAGE
    assert "config: /app/config/connection.yml" in result["log_tail"]


# ---- a host already in Docker Compose mode ---------------------------------------------------


def long_running(host: HostDir, name: str) -> str:
    """The id of the persistent agent's container (which must be running)."""
    done = run(["docker", "inspect", "-f", "{{.Id}} {{.State.Running}}", name])
    container, running = done.stdout.split()
    assert running == "true", f"{name} is not running"
    return container


def test_a_compose_mode_host_keeps_its_long_running_agent_throughout(
    cloud: Cloud, make_host_dir: Any
) -> None:
    host = make_host_dir(cloud=cloud, first_host_keys=True)
    project = f"legacy-{uuid.uuid4().hex[:8]}"
    sds = f"e2e-sds-{uuid.uuid4().hex[:8]}"
    own_stack = (
        f"name: {project}\n"
        "services:\n"
        "  sds:\n"
        f"    image: {DEMO_IMAGE}\n"
        "    entrypoint: [sleep, infinity]\n"
        f"    container_name: {sds}\n"
        "    restart: unless-stopped\n"
    )
    stack_file = host.path / "docker-compose.bigeye.yml"
    stack_file.write_text(own_stack)
    (host.path / "bigeye_agent.yml").write_text("docker_compose_enabled: true\nsds: {port: 8080}\n")
    as_operator(host.path)
    try:
        up = run(["docker", "compose", "-f", str(stack_file), "up", "-d"], cwd=host.path)
        assert up.returncode == 0, up.stderr
        original = long_running(host, sds)
        since = time.time()

        done = host.register(f"datahealth={DEMO_IMAGE}")
        assert done.returncode == 0, done.stdout + done.stderr
        (backup,) = host.path.glob("docker-compose.bigeye.yml.bak-*")
        assert backup.read_text() == own_stack, "the old stack file, byte for byte"
        assert f"keep running as the Compose project {project}" in done.stdout
        become_healthy(cloud, host)
        assert long_running(host, sds) == original

        job_succeeds(cloud, host, "datahealth", "file_name=a.yml")
        status = host.agent_cli("compose", "status")
        assert status.returncode == 0 and sds in status.stdout, status.stdout
        assert f"Compose project {project}" in status.stdout
        assert host.agent_cli("compose", "upgrade").returncode == 0
        assert long_running(host, sds) == original
        assert host.agent_cli("sync").returncode == 0
        assert long_running(host, sds) == original

        # the rollback of docs/migration.md §6, as written there
        assert host.agent_cli("compose", "down").returncode == 0
        config_backup = next(host.path.glob("bigeye_agent.yml.bak-*"))
        shutil.copy(config_backup, host.path / "bigeye_agent.yml")
        shutil.copy(backup, stack_file)
        up = run(["docker", "compose", "-f", str(stack_file), "up", "-d"], cwd=host.path)
        assert up.returncode == 0, up.stderr
        (host.path / "docker-compose.agents.yml").unlink()
        assert long_running(host, sds) == original
        assert not host.compose("ps", "-q").stdout.strip(), "the orchestrator stack is gone"

        creates = run(["docker", "events", "--since", f"{since:.3f}", "--until",
                       f"{time.time():.3f}", "--filter", "label=com.docker.compose.service=sds",
                       "--filter", "event=create", "--format", "{{.ID}}"])  # fmt: skip
        assert creates.stdout.split() == [], "never a second copy of the long-running agent"
    finally:
        run(["docker", "compose", "-p", project, "down", "-t", "1"])


# ---- install, the guide's log lines, never root, Kubernetes -----------------------------------


def test_install_adds_an_agent_whose_next_job_runs(cloud: Cloud, make_host_dir: Any) -> None:
    host = make_host_dir(cloud=cloud, first_host_keys=True)
    assert host.register(f"datahealth={DEMO_IMAGE}").returncode == 0
    become_healthy(cloud, host)
    done = host.agent_cli("install", "external_monitors", "--image", DEMO_IMAGE, "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert cloud_host(cloud, host.host_id)["managed_agents"] == ["datahealth", "external_monitors"]
    result = job_succeeds(cloud, host, "external_monitors", "connector=dbt")["result"]
    assert "demo-agent argv: external-monitors run -c dbt" in result["log_tail"]


def test_a_root_owned_host_runs_a_non_root_orchestrator_that_logs_what_the_guide_says(
    cloud: Cloud, make_host_dir: Any
) -> None:
    host = make_host_dir(cloud=cloud, first_host_keys=True, owner=0)
    done = host.register(f"datahealth={DEMO_IMAGE}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the orchestrator runs as uid 10001, gid 10001 (never root)" in done.stdout
    become_healthy(cloud, host)
    orchestrator = host.container_id("bigeye-agent-orchestrator")
    assert run(["docker", "inspect", "-f", "{{.Config.User}}", orchestrator]).stdout.strip() == (
        "10001:10001"
    )
    key = host.path / "agent_config" / "mtls.key"
    assert key.stat().st_mode & 0o777 == 0o640 and key.stat().st_gid == 10001
    assert (host.path / "agent_config" / "mtls_ca.key").stat().st_mode & 0o777 == 0o600

    def logged() -> list[dict[str, Any]]:
        out = host.agent_cli("compose", "logs", "-s", "bigeye-agent-orchestrator").stdout
        events = []
        for line in out.splitlines():
            _, _, payload = line.partition("| ")
            if payload.startswith("{"):
                events.append(json.loads(payload))
        names = [e.get("event") for e in events]
        return events if "polling" in names and "heartbeat delivered" in names else []

    events = wait_for(logged, 60, "the guide's two log lines")
    polling = next(e for e in events if e["event"] == "polling")
    assert polling["task_queue"] == f"agent-orchestrator.{host.host_id}"
    job_succeeds(cloud, host, "datahealth", "file_name=a.yml")


def test_a_kubernetes_host_is_refused_and_nothing_is_written(
    cloud: Cloud, make_host_dir: Any
) -> None:
    host = make_host_dir(cloud=cloud, first_host_keys=True)
    (host.path / "bigeye_agent.yml").write_text("kubernetes:\n  namespace: bigeye\n")
    as_operator(host.path)
    before = snapshot(host.path)
    done = host.register(f"datahealth={DEMO_IMAGE}")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "bigeye-agent: error: Kubernetes hosts can't register: the orchestrator runs as a Docker "
        "Compose stack (bigeye_agent.yml has a kubernetes: section)"
    )
    assert snapshot(host.path) == before


# ---- an upgrade that upgrades -----------------------------------------------------------------


def build_next_version(tag: str, version: str, dockerfile: str = "next-version.Dockerfile") -> None:
    """The orchestrator image of the next release, built over `tag`: by default the same code
    with another version (the Dockerfile says what else changes)."""
    done = run(["docker", "build", "-q", "--build-arg", f"FROM_IMAGE={tag}", "--build-arg",
                f"NEXT_VERSION={version}", "-t", tag, "-f", str(HERE / dockerfile),
                str(HERE)])  # fmt: skip
    assert done.returncode == 0, done.stderr


@contextmanager
def own_channel() -> Iterator[str]:
    """A channel tag of this test's own, on today's image: an upgrade may move it freely."""
    channel = f"bigeyedata/agent-orchestrator:e2e-{uuid.uuid4().hex[:8]}"
    assert run(["docker", "tag", "bigeyedata/agent-orchestrator:dev", channel]).returncode == 0
    try:
        yield channel
    finally:
        subprocess.run(["docker", "rmi", "-f", channel], capture_output=True)


def host_on_channel(
    cloud: Cloud, make_host_dir: Any, channel: str, job_seconds: int
) -> tuple[HostDir, str]:
    """A registered, healthy host whose stack follows `channel`, with datahealth jobs that run
    `job_seconds` (long enough to outlive an upgrade); and its orchestrator's version."""
    host = make_host_dir(cloud=cloud, first_host_keys=True)
    host.extra_env["BIGEYE_ORCHESTRATOR_IMAGE"] = channel
    assert host.register(f"datahealth={DEMO_IMAGE}").returncode == 0
    become_healthy(cloud, host)
    before = str(cloud_host(cloud, host.host_id)["orchestrator_version"])
    config_path = host.path / "bigeye_agent.yml"
    config = yaml.safe_load(config_path.read_text())
    config["agents"]["datahealth"]["env"] = {"DEMO_SLEEP_SECONDS": str(job_seconds)}
    config_path.write_text(yaml.safe_dump(config))
    return host, before


def test_compose_upgrade_moves_to_the_next_version_while_a_job_runs(
    cloud: Cloud, make_host_dir: Any
) -> None:
    with own_channel() as channel:
        host, before = host_on_channel(cloud, make_host_dir, channel, job_seconds=15)
        code, body, err = cloud.run_job(host.host_id, "datahealth", "file_name=a.yml", wait=False)
        assert code == 0 and body is not None, err
        wait_for(host.job_containers, 60, "the job's container")

        build_next_version(channel, "0.1.99")
        done = host.agent_cli("compose", "upgrade")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"upgraded the orchestrator: {before} → 0.1.99" in done.stdout, done.stdout
        finished = wait_for(lambda: finished_run(cloud, body["run_id"]), 120, "the job")
        assert finished["status"] == "succeeded", finished
        wait_for(
            lambda: cloud_host(cloud, host.host_id)["orchestrator_version"] == "0.1.99",
            90,
            "a heartbeat from the new version",
        )
