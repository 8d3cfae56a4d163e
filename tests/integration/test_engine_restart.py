"""The Docker engine restarted under a running job: a truthful ending, and the next job runs.

Restarting the engine stops every container on it, so this runs alone, after the other suites
(`make test` runs it last), and only on an engine that the project's own set-up started
(scripts/dockerd.sh knows it from its pid file).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from tests.integration.conftest import agent, container_events, containers_of_host
from tests.waiting import async_wait_for, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.engine_restart, pytest.mark.alone]
DOCKERD = Path(__file__).resolve().parents[2] / "scripts" / "dockerd.sh"


def engine_is_ours() -> bool:
    return subprocess.run(["bash", str(DOCKERD), "owned"], capture_output=True).returncode == 0


def restart_engine() -> None:
    done = subprocess.run(["bash", str(DOCKERD), "restart"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


async def test_dockerd_restarted_mid_run_ends_the_run_truthfully_and_the_next_job_runs(
    make_host: Any, client: Client, figure: Any
) -> None:
    if not engine_is_ours():
        pytest.skip(
            "the Docker engine was not started by this project's set-up (scripts/dockerd.sh "
            "has no pid file for it): restarting someone else's engine is not this test's call"
        )
    host = make_host({"datahealth": agent(env={"DEMO_SLEEP_SECONDS": "120"})})
    handle = await host.start_job(client, host.request("datahealth", {"file_name": "a"}))

    async def running() -> bool:
        return bool((await handle.query("status"))["phase"] == "running")

    await async_wait_for(running, 60, "the job to run")
    began = time.monotonic()
    restart_engine()
    async with asyncio.timeout(120):
        result = await handle.result()
    took = time.monotonic() - began
    figure("dockerd restarted mid-run → failed result (exit 143)", took)
    assert took < 120
    # the engine stopped the container when it shut down (SIGTERM, exit 143); the result says
    # so, and adds that the engine was away when the watch found it away
    assert result["status"] == "failed", result
    assert result["exit_code"] == 143, result
    assert result["reason"] in (
        "terminated: SIGTERM (exit 143)",
        "terminated: SIGTERM (exit 143) (the Docker engine restarted or was unreachable during "
        "the run)",
    ), result["reason"]
    assert result["log_tail"][-1] == "demo-agent: SIGTERM received, exiting with 143"
    wait_for(lambda: containers_of_host(host.host_id) == [], 60, "no container left")

    assert host.proc is not None and host.proc.poll() is None, "the same orchestrator"
    restarted = time.time() - 1  # the engine's event log starts afresh with it
    host.write_config({"datahealth": agent()})  # the next job is a short one
    after = await host.start_job(client, host.request("datahealth", {"file_name": "b"}))
    async with asyncio.timeout(120):
        assert (await after.result())["status"] == "succeeded"
    assert len(container_events(host.host_id, restarted, "create")) == 1
