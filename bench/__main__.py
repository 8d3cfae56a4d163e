"""`make bench`: what the orchestrator costs over running the agent container by hand.

Side by side in one run, on this machine: the same demo-agent command run by `docker run` and
dispatched through Temporal to the orchestrator. Prints a markdown table of the ratios.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import yaml
from temporalio.client import Client

BIN = Path(sys.executable).parent
IMAGE = "bigeye-demo-agent:dev"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def docker_run(env: dict[str, str]) -> float:
    began = time.perf_counter()
    argv = ["docker", "run", "--rm", "--network", "none"]
    for key, value in env.items():
        argv += ["-e", f"{key}={value}"]
    argv += [IMAGE, "datahealth", "run", "--file-name", "bench.yml"]
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - began


async def orchestrated(client: Client, host_id: str) -> float:
    job = uuid.uuid4().hex[:10]
    began = time.perf_counter()
    result = await client.execute_workflow(
        "AgentJobRun",
        {
            "job_id": job,
            "run_id": "r1",
            "agent": "datahealth",
            "parameters": {"file_name": "b.yml"},
        },
        id=f"agent-job-{job}",
        task_queue=f"agent-orchestrator.{host_id}",
        execution_timeout=timedelta(minutes=5),
    )
    assert result["status"] == "succeeded", result
    return time.perf_counter() - began


async def concurrent(client: Client, host_id: str, count: int) -> float:
    began = time.perf_counter()
    await asyncio.gather(*(orchestrated(client, host_id) for _ in range(count)))
    return time.perf_counter() - began


def write_host(directory: Path, host_id: str, address: str, env: dict[str, str]) -> Path:
    (directory / "agent_config" / "datahealth").mkdir(parents=True)
    config = {
        "orchestrator": {"host_id": host_id, "temporal": {"address": address}},
        "agents": {"datahealth": {"image": IMAGE, "env": env, "max_concurrent": 8}},
    }
    path = directory / "bigeye_agent.yml"
    path.write_text(yaml.safe_dump(config))
    return path


async def measure(address: str, work: Path) -> list[tuple[str, float, float, str]]:
    client = await Client.connect(address)
    rows: list[tuple[str, float, float, str]] = []
    scenarios = {
        "short job (1 log line, no sleep)": {"DEMO_SLEEP_SECONDS": "0", "DEMO_LOG_LINES": "1"},
        "chatty job (20,000 lines of 200 B)": {
            "DEMO_SLEEP_SECONDS": "0",
            "DEMO_LOG_LINES": "20000",
            "DEMO_LOG_LINE_BYTES": "200",
        },
    }
    for name, env in scenarios.items():
        host_id = f"bench-{uuid.uuid4().hex[:6]}"
        config = write_host(work / host_id, host_id, address, env)
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, outside the measured part
            [str(BIN / "bigeye-orchestrator"), "run"],
            env={
                **os.environ,
                "BIGEYE_AGENT_CONFIG": str(config),
                "BIGEYE_HEALTH_ADDR": f"127.0.0.1:{free_port()}",
                "BIGEYE_LOG_FORMAT": "json",
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await orchestrated(client, host_id)  # warm-up: connections, image inspect
            idle = rss_kib(proc.pid, "VmRSS")
            by_hand = statistics.median(docker_run(env) for _ in range(ROUNDS))
            through = statistics.median(
                [await orchestrated(client, host_id) for _ in range(ROUNDS)]
            )
            rows.append((name, by_hand, through, f"orchestrator RSS {idle / 1024:.0f} MiB idle"))
            if name.startswith("short"):
                eight = await concurrent(client, host_id, 8)
                peak = rss_kib(proc.pid, "VmHWM")
                rows.append(
                    (
                        "8 short jobs at once (wall)",
                        by_hand * 8,
                        eight,
                        f"peak RSS {peak / 1024:.0f} MiB",
                    )
                )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    return rows


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="bigeye-bench-"))
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "temporal"), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port),
         "--ui-port", str(free_port()), "--headless", "--log-level", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("bench: the Temporal dev server did not start") from None
                time.sleep(0.2)
        time.sleep(0.5)
        rows = asyncio.run(measure(address, work))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{ROUNDS} rounds each, medians, on {os.cpu_count()} cores\n")
    print("| scenario | docker run (s) | through the orchestrator (s) | ratio | note |")
    print("|---|---:|---:|---:|---|")
    for name, by_hand, through, note in rows:
        print(f"| {name} | {by_hand:.2f} | {through:.2f} | {through / by_hand:.2f}x | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
