"""Runs end truthfully under faults injected for real: cancels in every phase, a frozen or
restarted Temporal server, a killed orchestrator, permanent engine errors, a busy agent, a cut
log stream, dependencies away at start-up, SIGTERM at awkward moments.

Docker's own event stream is the witness of what happened to containers: how many were
created for a run, and that none is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import Client, WorkflowHandle

from tests.integration.conftest import (
    DEMO_IMAGE,
    TemporalServer,
    agent,
    container_events,
    containers_of_host,
)
from tests.registry import TestRegistry, remove_local_image
from tests.relay import SocketRelay
from tests.waiting import async_wait_for, wait_for

pytestmark = pytest.mark.integration

LONG = {"DEMO_SLEEP_SECONDS": "300", "DEMO_LOG_LINES": "300"}


async def phase_is(handle: WorkflowHandle[Any, Any], wanted: str, within: float = 60) -> None:
    async def reached() -> bool:
        return bool((await handle.query("status"))["phase"] == wanted)

    await async_wait_for(reached, within, f"{handle.id} to be {wanted}")


async def result_within(handle: WorkflowHandle[Any, Any], seconds: float) -> dict[str, Any]:
    async with asyncio.timeout(seconds):
        return dict(await handle.result())


def none_left(host_id: str, within: float = 30) -> None:
    wait_for(lambda: containers_of_host(host_id) == [], within, "no job container left")


@contextlib.asynccontextmanager
async def engine_events(host_id: str, event: str) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
    """Docker's events for this host's job containers, as they happen."""
    proc = await asyncio.create_subprocess_exec(
        "docker", "events", "--format", "{{json .}}", "--filter", "type=container",
        "--filter", f"label=com.bigeye.orchestrator.host-id={host_id}",
        "--filter", f"event={event}",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def read() -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            await queue.put(json.loads(line))

    reader = asyncio.create_task(read())
    try:
        yield queue
    finally:
        reader.cancel()
        proc.kill()
        await proc.wait()


def docker(*args: str, check: bool = True) -> None:
    subprocess.run(["docker", *args], check=check, capture_output=True)


def log_events(host: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in host.logs().splitlines() if line.startswith("{")]


async def waits_for_a_slot(host: Any, handle: WorkflowHandle[Any, Any], run_id: str) -> None:
    """The run's launch found no slot (a run is `queued` at its very start too)."""

    def said() -> bool:
        return any(
            e.get("event") == "waiting for a job slot" and e.get("run_id") == run_id
            for e in log_events(host)
        )

    wait_for(said, 60, f"{run_id} to wait for a slot")
    await phase_is(handle, "queued")


# ---- cancel in every phase -----------------------------------------------------------------------


async def test_cancel_the_moment_the_container_is_created_ten_times(
    make_host: Any, client: Client, figure: Any
) -> None:
    host = make_host({"datahealth": agent(stop_grace_seconds=3, env=LONG)})
    since = time.time() - 1
    took = []
    for _ in range(10):
        async with engine_events(host.host_id, "create") as created:
            handle = await host.start_job(client, host.request("datahealth", {"file_name": "a"}))
            async with asyncio.timeout(60):
                await created.get()
            began = time.monotonic()
            await handle.cancel()
        result = await result_within(handle, 60)
        took.append(time.monotonic() - began)
        assert result["status"] == "canceled", result
        none_left(host.host_id)
    assert len(container_events(host.host_id, since, "create")) == 10
    figure("cancel at create → canceled result, slowest of 10", max(took))


async def test_cancel_100_ms_after_start_and_while_running(
    make_host: Any, client: Client, figure: Any
) -> None:
    host = make_host({"datahealth": agent(stop_grace_seconds=3, env=LONG)})
    for _ in range(3):
        async with engine_events(host.host_id, "start") as started:
            handle = await host.start_job(client, host.request("datahealth", {"file_name": "a"}))
            async with asyncio.timeout(60):
                await started.get()
            await asyncio.sleep(0.1)  # the fault's timing is the test: 100 ms into the run
            began = time.monotonic()
            await handle.cancel()
        result = await result_within(handle, 60)
        figure("cancel 100 ms after start → canceled result", time.monotonic() - began)
        assert result["status"] == "canceled", result
        none_left(host.host_id)

    # while running: the job exits on SIGTERM, and its exit code and last lines are kept
    handle = await host.start_job(client, host.request("datahealth", {"file_name": "a"}))
    await phase_is(handle, "running")
    wait_for(lambda: "line 2/300" in host.logs(), 30, "the job's output")
    began = time.monotonic()
    await handle.cancel()
    result = await result_within(handle, 60)
    figure("cancel while running (exits on SIGTERM) → canceled result", time.monotonic() - began)
    assert result["status"] == "canceled" and result["reason"] == "canceled by request"
    assert result["exit_code"] == 143, result
    assert result["log_tail"][-1] == "demo-agent: SIGTERM received, exiting with 143"
    assert any(line.startswith("line 2/300") for line in result["log_tail"])
    none_left(host.host_id)


async def test_cancel_while_pulling_ends_canceled_and_creates_nothing(
    make_host: Any, client: Client, figure: Any
) -> None:
    with TestRegistry() as registry:
        image = f"{registry.address}/bigeye/demo:slow"
        registry.add_image(DEMO_IMAGE, "bigeye/demo", "slow")
        registry.stall(True)  # the layers never come while the test holds it
        try:
            host = make_host({"datahealth": agent(image=image)})
            since = time.time() - 1
            handle = await host.start_job(client, host.request("datahealth", {"file_name": "a"}))
            await phase_is(handle, "pulling")
            wait_for(lambda: any("/blobs/" in path for _, path in registry.requests), 30,
                     "the engine to ask for a layer")  # fmt: skip
            began = time.monotonic()
            await handle.cancel()
            result = await result_within(handle, 30)
            figure("cancel while pulling → canceled result", time.monotonic() - began)
            assert result["status"] == "canceled", result
            assert time.monotonic() - began < 10, "the pull's activity hears of the cancel"
            assert result["image_id"] is None and result["exit_code"] is None
            assert container_events(host.host_id, since, "create") == []
        finally:
            registry.stop()
            remove_local_image(image)


async def test_sigterm_with_a_pull_in_flight_exits_within_ten_seconds(
    make_host: Any, client: Client, figure: Any
) -> None:
    with TestRegistry() as registry:
        image = f"{registry.address}/bigeye/demo:stalled"
        registry.add_image(DEMO_IMAGE, "bigeye/demo", "stalled")
        registry.stall(True)
        try:
            host = make_host({"datahealth": agent(image=image)})
            handle = await host.start_job(client, host.request("datahealth", {"file_name": "a"}))
            await phase_is(handle, "pulling")
            wait_for(lambda: any("/blobs/" in path for _, path in registry.requests), 30,
                     "the engine to ask for a layer")  # fmt: skip
            took = host.terminate()
            figure("SIGTERM with a pull in flight → exit", took)
            assert took <= 10, f"SIGTERM exit took {took:.1f}s"
            await handle.cancel()
        finally:
            registry.stop()
            remove_local_image(image)


async def test_a_pulled_image_is_reported_by_its_digest(make_host: Any, client: Client) -> None:
    with TestRegistry() as registry:
        image = f"{registry.address}/bigeye/demo:1"
        digest = registry.add_image(DEMO_IMAGE, "bigeye/demo", "1")
        try:
            host = make_host({"datahealth": agent(image=image)})
            handle = await host.start_job(client, host.request("datahealth", {"file_name": "a"}))
            result = await result_within(handle, 120)
            assert result["status"] == "succeeded", result
            assert result["image"] == image
            assert result["image_digest"] == f"{registry.address}/bigeye/demo@{digest}"
            assert "image pulled" in host.logs()
        finally:
            remove_local_image(image)


async def test_cancel_while_waiting_for_a_slot_leaves_nothing(
    make_host: Any, client: Client, figure: Any
) -> None:
    host = make_host({"datahealth": agent(max_concurrent=1, stop_grace_seconds=1, env=LONG)})
    since = time.time() - 1
    first = await host.start_job(client, host.request("datahealth", {"file_name": "a"}))
    await phase_is(first, "running")
    request = host.request("datahealth", {"file_name": "a"})
    waiting = await host.start_job(client, request)
    await waits_for_a_slot(host, waiting, request["run_id"])
    began = time.monotonic()
    await waiting.cancel()
    result = await result_within(waiting, 30)
    figure("cancel while queued → canceled result", time.monotonic() - began)
    assert result["status"] == "canceled" and result["exit_code"] is None
    assert result["started_at"] is None and result["log_tail"] == []
    await first.cancel()
    assert (await result_within(first, 30))["status"] == "canceled"
    assert len(container_events(host.host_id, since, "create")) == 1
    none_left(host.host_id)


# ---- Temporal faults -----------------------------------------------------------------------------


async def test_temporal_frozen_across_the_jobs_exit_still_succeeds(
    make_host: Any, own_temporal: TemporalServer, figure: Any
) -> None:
    client = await Client.connect(own_temporal.address)
    host = make_host(
        {"datahealth": agent(env={"DEMO_SLEEP_SECONDS": "4", "DEMO_LOG_LINES": "4"})},
        temporal=own_temporal.address,
    )
    since = time.time() - 1
    handle = await host.start_job(client, host.request("datahealth", {"file_name": "a"}))
    await phase_is(handle, "running")
    own_temporal.freeze()
    frozen_at = time.monotonic()
    try:
        wait_for(lambda: container_events(host.host_id, since, "die"), 30, "the job to exit")
        await asyncio.sleep(max(0.0, 30 - (time.monotonic() - frozen_at)))  # the fault: 30 s
    finally:
        own_temporal.thaw()
    thawed = time.monotonic()
    result = await result_within(handle, 120)
    figure("Temporal frozen 30 s: thaw → succeeded result", time.monotonic() - thawed)
    assert result["status"] == "succeeded" and result["exit_code"] == 0, result
    assert len(container_events(host.host_id, since, "create")) == 1
    none_left(host.host_id, 60)


async def test_temporal_restarted_mid_run_and_the_worker_reconnects(
    make_host: Any, own_temporal: TemporalServer, figure: Any
) -> None:
    host = make_host(
        {"datahealth": agent(env={"DEMO_SLEEP_SECONDS": "8", "DEMO_LOG_LINES": "8"})},
        temporal=own_temporal.address,
    )
    client = await Client.connect(own_temporal.address)
    handle = await host.start_job(client, host.request("datahealth", {"file_name": "a"}))
    await phase_is(handle, "running")
    restarted = time.monotonic()
    own_temporal.restart()
    client = await Client.connect(own_temporal.address)
    handle = client.get_workflow_handle(handle.id)
    result = await result_within(handle, 120)
    figure("Temporal restarted mid-run: restart → succeeded result", time.monotonic() - restarted)
    assert result["status"] == "succeeded", result
    assert host.proc is not None and host.proc.poll() is None, "the same orchestrator process"
    after = await host.start_job(client, host.request("datahealth", {"file_name": "b"}))
    assert (await result_within(after, 60))["status"] == "succeeded"
    none_left(host.host_id)


async def test_sigterm_with_temporal_frozen_exits_within_ten_seconds(
    make_host: Any, own_temporal: TemporalServer, figure: Any
) -> None:
    host = make_host({"datahealth": agent(env=LONG)}, temporal=own_temporal.address)
    client = await Client.connect(own_temporal.address)
    handle = await host.start_job(client, host.request("datahealth", {"file_name": "a"}))
    await phase_is(handle, "running")
    own_temporal.freeze()
    try:
        took = host.terminate()
    finally:
        own_temporal.thaw()
    figure("SIGTERM with Temporal frozen → exit", took)
    assert took <= 10, f"SIGTERM exit took {took:.1f}s"
    assert len(containers_of_host(host.host_id)) == 1, "the job keeps running"
    await handle.cancel()


# ---- the orchestrator killed ---------------------------------------------------------------------


async def test_sigkill_with_eight_jobs_running_then_all_succeed(
    make_host: Any, client: Client, figure: Any
) -> None:
    host = make_host(
        {"datahealth": agent(max_concurrent=8, env={"DEMO_SLEEP_SECONDS": "10"})},
        BIGEYE_MAX_CONCURRENT_JOBS="8",
    )
    since = time.time() - 1
    handles = [
        await host.start_job(client, host.request("datahealth", {"file_name": "a"}))
        for _ in range(8)
    ]
    for handle in handles:
        await phase_is(handle, "running")
    host.kill()
    assert len(containers_of_host(host.host_id)) == 8
    restarted = time.monotonic()
    host.start()
    results = await asyncio.gather(*(result_within(h, 120) for h in handles))
    figure("SIGKILL with 8 jobs: restart → 8 results", time.monotonic() - restarted)
    assert [r["status"] for r in results] == ["succeeded"] * 8, results
    assert len(container_events(host.host_id, since, "create")) == 8
    none_left(host.host_id)


# ---- orphans, by run -----------------------------------------------------------------------------


async def test_a_terminated_run_is_swept_while_a_newer_run_of_the_job_runs(
    make_host: Any, client: Client, figure: Any
) -> None:
    sweep, grace = 1.0, 3.0
    host = make_host(
        {"datahealth": agent(max_concurrent=1, env=LONG)},
        BIGEYE_SWEEP_SECONDS=str(sweep),
        BIGEYE_ORPHAN_GRACE_SECONDS=str(grace),
    )
    job_id = f"job-{uuid.uuid4().hex[:6]}"
    request = host.request("datahealth", {"file_name": "a"}, job_id=job_id)
    old = await host.start_job(client, request)
    await phase_is(old, "running")
    (old_container,) = containers_of_host(host.host_id)
    await old.terminate("operator gave up")
    terminated_at = time.monotonic()
    # the newer run is short; it waits for the agent's one slot, which the orphan holds
    config = yaml.safe_load((host.directory / "bigeye_agent.yml").read_text())
    config["agents"]["datahealth"]["env"] = {"DEMO_SLEEP_SECONDS": "2"}
    (host.directory / "bigeye_agent.yml").write_text(yaml.safe_dump(config))
    request = host.request("datahealth", {"file_name": "b"}, job_id=job_id)
    newer = await host.start_job(client, request)
    wait_for(lambda: old_container not in containers_of_host(host.host_id), 60, "the sweep")
    swept_after = time.monotonic() - terminated_at
    figure("terminated run's container gone (sweep 1 s, grace 3 s)", swept_after)
    assert grace <= swept_after <= sweep + grace + 5, swept_after  # 5: its SIGTERM and removal
    result = await result_within(newer, 60)
    assert result["status"] == "succeeded", result
    none_left(host.host_id)


async def test_sigterm_while_the_sweeper_stops_a_stubborn_orphan_exits_within_ten_seconds(
    make_host: Any, client: Client, figure: Any
) -> None:
    host = make_host(
        {"datahealth": agent(stop_grace_seconds=60, env={**LONG, "DEMO_IGNORE_SIGTERM": "1"})},
        BIGEYE_SWEEP_SECONDS="0.5",
        BIGEYE_ORPHAN_GRACE_SECONDS="1",
    )
    handle = await host.start_job(client, host.request("datahealth", {"file_name": "a"}))
    await phase_is(handle, "running")
    await handle.terminate("abandoned")
    wait_for(lambda: "stopping orphan job container" in host.logs(), 30, "the sweeper's stop")
    took = host.terminate()
    figure("SIGTERM while the sweeper stops a SIGTERM-ignoring orphan → exit", took)
    assert took <= 10, f"SIGTERM exit took {took:.1f}s"


# ---- errors that no retry can fix ----------------------------------------------------------------


async def test_permanent_engine_errors_fail_the_run_quickly_with_the_engines_reason(
    make_host: Any, client: Client, figure: Any
) -> None:
    host = make_host(
        {
            "datahealth": agent(cpus=64),  # more CPUs than this host has: 400 at create
            "external_monitors": agent(image="127.0.0.1:9/bigeye/missing:1"),
            "lineage_plus": agent(),
        }
    )
    began = time.monotonic()
    too_big = await host.start_job(client, host.request("datahealth", {"file_name": "a"}))
    unpullable = await host.start_job(client, host.request("external_monitors", {"connector": "x"}))
    cpus, pull = await asyncio.gather(result_within(too_big, 60), result_within(unpullable, 60))
    figure("cpus above the host's and an unpullable image → both failed", time.monotonic() - began)
    assert time.monotonic() - began < 60
    assert cpus["status"] == "failed" and "Range of CPUs" in cpus["reason"], cpus
    assert cpus["exit_code"] is None and cpus["image_id"].startswith("sha256:")
    assert pull["status"] == "failed", pull
    assert pull["reason"].startswith("pull of 127.0.0.1:9/bigeye/missing:1 failed")
    none_left(host.host_id)
    after = await host.start_job(client, host.request("lineage_plus", {}))
    assert (await result_within(after, 60))["status"] == "succeeded"


async def test_an_image_removed_by_sync_while_a_run_waits_fails_that_run(
    make_host: Any, client: Client, figure: Any
) -> None:
    old_tag = f"bigeye-demo-agent:sync-{uuid.uuid4().hex[:8]}"
    docker("tag", DEMO_IMAGE, old_tag)
    try:
        host = make_host(
            {"datahealth": agent(image=old_tag, max_concurrent=1, stop_grace_seconds=1, env=LONG)}
        )
        blocker = await host.start_job(client, host.request("datahealth", {"file_name": "a"}))
        await phase_is(blocker, "running")
        request = host.request("datahealth", {"file_name": "b"})
        waiting = await host.start_job(client, request)
        await waits_for_a_slot(host, waiting, request["run_id"])
        # `sync` moves the agent to a new tag; the old one is pruned from the engine
        config = yaml.safe_load((host.directory / "bigeye_agent.yml").read_text())
        config["agents"]["datahealth"].update(image=DEMO_IMAGE, env={})
        (host.directory / "bigeye_agent.yml").write_text(yaml.safe_dump(config))
        docker("rmi", old_tag)
        await blocker.cancel()
        began = time.monotonic()
        result = await result_within(waiting, 60)
        figure("image removed by sync while queued: slot freed → failed", time.monotonic() - began)
        assert time.monotonic() - began < 60
        assert result["status"] == "failed", result
        assert result["image"] == old_tag and old_tag in result["reason"], result
        none_left(host.host_id)
        after = await host.start_job(client, host.request("datahealth", {"file_name": "c"}))
        done = await result_within(after, 60)
        assert done["status"] == "succeeded" and done["image"] == DEMO_IMAGE
    finally:
        docker("rmi", old_tag, check=False)


# ---- fair slots ----------------------------------------------------------------------------------


async def test_runs_queued_on_a_busy_agent_do_not_delay_another_agents_job(
    make_host: Any, client: Client, figure: Any
) -> None:
    host = make_host(
        {
            "datahealth": agent(max_concurrent=1, stop_grace_seconds=1, env=LONG),
            "external_monitors": agent(),
        }
    )
    requests = [host.request("datahealth", {"file_name": "a"}) for _ in range(6)]
    busy = [await host.start_job(client, request) for request in requests]

    async def one_running() -> bool:
        phases = [(await h.query("status"))["phase"] for h in busy]
        return phases.count("running") == 1

    await async_wait_for(one_running, 60, "one run")
    for handle, request in zip(busy, requests, strict=True):
        if (await handle.query("status"))["phase"] != "running":
            await waits_for_a_slot(host, handle, request["run_id"])
    began = time.monotonic()
    other = await host.start_job(client, host.request("external_monitors", {"connector": "x"}))
    await phase_is(other, "running", within=10)
    figure("6 runs queued on one agent: another agent's job → running", time.monotonic() - began)
    assert time.monotonic() - began < 10
    assert (await result_within(other, 60))["status"] == "succeeded"
    for handle in busy:
        await handle.cancel()
    results = await asyncio.gather(*(result_within(h, 60) for h in busy))
    assert [r["status"] for r in results] == ["canceled"] * 6
    none_left(host.host_id)


async def test_freed_slots_go_to_the_waiters_in_the_order_they_came(
    make_host: Any, client: Client
) -> None:
    host = make_host({"datahealth": agent(max_concurrent=1, env={"DEMO_SLEEP_SECONDS": "3"})})
    since = time.time() - 1
    first = await host.start_job(client, host.request("datahealth", {"file_name": "a"}))
    await phase_is(first, "running")
    handles = [first]
    for _ in range(3):
        request = host.request("datahealth", {"file_name": "a"})
        handles.append(await host.start_job(client, request))
        await waits_for_a_slot(host, handles[-1], request["run_id"])
    results = await asyncio.gather(*(result_within(h, 90) for h in handles))
    assert [r["status"] for r in results] == ["succeeded"] * 4
    starts = sorted(container_events(host.host_id, since, "start"), key=lambda e: e["timeNano"])
    order = [e["Actor"]["Attributes"]["com.bigeye.orchestrator.run-id"] for e in starts]
    assert order == [r["run_id"] for r in results]


# ---- the job's output ----------------------------------------------------------------------------


def agent_lines(host: Any, run_id: str) -> list[dict[str, Any]]:
    return [e for e in log_events(host) if e.get("stream") == "agent" and e["run_id"] == run_id]


async def test_long_lines_and_interleaved_streams_are_forwarded_or_counted_to_the_byte(
    make_host: Any, client: Client
) -> None:
    size, count = 100 * 1024, 20
    host = make_host(
        {"datahealth": agent(env={"DEMO_LOG_LINE_BYTES": str(size), "DEMO_LOG_LINES": str(count),
                                  "DEMO_LOG_STREAM": "both", "DEMO_SLEEP_SECONDS": "1"})}
    )  # fmt: skip
    request = host.request("datahealth", {"file_name": "a"})
    result = await result_within(await host.start_job(client, request), 60)
    assert result["status"] == "succeeded", result
    lines = agent_lines(host, request["run_id"])
    numbered = [e for e in lines if e["event"].startswith("line ")]
    assert sorted(int(e["event"].split()[1].split("/")[0]) for e in numbered) == list(
        range(1, count + 1)
    )
    for event in numbered:
        number = int(event["event"].split()[1].split("/")[0])
        assert event["fd"] == ("stdout" if number % 2 else "stderr"), event["fd"]
        assert len(event["event"].encode()) + event["cut_bytes"] == size
        assert len(event["event"].encode()) == 64 * 1024
    summary = next(e for e in log_events(host) if e["event"] == "job output forwarded")
    assert summary["lines_cut"] == count and summary["bytes_cut"] == count * (size - 64 * 1024)
    assert summary["lines"] == len(lines)


async def test_log_streams_cut_again_and_again_forward_every_line_once(
    make_host: Any, client: Client, tmp_path: Path, figure: Any
) -> None:
    relay = SocketRelay(tmp_path / "docker.sock")
    relay.start()
    try:
        count = 300
        host = make_host(
            {"datahealth": agent(env={"DEMO_LOG_LINES": str(count), "DEMO_SLEEP_SECONDS": "12",
                                      "DEMO_LOG_STREAM": "both", "DEMO_LOG_LINE_BYTES": "30000"})},
            DOCKER_HOST=relay.url,
        )  # fmt: skip
        request = host.request("datahealth", {"file_name": "a"})
        handle = await host.start_job(client, request)
        await phase_is(handle, "running")
        cuts = 0
        while not (await handle.describe()).close_time:
            cuts += relay.cut()
            await asyncio.sleep(0.7)  # the fault's rhythm: a cut every 0.7 s
        result = await handle.result()
        assert result["status"] == "succeeded", result
        assert cuts >= 5
        figure("connections cut during a 12 s job (every line once)", cuts, "cuts")
        numbered = [e["event"] for e in agent_lines(host, request["run_id"])
                    if e["event"].startswith("line ")]  # fmt: skip
        assert len(numbered) == count, f"{len(numbered)} lines for {count} ({cuts} cuts)"
        assert {int(text.split()[1].split("/")[0]) for text in numbered} == set(range(1, count + 1))
        assert all(len(text) == 30000 for text in numbered)
    finally:
        relay.close()


# ---- start-up ------------------------------------------------------------------------------------


async def test_docker_and_temporal_away_at_start_up_are_waited_for_without_a_crash(
    make_host: Any, tmp_path: Path, figure: Any
) -> None:
    server = TemporalServer(tmp_path / "late-temporal")
    (tmp_path / "late-temporal").mkdir()
    relay = SocketRelay(tmp_path / "docker.sock")
    try:
        host = make_host(
            {"datahealth": agent()}, start=False, temporal=server.address, DOCKER_HOST=relay.url
        )
        host.start(wait=False)
        wait_for(lambda: "cannot connect to Temporal; retrying" in host.logs(), 30, "a retry")
        server.start(may_move=False)  # the host was told this address
        wait_for(lambda: "cannot reach Docker; retrying" in host.logs(), 60, "Docker's retry")
        assert host.proc is not None and host.proc.poll() is None, "no crash"
        relay.start()
        back = time.monotonic()
        wait_for(lambda: '"polling"' in host.logs(), 60, "polling once both answer")
        figure("Docker back at start-up → polling", time.monotonic() - back)
        events = log_events(host)
        names = [e["event"] for e in events]
        assert names.count("cannot connect to Temporal; retrying") <= 3
        assert names.count("cannot reach Docker; retrying") <= 3
        client = await Client.connect(server.address)
        handle = await host.start_job(client, host.request("datahealth", {"file_name": "a"}))
        assert (await result_within(handle, 60))["status"] == "succeeded"
    finally:
        relay.close()
        server.stop()
