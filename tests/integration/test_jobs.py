"""Jobs end to end against a real Temporal dev server and a real Docker engine."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

from orchestrator.contract import AGENT_TYPES, JOB_NETWORK, LABEL_MANAGED
from tests.integration.conftest import DEMO_IMAGE, agent, container_events, containers_of_host
from tests.unit.test_fuzz_job_requests import (
    check_refusal_message,
    parameter_faults,
    top_level_faults,
)
from tests.waiting import async_wait_for

pytestmark = pytest.mark.integration

ALL_AGENTS = {
    "lineage_plus": agent(),
    "datahealth": agent(),
    "external_monitors": agent(),
}


@pytest.mark.parametrize(
    ("agent_type", "parameters", "argv"),
    [
        (
            "lineage_plus",
            {"connectors": ["snowflake", "tableau"], "connection_name": "prod.sf", "no_sync": True},
            "lineage run -c snowflake -c tableau -n prod.sf --no-sync",
        ),
        (
            "datahealth",
            {"file_name": "health.yml", "command": "run-all"},
            "datahealth run --file-name health.yml --command run-all",
        ),
        ("external_monitors", {"connector": "monte-carlo"}, "external-monitors run -c monte-carlo"),
    ],
)
async def test_each_agent_type_succeeds(
    make_host: Any, client: Client, agent_type: str, parameters: dict[str, Any], argv: str
) -> None:
    host = make_host(ALL_AGENTS)
    request = host.request(agent_type, parameters)
    handle = await host.start_job(client, request)
    result = await handle.result()

    assert result["status"] == "succeeded", result
    assert result["exit_code"] == 0 and result["reason"] is None
    assert f"demo-agent argv: {argv}" in result["log_tail"]
    assert any("/app/config/connection.yml" in line for line in result["log_tail"])
    assert result["container_name"] == f"bigeye-job-{request['job_id']}-{request['run_id']}"
    assert result["image"] == DEMO_IMAGE and result["image_id"].startswith("sha256:")
    assert result["host_id"] == host.host_id and result["agent"] == agent_type
    assert result["started_at"] and result["finished_at"]
    assert containers_of_host(host.host_id) == [], "the container must be removed"
    # every line the daemon printed is structured; the job's own output is forwarded line by
    # line with the job's fields
    events = [json.loads(line) for line in host.logs().splitlines()]
    agent_lines = [e for e in events if e.get("stream") == "agent"]
    assert f"demo-agent argv: {argv}" in [e["event"] for e in agent_lines]
    for event in agent_lines:
        assert event["run_id"] == request["run_id"] and event["job_id"] == request["job_id"]
        assert event["agent"] == agent_type and event["host_id"] == host.host_id
        assert event["container"]
    assert all(e.get("host_id") == host.host_id for e in events)


async def test_nonzero_exit_fails_with_code_and_reason(make_host: Any, client: Client) -> None:
    host = make_host({"datahealth": agent(env={"DEMO_EXIT_CODE": "3"})})
    result = await (
        await host.start_job(client, host.request("datahealth", {"file_name": "a.yml"}))
    ).result()
    assert result["status"] == "failed"
    assert result["exit_code"] == 3
    assert result["reason"] == "exited with code 3"


@pytest.mark.alone  # no other test's job may hold the network while it is removed
async def test_a_job_network_pruned_away_is_made_again_at_the_next_start(
    make_host: Any, client: Client
) -> None:
    """`docker network prune` removes `bigeye-jobs` whenever no job runs: the next start, which
    no longer looks the network up first, finds it gone and makes it again."""
    host = make_host({"datahealth": agent()})

    async def removed() -> bool:
        gone = await asyncio.create_subprocess_exec(
            "docker", "network", "rm", JOB_NETWORK,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await gone.communicate()
        return gone.returncode == 0 or b"not found" in err  # else: another test's job is on it

    await async_wait_for(removed, 60, f"{JOB_NETWORK} to have no job on it")
    result = await (
        await host.start_job(client, host.request("datahealth", {"file_name": "a.yml"}))
    ).result()
    assert result["status"] == "succeeded", result
    inspect = await asyncio.create_subprocess_exec(
        "docker", "network", "inspect", "--format", "{{json .Labels}}", JOB_NETWORK,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await inspect.communicate()
    assert json.loads(out)[LABEL_MANAGED] == "true"


async def test_memory_over_limit_fails_as_out_of_memory(make_host: Any, client: Client) -> None:
    host = make_host({"datahealth": agent(memory="48m", env={"DEMO_ALLOC_MB": "300"})})
    result = await (
        await host.start_job(client, host.request("datahealth", {"file_name": "a.yml"}))
    ).result()
    assert result["status"] == "failed", result
    assert "out of memory" in result["reason"]
    assert result["exit_code"] == 137


async def test_run_timeout_stops_and_removes(make_host: Any, client: Client) -> None:
    host = make_host(
        {
            "datahealth": agent(
                timeout_seconds=3, stop_grace_seconds=1, env={"DEMO_SLEEP_SECONDS": "120"}
            )
        }
    )
    began = time.monotonic()
    result = await (
        await host.start_job(client, host.request("datahealth", {"file_name": "a.yml"}))
    ).result()
    assert result["status"] == "timed_out", result
    assert "timed out after 3 s" in result["reason"]
    assert time.monotonic() - began < 30
    assert containers_of_host(host.host_id) == []


async def test_cancel_reaches_a_container_that_ignores_sigterm(
    make_host: Any, client: Client
) -> None:
    grace = 3
    host = make_host(
        {
            "datahealth": agent(
                stop_grace_seconds=grace,
                env={"DEMO_SLEEP_SECONDS": "300", "DEMO_IGNORE_SIGTERM": "1"},
            )
        }
    )
    handle = await host.start_job(client, host.request("datahealth", {"file_name": "a.yml"}))

    async def running() -> bool:
        status = await handle.query("status")
        return bool(status["phase"] == "running" and status["container_id"])

    await async_wait_for(running, 60, "the job to run")
    began = time.monotonic()
    await handle.cancel()
    result = await handle.result()
    elapsed = time.monotonic() - began

    assert result["status"] == "canceled", result
    assert elapsed < grace + 5, f"cancel took {elapsed:.1f}s"
    assert result["exit_code"] == 137  # it ignored SIGTERM, so the grace ended with SIGKILL
    assert containers_of_host(host.host_id) == []


async def test_killed_worker_restarts_and_adopts_the_running_job(
    make_host: Any, client: Client
) -> None:
    host = make_host({"datahealth": agent(env={"DEMO_SLEEP_SECONDS": "8", "DEMO_LOG_LINES": "8"})})
    since = time.time() - 1
    request = host.request("datahealth", {"file_name": "a.yml"})
    handle = await host.start_job(client, request)

    async def running() -> bool:
        return bool((await handle.query("status"))["phase"] == "running")

    await async_wait_for(running, 60, "the job to run")
    host.kill()
    assert len(containers_of_host(host.host_id)) == 1, "the container outlives the worker"
    host.start()
    result = await handle.result()

    assert result["status"] == "succeeded", result
    created = container_events(host.host_id, since, "create")
    assert len(created) == 1, f"exactly one container for the run, got {len(created)}"
    assert created[0]["Actor"]["Attributes"]["com.bigeye.orchestrator.run-id"] == request["run_id"]
    assert containers_of_host(host.host_id) == []


async def test_sigterm_leaves_the_job_running_and_exits_quickly(
    make_host: Any, client: Client
) -> None:
    host = make_host({"datahealth": agent(env={"DEMO_SLEEP_SECONDS": "6"})})
    handle = await host.start_job(client, host.request("datahealth", {"file_name": "a.yml"}))

    async def running() -> bool:
        return bool((await handle.query("status"))["phase"] == "running")

    await async_wait_for(running, 60, "the job to run")
    took = host.terminate()
    assert took < 10, f"SIGTERM exit took {took:.1f}s"
    assert host.proc is not None and host.proc.returncode == 0
    assert len(containers_of_host(host.host_id)) == 1, "the job container keeps running"
    host.start()
    assert (await handle.result())["status"] == "succeeded"


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda r: r.update(agent="spark"), id="unknown-agent"),
        pytest.param(lambda r: r["parameters"].update(file_name="../etc/passwd"), id="dotdot"),
        pytest.param(lambda r: r["parameters"].update(file_name="/etc/passwd"), id="slash"),
        pytest.param(
            lambda r: r.update(agent="external_monitors", parameters={"connector": "x;rm -rf /"}),
            id="shell",
        ),
        pytest.param(lambda r: r.update(extra="x"), id="unknown-key"),
        pytest.param(lambda r: r["parameters"].update(mode="fast"), id="unknown-param"),
        pytest.param(lambda r: r.update(run_id="run 1"), id="id-with-space"),
        pytest.param(lambda r: r.update(timeout_seconds=0), id="zero-timeout"),
    ],
)  # fmt: skip
async def test_invalid_requests_are_rejected_without_a_container(
    make_host: Any, client: Client, mutate: Any
) -> None:
    host = make_host(ALL_AGENTS)
    since = time.time() - 1
    request = host.request("datahealth", {"file_name": "a.yml"})
    mutate(request)
    handle = await host.start_job(client, request)
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "InvalidJobRequest", cause
    assert cause.non_retryable
    assert container_events(host.host_id, since, "create") == []


async def test_timeout_above_the_agents_limit_is_invalid(make_host: Any, client: Client) -> None:
    host = make_host({"datahealth": agent(timeout_seconds=60)})
    handle = await host.start_job(
        client, host.request("datahealth", {"file_name": "a.yml"}, timeout_seconds=61)
    )
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert isinstance(failure.value.cause, ApplicationError)
    assert failure.value.cause.type == "InvalidJobRequest"
    assert "exceeds" in str(failure.value.cause)


async def test_agent_not_installed(make_host: Any, client: Client) -> None:
    host = make_host({"datahealth": agent()})
    since = time.time() - 1
    handle = await host.start_job(client, host.request("external_monitors", {"connector": "x"}))
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "AgentNotInstalled", cause
    assert container_events(host.host_id, since, "create") == []


async def test_second_start_of_an_active_job_is_rejected(make_host: Any, client: Client) -> None:
    host = make_host({"datahealth": agent(env={"DEMO_SLEEP_SECONDS": "3"})})
    first = host.request("datahealth", {"file_name": "a.yml"})
    handle = await host.start_job(client, first)
    second = host.request("datahealth", {"file_name": "a.yml"}, job_id=first["job_id"])
    with pytest.raises(WorkflowAlreadyStartedError):
        await host.start_job(client, second)
    assert (await handle.result())["run_id"] == first["run_id"]


async def test_more_jobs_than_slots_queue_and_all_finish(make_host: Any, client: Client) -> None:
    slots, jobs = 2, 5
    host = make_host(
        {"datahealth": agent(max_concurrent=10, env={"DEMO_SLEEP_SECONDS": "2"})},
        BIGEYE_MAX_CONCURRENT_JOBS=str(slots),
    )
    since = time.time() - 1
    handles = [
        await host.start_job(client, host.request("datahealth", {"file_name": "a.yml"}))
        for _ in range(jobs)
    ]
    results = await asyncio.gather(*(h.result() for h in handles))
    assert [r["status"] for r in results] == ["succeeded"] * jobs

    running, peak = 0, 0
    events = container_events(host.host_id, since, "start", "die")
    for event in sorted(events, key=lambda e: e["timeNano"]):
        running += 1 if event["status"] == "start" else -1
        peak = max(peak, running)
    assert len(events) == 2 * jobs
    assert peak == slots, f"at most {slots} jobs at once, and the slots were used: {peak}"


async def test_per_agent_max_concurrent_is_respected(make_host: Any, client: Client) -> None:
    host = make_host({"datahealth": agent(max_concurrent=1, env={"DEMO_SLEEP_SECONDS": "1.5"})})
    since = time.time() - 1
    handles = [
        await host.start_job(client, host.request("datahealth", {"file_name": "a.yml"}))
        for _ in range(3)
    ]
    results = await asyncio.gather(*(h.result() for h in handles))
    assert all(r["status"] == "succeeded" for r in results)
    running, peak = 0, 0
    for event in sorted(
        container_events(host.host_id, since, "start", "die"), key=lambda e: e["timeNano"]
    ):
        running += 1 if event["status"] == "start" else -1
        peak = max(peak, running)
    assert peak == 1


async def test_an_image_that_cannot_be_pulled_fails_the_run_with_the_reason(
    make_host: Any, client: Client
) -> None:
    # a registry on a closed loopback port: the pull fails at once and stays on this machine
    host = make_host({"datahealth": agent(image="127.0.0.1:9/bigeye/missing:1")})
    since = time.time() - 1
    result = await (
        await host.start_job(client, host.request("datahealth", {"file_name": "a.yml"}))
    ).result()
    assert result["status"] == "failed", result
    assert "pull of 127.0.0.1:9/bigeye/missing:1 failed" in result["reason"]
    assert result["image_id"] is None and result["exit_code"] is None
    assert container_events(host.host_id, since, "create") == []


async def test_a_container_whose_run_was_terminated_is_swept_after_the_grace(
    make_host: Any, client: Client
) -> None:
    host = make_host(
        {"datahealth": agent(env={"DEMO_SLEEP_SECONDS": "300"})},
        BIGEYE_SWEEP_SECONDS="0.5",
        BIGEYE_ORPHAN_GRACE_SECONDS="2",
    )
    handle = await host.start_job(client, host.request("datahealth", {"file_name": "a.yml"}))

    async def running() -> bool:
        return bool((await handle.query("status"))["phase"] == "running")

    await async_wait_for(running, 60, "the job to run")
    # Bigeye ends the run without the orchestrator's help: nothing is left to stop the container
    await handle.terminate("operator gave up")
    marked_at = time.monotonic()

    async def swept() -> bool:
        return not containers_of_host(host.host_id)

    await async_wait_for(swept, 60, "the orphan to be swept")
    assert time.monotonic() - marked_at >= 2, "removed only after the grace period"
    events = [json.loads(line) for line in host.logs().splitlines()]
    names = [e["event"] for e in events]
    assert names.index("orphan job container marked; removing after the grace period") < (
        names.index("orphan job container swept")
    )
    swept_event = next(e for e in events if e["event"] == "orphan job container swept")
    assert swept_event["exit_code"] == 143 and swept_event["log_tail"]


# ---- generated hostile requests through the real worker --------------------------------------


@pytest.fixture
def portal() -> Any:
    """Runs coroutines on a loop of its own: hypothesis drives this test synchronously."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield lambda coro: asyncio.run_coroutine_threadsafe(coro, loop).result(60)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_generated_invalid_requests_fail_in_one_line_and_create_nothing(
    make_host: Any, temporal_address: str, portal: Any
) -> None:
    host = make_host(ALL_AGENTS)
    since = time.time() - 1
    client = portal(Client.connect(temporal_address))
    seen = 0

    async def refusal_of(raw: Any) -> ApplicationError:
        handle = await client.start_workflow(
            "AgentJobRun", raw, id=f"fuzz-{uuid.uuid4().hex}", task_queue=host.task_queue,
            execution_timeout=timedelta(minutes=2),
        )  # fmt: skip
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        cause = failure.value.cause
        assert isinstance(cause, ApplicationError), cause
        return cause

    @settings(max_examples=200, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=top_level_faults() | st.sampled_from(AGENT_TYPES).flatmap(parameter_faults))
    def each(case: tuple[Any, tuple[str, ...]]) -> None:
        nonlocal seen
        raw, _ = case
        cause = portal(refusal_of(raw))
        assert cause.type == "InvalidJobRequest" and cause.non_retryable, cause
        check_refusal_message(cause.message, raw)
        seen += 1

    each()
    assert seen == 200
    assert container_events(host.host_id, since, "create") == []
    assert "Traceback" not in host.logs()


async def test_a_cancel_sent_with_the_start_ends_every_run_canceled_without_a_container(
    make_host: Any, client: Client
) -> None:
    """The worst moment for a cancel: before, during or just after the run's first task, which
    moves the run to its release's queue (a cancel request does not follow continue-as-new)."""
    host = make_host({"datahealth": agent(env={"DEMO_SLEEP_SECONDS": "300"})})
    handles = []
    for _ in range(12):
        handle = await host.start_job(client, host.request("datahealth", {"file_name": "a.yml"}))
        await handle.cancel()
        handles.append(handle)
    async with asyncio.timeout(120):
        results = [await h.result() for h in handles]
    assert [r["status"] for r in results] == ["canceled"] * len(handles), results
    # a cancel that missed the first task reaches the run on its release's queue, which may
    # already have launched: whatever started was stopped and removed
    assert containers_of_host(host.host_id) == []
