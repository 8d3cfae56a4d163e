"""`make bench`: what the orchestrator costs over the Docker floor, measured side by side in one
run on this machine, and written to bench/results.md.

The floor is the Engine API itself with the orchestrator's own create body on the same
`bigeye-jobs` network (bench/floor.py). Ours is a job dispatched through a Temporal dev server to
`bigeye-orchestrator run` on this host, talking to the Docker socket directly ("in-process").
Samples of ours and the floor alternate, so both see the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import aiodocker
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client, WorkflowHandle

from bench.floor import Floor, StartEvents, floor_body
from bench.stack import Stack, registered_stack
from bench.stats import Row, percentile, table
from bench.world import DEMO_IMAGE, DevServer, Orchestrator, proc_cpu_seconds, rss_mb
from orchestrator.contract import job_workflow_id
from orchestrator.version import VERSION

RESULTS = Path(__file__).parent / "results.md"
ZERO = {"DEMO_SLEEP_SECONDS": "0", "DEMO_LOG_LINES": "1"}
NUMBERED = re.compile(rb"line (\d+)/")
HERE = "in-process"


class Dispatcher:
    """Starts jobs as Bigeye's side does: an `AgentJobRun` on the host's task queue."""

    def __init__(self, client: Client, task_queue: str) -> None:
        self.client = client
        self.task_queue = task_queue

    async def start(self) -> tuple[WorkflowHandle[Any, Any], str]:
        job_id = uuid.uuid4().hex[:12]
        run_id = uuid.uuid4().hex[:12]
        handle = await self.client.start_workflow(
            "AgentJobRun",
            {"job_id": job_id, "run_id": run_id, "agent": "datahealth",
             "parameters": {"file_name": "bench.yml"}},
            id=job_workflow_id(job_id),
            task_queue=self.task_queue,
            execution_timeout=timedelta(minutes=10),
        )  # fmt: skip
        return handle, run_id

    async def run(self) -> float:
        began = time.perf_counter()
        handle, _ = await self.start()
        result = await handle.result()
        assert result["status"] == "succeeded", result
        return time.perf_counter() - began


async def dispatch_latency(
    rounds: int, dispatcher: Dispatcher, floor: Floor, events: StartEvents, where: str = HERE
) -> list[Row]:
    ours: list[float] = []
    base: list[float] = []
    for _ in range(rounds):
        container_id, began = await floor.create_start()
        base.append((await events.started(container_id=container_id) - began) * 1000)
        await floor.remove(container_id)
        began = time.time()
        handle, run_id = await dispatcher.start()
        ours.append((await events.started(run_id=run_id) - began) * 1000)
        await handle.result()
    target = {50: "≤ +50 ms", 95: "≤ +150 ms"}
    return [
        Row(f"dispatch → container started, p{p}", where, "raw create+start",
            percentile(base, p), percentile(ours, p), "ms", target[p], kind="delta")
        for p in (50, 95)
    ]  # fmt: skip


async def one_job(rounds: int, dispatcher: Dispatcher, floor: Floor, where: str = HERE) -> Row:
    ours, base = [], []
    for _ in range(rounds):
        base.append(await floor.lifecycle())
        ours.append(await dispatcher.run())
    return Row("one zero-second job, end to end (median)", where,
               "raw create/start/wait/logs/remove", statistics.median(base),
               statistics.median(ours), "s", "≤ 1.10x")  # fmt: skip


async def hundred_jobs(
    dispatcher: Dispatcher, floor: Floor, count: int, slots: int, server: DevServer, label: str = ""
) -> tuple[Row, Row]:
    """The wall time, and what Bigeye's side (the dev server, on this machine only in the
    bench) spent in CPU per job meanwhile."""
    base = await floor.many(count, slots)
    server_cpu = proc_cpu_seconds(server.pid)
    began = time.perf_counter()
    await asyncio.gather(*(dispatcher.run() for _ in range(count)))
    ours = time.perf_counter() - began
    per_job = (proc_cpu_seconds(server.pid) - server_cpu) / count * 1000
    return (
        Row(f"{count} zero-second jobs, {slots} slots (wall){label}", HERE,
            f"raw, {slots} at a time", base, ours, "s", "≤ 1.3x"),
        Row(f"Temporal dev server CPU per job in those {count}{label}", HERE, "", None,
            per_job, "ms", "—", kind="plain"),
    )  # fmt: skip


async def hundred_jobs_on_disk(args: argparse.Namespace, work: Path, floor: Floor) -> list[Row]:
    """The same jobs with the dev server's state in a database file, as devcloud keeps it: the
    server's writes then share this machine's two cores with the engine and the jobs."""
    server = DevServer(work / "on-disk", on_disk=True)
    try:
        client = await Client.connect(server.address)
        orchestrator = Orchestrator(work / "on-disk", server.address, ZERO, slots=args.slots)
        try:
            dispatcher = Dispatcher(client, orchestrator.task_queue)
            for _ in range(3):
                await dispatcher.run()
            label = ", the dev server's state on disk"
            return list(await hundred_jobs(dispatcher, floor, args.jobs, args.slots, server, label))
        finally:
            orchestrator.stop()
    finally:
        server.stop()


def idle(orchestrator: Orchestrator, seconds: float) -> tuple[Row, Row]:
    pid = orchestrator.proc.pid
    cpu = proc_cpu_seconds(pid)
    began = time.monotonic()
    time.sleep(seconds)  # the measured window itself: nothing to wait for
    used = (proc_cpu_seconds(pid) - cpu) / (time.monotonic() - began) * 100
    return (
        Row("idle RSS", HERE, "", None, rss_mb(pid), "MB", "≤ 70 MB", kind="plain"),
        Row(f"idle CPU ({seconds:.0f} s window)", HERE, "", None, used, "% of a core",
            "≤ 0.5 %", kind="plain"),
    )  # fmt: skip


async def streaming_rss(
    dispatcher: Dispatcher, orchestrator: Orchestrator, idle_rss: float, jobs: int
) -> Row:
    orchestrator.write_agent(
        {"DEMO_SLEEP_SECONDS": "0", "DEMO_LOG_LINES": "100000", "DEMO_LOG_LINE_BYTES": "200"}
    )
    pid = orchestrator.proc.pid
    peak = rss_mb(pid)
    running = asyncio.gather(*(dispatcher.run() for _ in range(jobs)))
    while not running.done():
        peak = max(peak, rss_mb(pid))
        await asyncio.sleep(0.1)
    await running
    return Row(f"RSS with {jobs} jobs streaming logs at full speed (peak)", HERE, "idle",
               idle_rss, peak, "MB", "≤ idle + 60 MB", kind="delta")  # fmt: skip


async def log_forwarding(
    dispatcher: Dispatcher, orchestrator: Orchestrator, events: StartEvents, mb: int
) -> tuple[Row, Row]:
    line_bytes = 200
    lines = mb * 1_000_000 // line_bytes
    env = {"DEMO_SLEEP_SECONDS": "0", "DEMO_LOG_LINES": str(lines),
           "DEMO_LOG_LINE_BYTES": str(line_bytes)}  # fmt: skip
    orchestrator.write_agent(env)
    body = floor_body(orchestrator.config, orchestrator.host_id, {"file_name": "bench.yml"})
    async with aiodocker.Docker() as docker:
        floor = Floor(docker, body)
        container_id, _ = await floor.create_start()
        started = await events.started(container_id=container_id)
        follow = await asyncio.create_subprocess_exec(
            "docker", "logs", "-f", container_id,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        assert follow.stdout is not None
        # Docker 20.10's follow reader sometimes sends the first lines of a new log file twice:
        # the baseline counts each of the job's lines once.
        seen, numbered, others = 0, bytearray(lines + 1), set()
        while raw := await follow.stdout.readline():
            seen += 1
            found = NUMBERED.match(raw)
            if found:
                numbered[int(found.group(1))] = 1
            else:
                others.add(raw)
        distinct = sum(numbered) + len(others)
        await follow.wait()
        docker_seconds = time.time() - started
        await floor.remove(container_id)
    handle, run_id = await dispatcher.start()
    started_ours = await events.started(run_id=run_id)
    result = await handle.result()
    ours_seconds = time.time() - started_ours
    forwarded = [
        e for e in orchestrator.events()
        if e.get("event") == "job output forwarded" and e.get("run_id") == run_id
    ]  # fmt: skip
    got = forwarded[-1]["lines"] if forwarded else -1
    assert result["status"] == "succeeded", result
    rate = Row(f"log forwarding, {mb} MB from one job (rate; each follows its own container)",
               HERE, "docker logs -f", mb / docker_seconds, mb / ours_seconds, "MB/s",
               "≥ 0.5x")  # fmt: skip
    lines_row = Row("lines of that job forwarded", HERE,
                    f"docker logs -f, each once; it sent {seen - distinct} twice",
                    float(distinct), float(got), "lines", "+0 (none lost)",
                    kind="delta")  # fmt: skip
    return rate, lines_row


def image_rows() -> list[Row]:
    def size(image: str) -> float | None:
        done = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", image],
                              capture_output=True, text=True)  # fmt: skip
        return int(done.stdout) / 1e6 if done.returncode == 0 else None

    base = size("bigeye-local-base:bookworm") or size("python:3.11-slim-bookworm")
    rows = []
    for image in ("bigeyedata/agent-orchestrator:dev", "bigeyedata/agent-docker-socket-proxy:dev"):
        ours = size(image)
        if ours is not None and base is not None:
            rows.append(Row(f"image size above the base: {image.split('/')[1]}", "image",
                            "base", base, ours - base, "MB", "≤ 80 MB", kind="plain"))  # fmt: skip
    return rows


async def measure(args: argparse.Namespace, work: Path) -> list[Row]:
    server = DevServer(work)
    rows: list[Row] = []
    try:
        client = await Client.connect(server.address)
        orchestrator = Orchestrator(work, server.address, ZERO, slots=args.slots)
        async with aiodocker.Docker() as docker:
            events = StartEvents(docker)
            try:
                rows.append(Row("orchestrator process start → taking new runs", HERE, "",
                                None, orchestrator.polling_after, "s", "≤ 3 s",
                                kind="plain"))  # fmt: skip
                dispatcher = Dispatcher(client, orchestrator.task_queue)
                body = floor_body(orchestrator.config, orchestrator.host_id,
                                  {"file_name": "bench.yml"})  # fmt: skip
                floor = Floor(docker, body)
                for _ in range(3):  # warm-up: connections, caches, the image's first start
                    await floor.lifecycle()
                    await dispatcher.run()
                rows += await dispatch_latency(args.rounds, dispatcher, floor, events)
                rows.append(await one_job(args.rounds, dispatcher, floor))
                rows += await hundred_jobs(dispatcher, floor, args.jobs, args.slots, server)
                idle_rss, idle_cpu = idle(orchestrator, args.idle_seconds)
                rows += [idle_rss, idle_cpu]
                rows.append(
                    await streaming_rss(dispatcher, orchestrator, idle_rss.ours, args.slots)
                )
                rows += await log_forwarding(dispatcher, orchestrator, events, args.log_mb)
                orchestrator.stop()
                if not args.no_disk:
                    rows += await hundred_jobs_on_disk(args, work, floor)
            finally:
                await events.close()
                orchestrator.stop()
    finally:
        server.stop()
    if not args.no_stack:
        rows += await measure_stack(args, work)
    return rows + image_rows()


async def measure_stack(args: argparse.Namespace, work: Path) -> list[Row]:
    """The same dispatch and one-job rows through the compose stack: the orchestrator in its
    container, Docker through the socket proxy, Temporal over mTLS (devcloud's front)."""
    where = "stack"
    rows: list[Row] = []
    with registered_stack(work / "stack", ZERO) as stack:
        client = await Client.connect(stack.temporal_address, namespace=stack.namespace)
        dispatcher = Dispatcher(client, stack.task_queue)
        async with aiodocker.Docker() as docker:
            events = StartEvents(docker)
            try:
                body = floor_body(stack.config, stack.host_id, {"file_name": "bench.yml"})
                floor = Floor(docker, body)
                for _ in range(3):
                    await floor.lifecycle()
                    await dispatcher.run()
                rows += await dispatch_latency(args.rounds, dispatcher, floor, events, where)
                rows.append(await one_job(args.rounds, dispatcher, floor, where))
                rows.append(await front_round_trip(stack, client))
                rows.append(Row("idle RSS (the orchestrator's container)", where, "", None,
                                rss_mb(stack.pid()), "MB", "≤ 70 MB", kind="plain"))  # fmt: skip
                rows.append(Row("orchestrator container start → taking new runs", where, "",
                                None, stack.restart_to_taking_runs(), "s", "≤ 3 s",
                                kind="plain"))  # fmt: skip
            finally:
                await events.close()
    return rows


async def front_round_trip(stack: Stack, plain: Client, calls: int = 50) -> Row:
    """What devcloud's mTLS front (a Python relay standing in for Bigeye's Temporal endpoint)
    adds to each Temporal round trip the stack's orchestrator makes: a job takes about ten."""
    address = stack.mtls_address.replace("host.docker.internal", "127.0.0.1")
    tls = await Client.connect(address, namespace=stack.namespace, tls=stack.tls())

    async def median_ms(client: Client) -> float:
        times = []
        for _ in range(calls):
            began = time.perf_counter()
            await client.workflow_service.get_system_info(GetSystemInfoRequest())
            times.append((time.perf_counter() - began) * 1000)
        return statistics.median(times)

    return Row("a Temporal round trip (median): through devcloud's mTLS front", "stack",
               "plain, loopback", await median_ms(plain), await median_ms(tls), "ms", "—",
               kind="delta")  # fmt: skip


def machine() -> str:
    mem = next(
        (int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
         if line.startswith("MemTotal:")), 0,
    )  # fmt: skip
    docker = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    temporal = subprocess.run([str(Path(sys.executable).parent / "temporal"), "--version"],
                              capture_output=True, text=True).stdout.strip()  # fmt: skip
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {os.cpu_count()} cores, "
        f"{mem / 1024 / 1024:.0f} GiB · {platform.platform()} · Python "
        f"{platform.python_version()} · Docker {docker} · {temporal} · temporalio "
        f"{package_version('temporalio')} · orchestrator {VERSION} · demo image {DEMO_IMAGE}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "20")))
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--log-mb", type=int, default=100)
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results.md")
    parser.add_argument("--no-stack", action="store_true", help="in-process rows only")
    parser.add_argument(
        "--no-disk", action="store_true", help="skip the 100 jobs with the server's state on disk"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bigeye-bench-"))
    try:
        rows = asyncio.run(measure(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = (
        f"# make bench\n\n{machine()}\n\n{args.rounds} rounds for the latency rows; ours and "
        'the floor alternate. "in-process": `bigeye-orchestrator run` on the host, Docker '
        'socket directly, a Temporal dev server with its state in memory (its default); "stack": '
        "the compose stack `bigeye-agent register` sets up (orchestrator container, socket proxy, "
        "Temporal over mTLS through devcloud's front, devcloud's dev server with its state on "
        "disk). The dev server is Bigeye's side: in the bench it shares this machine's cores "
        "with the engine and the jobs, which a host never does; the rows with its CPU per job "
        "show what it costs here. The floor is always the Engine API directly.\n\n"
        + table(rows)
        + "\n"
    )
    print(text)
    if not args.no_write:
        RESULTS.write_text(text)
    print(json.dumps({"rows": len(rows)}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
