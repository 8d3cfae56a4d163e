"""`python -m bench.fleet`: Bigeye's side of a fleet, N simulated orchestrators in one process.

One Temporal dev server (its own, on a temporary sqlite file) and devcloud's own `AgentHeartbeat`
worker (`devcloud.control_plane`, recording into a temporary `cloud.db`, in a child process so
that its CPU is counted apart). Every simulated host runs the orchestrator's own heartbeat loop
(`orchestrator.heartbeat.heartbeat_loop`: signal-with-start of `AgentHeartbeat`) with a
`HostStatus` built as `HostActivities.collect` builds it for an idle host, at one beat per 30 s
divided by `--compress`, each from a random phase.

The first `--ping-hosts` hosts (all by default) also answer `HostPing` the way the orchestrator
does: the real workflow and activity on the host's task queue, polled as the orchestrator's own
host-queue worker polls it (`orchestrator.worker.build_workers`). No host needs state on the
server beyond its task queues: runs are kept to their release by release queues
(orchestrator/releases.py), not by worker deployments, see docs/scale.md.

The fleet grows step by step (`--hosts 100,500,1000`): a step's hosts are the first N, so the
hosts of the previous step keep their `AgentHeartbeat` runs. Each step waits until every host
has delivered a beat, measures for `--duration` seconds, stops the beats, waits until devcloud
has recorded every acknowledged one, then reads the histories of a sample of hosts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import random
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Final, TextIO

import structlog
from temporalio.api.enums.v1 import EventType, TaskQueueKind
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import PayloadConverter
from temporalio.worker import Worker

from activities.hoststatus import HostActivities
from bench.stats import percentile, render_table
from bench.world import proc_ticks, rss_mb
from devcloud import db
from devcloud.control_plane import control_plane_worker
from devcloud.temporal_server import (
    DevServerConfig,
    die_with_parent,
    find_temporal_binary,
    pick_port,
    probe,
)
from orchestrator.contract import (
    DEFAULT_NAMESPACE,
    HEARTBEAT_WORKFLOW_TYPE,
    HOST_PING_WORKFLOW_TYPE,
    DockerStatus,
    HostStatus,
    WorkerStatus,
    heartbeat_workflow_id,
    task_queue,
)
from orchestrator.heartbeat import heartbeat_loop, send_heartbeat
from orchestrator.pauses import pause
from orchestrator.version import VERSION
from orchestrator.worker import host_queue_worker

HEARTBEAT_SECONDS: Final = 30.0  # the orchestrator's default interval (design §3)
RESULTS: Final = Path(__file__).with_name("fleet-results.md")
DEFAULT_HOSTS: Final = (100, 500, 1000)
# one beat per 15 s: 1,000 hosts send 67 beats/s, past what the dev server's sqlite store
# records on 2 cores (~40/s), so the last step shows the ceiling (docs/scale.md)
DEFAULT_COMPRESS: Final = 2.0
DEFAULT_DURATION: Final = 60.0
DEFAULT_PING_HOSTS: Final = 1_000_000  # every host of the largest step
DEFAULT_SAMPLE: Final = 50
MANAGED_AGENTS: Final = ("datahealth", "external_monitors", "lineage_plus")
DOCKER_VERSION: Final = "27.5.1"
SLOTS_MAX: Final = 8
PING_EVERY_SECONDS: Final = 1.0
PING_TIMEOUT: Final = timedelta(seconds=30)
READY_SECONDS: Final = 90.0
DRAIN_CAP_SECONDS: Final = 120.0
DRAIN_STALL_SECONDS: Final = 15.0
PROBE_INTERVAL_SECONDS: Final = 0.1
PROBE_MAX_BEATS: Final = 1200
HISTORY_FETCHES_AT_ONCE: Final = 4


# ---- pure pieces ----------------------------------------------------------------------------


def beat_interval(compress: float) -> float:
    """Seconds between two beats of one host: the real 30 s, compressed in time."""
    if compress <= 0:
        raise ValueError("--compress must be positive")
    return HEARTBEAT_SECONDS / compress


def phase_offsets(count: int, every: float, rng: random.Random) -> list[float]:
    """Each host's first beat, uniform in [0, every): hosts that start together do not beat
    in lockstep, as real hosts started at unrelated times do not."""
    return [rng.random() * every for _ in range(count)]


@dataclass(frozen=True)
class Summary:
    count: int
    p50: float
    p99: float
    max: float


def summarize(values: Sequence[float]) -> Summary | None:
    if not values:
        return None
    return Summary(len(values), percentile(values, 50), percentile(values, 99), max(values))


def cpu_percent(ticks: int, seconds: float, ticks_per_second: int) -> float:
    """CPU ticks spent over a wall-clock window, as % of one core."""
    return 100.0 * ticks / ticks_per_second / seconds if seconds > 0 else 0.0


def parse_time(text: str) -> float:
    """An RFC 3339 timestamp (`Z` or an offset) as epoch seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def rfc3339(moment: datetime) -> str:
    """As `HostActivities.collect` stamps `sent_at`."""
    return moment.isoformat().replace("+00:00", "Z")


def latency_ms(sent_at: str, received_at: str) -> float:
    return (parse_time(received_at) - parse_time(sent_at)) * 1000.0


def ms_pair(summary: Summary | None) -> str:
    """`p50 / p99` in milliseconds, or a dash when nothing was measured."""
    if summary is None:
        return "-"
    return f"{summary.p50:.0f} / {summary.p99:.0f}"


# What the dev server's /metrics counts in the namespace: name → (metric, labels to match).
WATCHED: Final[dict[str, tuple[str, dict[str, str]]]] = {
    "transitions": ("state_transition_count_count", {}),
    "persistence": ("persistence_requests", {}),
    "updates": ("persistence_requests", {"operation": "UpdateWorkflowExecution"}),
    "workflow_tasks": (
        "service_requests",
        {"operation": "RecordWorkflowTaskStarted", "service_name": "history"},
    ),
    # long polls the frontend answered (a poll with no task returns after about a minute)
    "workflow_polls": (
        "service_requests",
        {"operation": "PollWorkflowTaskQueue", "service_name": "frontend"},
    ),
    "activity_polls": (
        "service_requests",
        {"operation": "PollActivityTaskQueue", "service_name": "frontend"},
    ),
}
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)\{([^}]*)\}\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def server_counters(text: str, namespace: str = DEFAULT_NAMESPACE) -> dict[str, float]:
    """The WATCHED counters of one namespace, summed over their other labels."""
    totals = dict.fromkeys(WATCHED, 0.0)
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels = match.group(1), dict(_LABEL.findall(match.group(2)))
        if labels.get("namespace") != namespace:
            continue
        for key, (metric, wanted) in WATCHED.items():
            if name == metric and all(labels.get(k) == v for k, v in wanted.items()):
                totals[key] += float(match.group(3))
    return totals


def counter_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before[key] for key in WATCHED}


def per_beat(count: float, beats: float) -> str:
    return f"{count / beats:.2f}" if beats else "-"


# ---- what one step measured -----------------------------------------------------------------


@dataclass
class HistoryStats:
    """What the sampled `AgentHeartbeat` histories say about the measured window."""

    hosts: int = 0
    events: int = 0
    bytes: int = 0
    beats: int = 0  # recording activities completed in the window
    latencies_ms: list[float] = field(default_factory=list)
    # how long tasks waited in their task queue for devcloud's worker (schedule → start)
    workflow_task_waits_ms: list[float] = field(default_factory=list)
    activity_waits_ms: list[float] = field(default_factory=list)
    workflow_tasks: int = 0
    # scheduled on the workflow's normal queue, not the worker's sticky one: the worker no
    # longer had the workflow cached (or its sticky queue timed out), so it replays it whole
    nonsticky_tasks: int = 0

    def add(self, other: HistoryStats) -> None:
        self.hosts += other.hosts
        self.events += other.events
        self.bytes += other.bytes
        self.beats += other.beats
        self.latencies_ms += other.latencies_ms
        self.workflow_task_waits_ms += other.workflow_task_waits_ms
        self.activity_waits_ms += other.activity_waits_ms
        self.workflow_tasks += other.workflow_tasks
        self.nonsticky_tasks += other.nonsticky_tasks


@dataclass
class StepResult:
    hosts: int
    window_seconds: float
    beats_in_window: int
    recorded_in_window: int
    server_cpu: float
    control_plane_cpu: float
    simulator_cpu: float
    machine_cpu: float  # every process on the machine, so that other load is visible
    server_rss_mib: float
    simulator_rss_mib: float
    rpc: Summary | None
    delivery: Summary | None
    history: HistoryStats
    continued_as_new: int
    acknowledged: int
    failed: int
    recorded: int
    pings_sent: int
    pings: Summary | None
    db_bytes: int
    warmup_seconds: float
    late_hosts: int  # hosts without a delivered beat when the window opened
    server_work: dict[str, float]  # WATCHED counters over the window

    @property
    def lost(self) -> int:
        return max(0, self.acknowledged - self.recorded)


COST_HEADERS: Final = (
    "hosts",
    "beats/s sent",
    "beats/s recorded",
    "server CPU % of a core",
    "AgentHeartbeat worker CPU %",
    "simulator CPU %",
    "machine CPU % (all processes)",
    "server RSS MiB",
    "simulator RSS MiB",
    "events / beat",
    "workflow tasks / beat",
    "of which not sticky %",
    "history bytes / beat",
    "sqlite bytes / beat",
)
DELIVERY_HEADERS: Final = (
    "hosts",
    "signal RPC p50 / p99 ms",
    "send → recorded p50 / p99 ms",
    "workflow task wait p50 / p99 ms",
    "activity wait p50 / p99 ms",
    "acknowledged",
    "failed sends",
    "recorded",
    "lost",
    "continue-as-new / host",
    "pings ok / sent",
    "ping p50 / p99 ms",
)


WORK_HEADERS: Final = (
    "hosts",
    "state transitions/s",
    "per beat",
    "persistence requests/s",
    "per beat",
    "UpdateWorkflowExecution per beat",
    "workflow tasks/s",
    "per beat",
    "long polls answered/s",
    "server CPU ms per beat",
    "AgentHeartbeat worker CPU ms per beat",
)


def cpu_ms(cpu_percent_of_core: float, seconds: float) -> float:
    return cpu_percent_of_core * 10.0 * seconds  # 1 % of a core = 10 ms of CPU a second


@dataclass(frozen=True)
class WorkWindow:
    """One row of the server-work table: a window's counters and CPU."""

    label: str
    work: dict[str, float]
    seconds: float
    beats: float  # recorded in the window (0 without beats)
    cpu: list[float]  # server, worker, simulator, machine


# Below this share of its own beats, a window adds too few beats over the row above for a
# per-beat difference to mean anything (the server was saturated).
MARGINAL_SHARE: Final = 0.2


def work_row(window: WorkWindow, base: WorkWindow) -> list[str]:
    """Per second as measured; per beat as the marginal cost over the row above (`base`):
    the difference in counters divided by the difference in recorded beats, so that the
    background (pollers, pings) cancels out."""
    w, seconds = window.work, window.seconds
    scale = seconds / base.seconds  # the base's rates over this window's length
    extra = window.beats - base.beats * scale
    if extra <= MARGINAL_SHARE * window.beats:
        extra = 0.0  # no beats, or saturated: no marginal cost to show
    net = {key: w[key] - base.work[key] * scale for key in WATCHED}
    server_ms = cpu_ms(window.cpu[0], seconds) - cpu_ms(base.cpu[0], seconds)
    worker_ms = cpu_ms(window.cpu[1], seconds) - cpu_ms(base.cpu[1], seconds)
    return [
        window.label,
        f"{w['transitions'] / seconds:.1f}",
        per_beat(net["transitions"], extra),
        f"{w['persistence'] / seconds:.1f}",
        per_beat(net["persistence"], extra),
        per_beat(net["updates"], extra),
        f"{w['workflow_tasks'] / seconds:.1f}",
        per_beat(net["workflow_tasks"], extra),
        f"{(w['workflow_polls'] + w['activity_polls']) / seconds:.1f}",
        f"{server_ms / extra:.1f}" if extra else "-",
        f"{worker_ms / extra:.1f}" if extra else "-",
    ]


def cost_row(step: StepResult) -> list[str]:
    h = step.history
    return [
        f"{step.hosts:,}",
        f"{step.beats_in_window / step.window_seconds:.1f}",
        f"{step.recorded_in_window / step.window_seconds:.1f}",
        f"{step.server_cpu:.1f}",
        f"{step.control_plane_cpu:.1f}",
        f"{step.simulator_cpu:.1f}",
        f"{step.machine_cpu:.1f}",
        f"{step.server_rss_mib:.0f}",
        f"{step.simulator_rss_mib:.0f}",
        f"{h.events / h.beats:.2f}" if h.beats else "-",
        f"{h.workflow_tasks / h.beats:.2f}" if h.beats else "-",
        f"{100 * h.nonsticky_tasks / h.workflow_tasks:.0f}" if h.workflow_tasks else "-",
        f"{h.bytes / h.beats:,.0f}" if h.beats else "-",
        f"{step.db_bytes / step.recorded:,.0f}" if step.recorded else "-",
    ]


def delivery_row(step: StepResult) -> list[str]:
    pings_ok = step.pings.count if step.pings else 0
    return [
        f"{step.hosts:,}",
        ms_pair(step.rpc),
        ms_pair(step.delivery),
        ms_pair(summarize(step.history.workflow_task_waits_ms)),
        ms_pair(summarize(step.history.activity_waits_ms)),
        f"{step.acknowledged:,}",
        f"{step.failed:,}",
        f"{step.recorded:,}",
        f"{step.lost:,}",
        f"{step.continued_as_new / step.hosts:.3f}",
        f"{pings_ok} / {step.pings_sent}",
        ms_pair(step.pings),
    ]


@dataclass(frozen=True)
class ProbeResult:
    """One host beating fast until its `AgentHeartbeat` run continued as new."""

    beats_sent: int
    beats_in_run: int
    events_in_run: int
    bytes_in_run: int
    seconds: float


@dataclass(frozen=True)
class Setup:
    every: float
    compress: float
    duration: float
    ping_hosts: int
    sample: int
    idle_seconds: float
    # the fleet without beats (pollers, one ping a second)
    idle_cpu: list[float]  # server, worker, simulator, machine
    idle_work: dict[str, float]
    idle_pings_sent: int
    idle_pings: Summary | None


# ---- the machine ----------------------------------------------------------------------------


def machine_ticks() -> int:
    """Busy ticks of every CPU (all of /proc/stat's first line but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(values) - values[3] - values[4]


def self_ticks() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round((usage.ru_utime + usage.ru_stime) * os.sysconf("SC_CLK_TCK"))


def machine_description() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    return (
        f"{os.cpu_count()} cores ({model}), {mem_kib / 1024 / 1024:.1f} GiB RAM, "
        f"Linux {platform.release()}, Python {platform.python_version()}"
    )


def versions(binary: Path) -> str:
    cli = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    return f"{cli}; temporalio SDK {package_version('temporalio')}"


@dataclass
class CpuClock:
    """CPU counters of the processes that matter, read at the start and end of a window."""

    server_pid: int
    control_plane_pid: int
    started: float = 0.0
    marks: tuple[int, int, int, int] = (0, 0, 0, 0)

    def read(self) -> tuple[int, int, int, int]:
        return (
            proc_ticks(self.server_pid),
            proc_ticks(self.control_plane_pid),
            self_ticks(),
            machine_ticks(),
        )

    def start(self) -> None:
        self.started, self.marks = time.monotonic(), self.read()

    def stop(self) -> tuple[float, list[float]]:
        """Seconds elapsed and the % of one core of server, worker, simulator, machine."""
        seconds = time.monotonic() - self.started
        tick = os.sysconf("SC_CLK_TCK")
        ends = self.read()
        return seconds, [
            cpu_percent(b - a, seconds, tick) for a, b in zip(self.marks, ends, strict=True)
        ]


# ---- the processes: dev server and the AgentHeartbeat worker ---------------------------------


def stop_process(proc: subprocess.Popen[Any], grace: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# Every ping host holds its pollers open as the orchestrator does (2 + 2 on its host queue):
# past 300 hosts that exceeds the 1,200 long polls a frontend admits per namespace by default,
# which a cluster for a fleet raises (docs/scale.md), as the dev server does here.
POLLER_LIMIT = ("--dynamic-config-value", "frontend.namespaceCount=1000000")


@dataclass(frozen=True)
class Server:
    config: DevServerConfig
    metrics_port: int
    proc: subprocess.Popen[Any]


def start_server(work: Path, output: TextIO) -> Server:
    port = pick_port()
    ui_port = pick_port(exclude=frozenset({port}))
    metrics_port = pick_port(exclude=frozenset({port, ui_port}))
    config = DevServerConfig(
        binary=find_temporal_binary(), db_file=work / "temporal.db", port=port, ui_port=ui_port
    )
    proc = subprocess.Popen(
        [*config.command(), "--metrics-port", str(metrics_port), *POLLER_LIMIT],
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,
    )
    return Server(config, metrics_port, proc)


async def scrape(metrics_port: int) -> dict[str, float]:
    """The dev server's WATCHED counters now."""

    def fetch() -> str:
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())

    return server_counters(await asyncio.to_thread(fetch))


async def wait_server(config: DevServerConfig, proc: subprocess.Popen[Any]) -> None:
    """Until the frontend answers for the namespace (not a fixed sleep: a slow start waits)."""
    deadline = time.monotonic() + READY_SECONDS
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"bench.fleet: the Temporal dev server exited ({proc.returncode})")
        try:
            await probe(config.address, config.namespace, within=2.0)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise SystemExit("bench.fleet: the Temporal dev server did not answer") from None
            await asyncio.sleep(0.2)


async def start_control_plane(address: str, state_dir: Path) -> asyncio.subprocess.Process:
    """devcloud's `AgentHeartbeat` worker in a child process; returns once it polls."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.fleet", "--control-plane", str(state_dir),
        "--address", address,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        preexec_fn=die_with_parent,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), READY_SECONDS)
    if line.strip() != b"ready":
        raise SystemExit(f"bench.fleet: the AgentHeartbeat worker did not start: {line!r}")
    return proc


async def serve_control_plane(address: str, state_dir: Path) -> None:
    """The child: devcloud's own worker and store, as `bigeye-cloud-dev server` builds them."""
    conn = db.connect(state_dir)
    client = await Client.connect(address, namespace=DEFAULT_NAMESPACE)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with control_plane_worker(client, conn):
        print("ready", flush=True)
        await stop.wait()
    conn.close()


async def stop_child(proc: asyncio.subprocess.Process, grace: float = 15.0) -> None:
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        proc.kill()
        await proc.wait()


# ---- the simulated hosts --------------------------------------------------------------------


def idle_host_status(host_id: str) -> HostStatus:
    """What `HostActivities.collect` reports for a healthy idle host with three agents."""
    return HostStatus(
        host_id=host_id,
        sent_at=rfc3339(datetime.now(UTC)),
        orchestrator_version=VERSION,
        build_id=VERSION,
        managed_agents=list(MANAGED_AGENTS),
        running_runs=[],
        docker=DockerStatus(reachable=True, version=DOCKER_VERSION),
        worker=WorkerStatus(polling=True, slots_used=0, slots_max=SLOTS_MAX),
    )


class SimulatedHost(HostActivities):
    """A host whose status needs no Docker engine or config file.

    The inherited `host_status` activity (the one `HostPing` runs) calls this `collect`, as the
    heartbeat loop does; nothing else of `HostActivities` is used, so its state is not set up.
    """

    def __init__(self, host_id: str) -> None:
        self.host_id = host_id

    async def collect(self) -> HostStatus:
        return idle_host_status(self.host_id)


def host_ids(count: int) -> list[str]:
    return [f"fleet-host-{i:05d}" for i in range(count)]


@dataclass
class Tally:
    """Every beat the simulated hosts sent: when, how long the signal RPC took, delivered."""

    hosts: int
    sent: list[tuple[float, float, bool]] = field(default_factory=list)
    delivered_hosts: set[str] = field(default_factory=set)
    all_delivered: asyncio.Event = field(default_factory=asyncio.Event)

    def on_beat(self, delivered: bool, status: HostStatus | None) -> None:
        if status is None:
            return
        sent = parse_time(status.sent_at)
        self.sent.append((sent, (time.time() - sent) * 1000.0, delivered))
        if delivered:
            self.delivered_hosts.add(status.host_id)
            if len(self.delivered_hosts) >= self.hosts:
                self.all_delivered.set()

    def acknowledged(self) -> int:
        return sum(1 for _, _, ok in self.sent if ok)

    def failed(self) -> int:
        return sum(1 for _, _, ok in self.sent if not ok)

    def in_window(self, start: float, end: float) -> list[tuple[float, float, bool]]:
        return [beat for beat in self.sent if start <= beat[0] < end]


async def beat_from(
    client: Client, host_id: str, offset: float, every: float, stop: asyncio.Event, tally: Tally
) -> None:
    """One host: its phase, then the orchestrator's own heartbeat loop."""
    await pause(stop, offset)
    if not stop.is_set():
        await heartbeat_loop(client, SimulatedHost(host_id), every, stop, tally.on_beat)


def ping_worker(client: Client, host_id: str, executor: ThreadPoolExecutor) -> Worker:
    """The orchestrator's own host-queue worker (`HostPing`, and the first task of job runs)."""
    return host_queue_worker(
        client,
        host_id,
        SimulatedHost(host_id),
        workflow_task_executor=executor,  # one pool for all: a thread pool per host is waste
        identity=f"bigeye-orchestrator@{host_id}",
    )


async def ping(client: Client, host_id: str) -> float | None:
    """Bigeye's `HostPing` of one host: the round trip in ms, None when it failed."""
    began = time.perf_counter()
    try:
        status = await client.execute_workflow(
            HOST_PING_WORKFLOW_TYPE,
            id=f"fleet-ping-{uuid.uuid4().hex[:12]}",
            task_queue=task_queue(host_id),
            execution_timeout=PING_TIMEOUT,
        )
    except Exception:
        return None
    if not isinstance(status, dict) or status.get("host_id") != host_id:
        return None
    return (time.perf_counter() - began) * 1000.0


async def ping_until(
    client: Client, hosts: Sequence[str], stop: asyncio.Event, rng: random.Random
) -> tuple[int, list[float]]:
    """One ping a second to a random pingable host until `stop`; (sent, round trips)."""
    pending: list[asyncio.Task[float | None]] = []
    while not stop.is_set():
        pending.append(asyncio.create_task(ping(client, rng.choice(hosts))))
        await pause(stop, PING_EVERY_SECONDS)
    results = await asyncio.gather(*pending)
    return len(pending), [r for r in results if r is not None]


# ---- reading what devcloud recorded ---------------------------------------------------------


def recorded_total(conn: sqlite3.Connection, hosts: Sequence[str]) -> int:
    """Heartbeats devcloud's recording activity stored for these hosts (its `received`)."""
    wanted = set(hosts)
    rows = conn.execute("SELECT host_id, received FROM heartbeats").fetchall()
    return sum(int(row[1]) for row in rows if row[0] in wanted)


async def drain(conn: sqlite3.Connection, hosts: Sequence[str], before: int, expected: int) -> int:
    """Until devcloud has recorded every acknowledged beat, or nothing moved for a while."""
    deadline = time.monotonic() + DRAIN_CAP_SECONDS
    last, moved_at = -1, time.monotonic()
    while True:
        recorded = recorded_total(conn, hosts) - before
        now = time.monotonic()
        if recorded != last:
            last, moved_at = recorded, now
        if recorded >= expected or now - moved_at > DRAIN_STALL_SECONDS or now > deadline:
            return recorded
        await asyncio.sleep(0.5)


def db_size(path: Path) -> int:
    """The dev server's sqlite store with its write-ahead log."""
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def event_seconds(event: HistoryEvent) -> float:
    return event.event_time.seconds + event.event_time.nanos / 1e9


SCHEDULED: Final = (
    EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
)


def scheduled_times(events: Sequence[HistoryEvent]) -> dict[int, float]:
    """Event id of every workflow or activity task scheduled → when."""
    return {e.event_id: event_seconds(e) for e in events if e.event_type in SCHEDULED}


def beats_sent_at(events: Sequence[HistoryEvent], converter: PayloadConverter) -> dict[int, str]:
    """Event id of every recording activity scheduled → the `sent_at` of the beat it records."""
    sent: dict[int, str] = {}
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            payloads = event.activity_task_scheduled_event_attributes.input.payloads
            sent[event.event_id] = str(converter.from_payloads(payloads)[0]["status"]["sent_at"])
    return sent


def history_window(
    events: Sequence[HistoryEvent], converter: PayloadConverter, start: float, end: float
) -> HistoryStats:
    """Events and bytes written in [start, end), the beats recorded then, each beat's
    send → recorded latency (`sent_at` in the activity's input, the receive time it returns)
    and how long each task of the window waited for the worker."""
    stats = HistoryStats(hosts=1)
    scheduled, sent = scheduled_times(events), beats_sent_at(events, converter)
    for event in events:
        at = event_seconds(event)
        if not start <= at < end:
            continue
        stats.events += 1
        stats.bytes += event.ByteSize()
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
            queue = event.workflow_task_scheduled_event_attributes.task_queue
            stats.workflow_tasks += 1
            stats.nonsticky_tasks += queue.kind != TaskQueueKind.TASK_QUEUE_KIND_STICKY
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            since = scheduled.get(event.workflow_task_started_event_attributes.scheduled_event_id)
            stats.workflow_task_waits_ms.append((at - (since or at)) * 1000.0)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            since = scheduled.get(event.activity_task_started_event_attributes.scheduled_event_id)
            stats.activity_waits_ms.append((at - (since or at)) * 1000.0)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            attrs = event.activity_task_completed_event_attributes
            stats.beats += 1
            if attrs.scheduled_event_id in sent:
                received = str(converter.from_payloads(attrs.result.payloads)[0])
                stats.latencies_ms.append(latency_ms(sent[attrs.scheduled_event_id], received))
    return stats


async def sample_histories(
    client: Client, hosts: Sequence[str], start: float, end: float
) -> HistoryStats:
    total = HistoryStats()
    gate = asyncio.Semaphore(HISTORY_FETCHES_AT_ONCE)

    async def one(host_id: str) -> HistoryStats:
        handle = client.get_workflow_handle(heartbeat_workflow_id(host_id))
        async with gate:
            history = await handle.fetch_history()
        return history_window(history.events, client.data_converter.payload_converter, start, end)

    for stats in await asyncio.gather(*(one(h) for h in hosts)):
        total.add(stats)
    return total


async def continued_as_new(client: Client) -> int:
    query = f"WorkflowType = '{HEARTBEAT_WORKFLOW_TYPE}' AND ExecutionStatus = 'ContinuedAsNew'"
    return (await client.count_workflows(query)).count


# ---- one step: N hosts beating --------------------------------------------------------------


@dataclass
class Bench:
    client: Client
    conn: sqlite3.Connection
    server: Server
    db_file: Path
    clock: CpuClock
    every: float
    duration: float
    sample: int
    pingable: list[str]
    rng: random.Random


async def wait_first_beats(tally: Tally, within: float) -> int:
    """Until every host delivered a beat (its workflow exists); returns how many have not."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            await tally.all_delivered.wait()
    return tally.hosts - len(tally.delivered_hosts)


@dataclass(frozen=True)
class Window:
    seconds: float
    cpu: list[float]  # server, worker, simulator, machine
    work: dict[str, float]  # the server's WATCHED counters over the window
    pings_sent: int
    round_trips: list[float]


async def measure_window(bench: Bench, seconds: float) -> Window:
    """The window proper: CPU of every process, the server's counters, and pings."""
    stop = asyncio.Event()
    counters = await scrape(bench.server.metrics_port)
    bench.clock.start()
    pinger = asyncio.create_task(ping_until(bench.client, bench.pingable, stop, bench.rng))
    await asyncio.sleep(seconds)  # the measured span itself, not a synchronisation
    elapsed, cpu = bench.clock.stop()
    work = counter_delta(counters, await scrape(bench.server.metrics_port))
    stop.set()
    pings_sent, round_trips = await pinger
    return Window(elapsed, cpu, work, pings_sent, round_trips)


async def run_step(bench: Bench, count: int) -> StepResult:
    hosts = host_ids(count)
    before, cans_before, db_before = (
        recorded_total(bench.conn, hosts),
        await continued_as_new(bench.client),
        db_size(bench.db_file),
    )
    tally, stop = Tally(count), asyncio.Event()
    offsets = phase_offsets(count, bench.every, bench.rng)
    beating = [
        asyncio.create_task(beat_from(bench.client, h, o, bench.every, stop, tally))
        for h, o in zip(hosts, offsets, strict=True)
    ]
    began = time.monotonic()
    late = await wait_first_beats(tally, max(4 * bench.every, 60.0))
    warmup = time.monotonic() - began
    start, recorded_before_window = time.time(), recorded_total(bench.conn, hosts)
    measured = await measure_window(bench, bench.duration)
    recorded_in_window = recorded_total(bench.conn, hosts) - recorded_before_window
    end = start + measured.seconds
    server_rss, sim_rss = rss_mb(bench.server.proc.pid), rss_mb(os.getpid())
    stop.set()
    await asyncio.gather(*beating)
    recorded = await drain(bench.conn, hosts, before, tally.acknowledged())
    sample = bench.rng.sample(hosts, min(bench.sample, count))
    history = await sample_histories(bench.client, sample, start, end)
    window = tally.in_window(start, end)
    return StepResult(
        hosts=count,
        window_seconds=measured.seconds,
        beats_in_window=len(window),
        recorded_in_window=recorded_in_window,
        server_cpu=measured.cpu[0],
        control_plane_cpu=measured.cpu[1],
        simulator_cpu=measured.cpu[2],
        machine_cpu=measured.cpu[3],
        server_rss_mib=server_rss,
        simulator_rss_mib=sim_rss,
        rpc=summarize([rpc for _, rpc, ok in window if ok]),
        delivery=summarize(history.latencies_ms),
        history=history,
        continued_as_new=await continued_as_new(bench.client) - cans_before,
        acknowledged=tally.acknowledged(),
        failed=tally.failed(),
        recorded=recorded,
        pings_sent=measured.pings_sent,
        pings=summarize(measured.round_trips),
        db_bytes=db_size(bench.db_file) - db_before,
        warmup_seconds=warmup,
        late_hosts=late,
        server_work=measured.work,
    )


# ---- continue-as-new, observed --------------------------------------------------------------


async def continue_as_new_probe(client: Client) -> ProbeResult | None:
    """One host beats 10 times a second (each acknowledged before the next) until its first
    run has continued as new: how many beats, events and bytes one `AgentHeartbeat` run
    holds. Beats this close can share a workflow task on a slow machine: compare the run's
    events per beat with the fleet's."""
    host_id = "fleet-probe-00000"
    handle = client.get_workflow_handle(heartbeat_workflow_id(host_id))
    began = time.monotonic()
    await send_heartbeat(client, idle_host_status(host_id))
    first_run = (await handle.describe()).run_id
    sent, continued = 1, False
    while sent < PROBE_MAX_BEATS and not continued:
        tick = time.monotonic()
        await send_heartbeat(client, idle_host_status(host_id))
        sent += 1
        if sent % 50 == 0:
            continued = (await handle.describe()).run_id != first_run
        await asyncio.sleep(max(0.0, PROBE_INTERVAL_SECONDS - (time.monotonic() - tick)))
    if not continued:
        return None
    run = client.get_workflow_handle(heartbeat_workflow_id(host_id), run_id=first_run)
    events = (await run.fetch_history()).events
    beats = sum(1 for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
    return ProbeResult(
        beats_sent=sent,
        beats_in_run=beats,
        events_in_run=len(events),
        bytes_in_run=sum(e.ByteSize() for e in events),
        seconds=time.monotonic() - began,
    )


# ---- the report -----------------------------------------------------------------------------


def render_report(
    steps: Sequence[StepResult],
    setup: Setup,
    probe: ProbeResult | None,
    machine: str,
    software: str,
    date: str,
) -> str:
    parts = [
        "# Fleet simulation: Bigeye's side of N orchestrators",
        "",
        f"Measured {date} with `python -m bench.fleet` on {machine}; {software}.",
        "",
        f"One beat per host every {setup.every:g} s (the real 30 s compressed by "
        f"{setup.compress:g}), random phase; each step measured for {setup.duration:g} s after "
        "every host had delivered a beat. Server: one `temporal server start-dev` (sqlite file). "
        "Worker: devcloud's `AgentHeartbeat` with its recording activity, in its own process. "
        f"Pings: the first {setup.ping_hosts} hosts answer `HostPing` (real workflow and "
        "activity on the host queue, polled as the orchestrator polls it), one "
        f"ping a second. Histories: {setup.sample} sampled hosts per step.",
        "",
        "## Cost",
        "",
        render_table(COST_HEADERS, [cost_row(s) for s in steps]),
        "",
        "## Delivery",
        "",
        render_table(DELIVERY_HEADERS, [delivery_row(s) for s in steps]),
        "",
        "## Server work (the dev server's /metrics, namespace `default`)",
        "",
        render_table(WORK_HEADERS, work_rows(steps, setup)),
        "",
        *notes(steps, setup, probe),
    ]
    return "\n".join(parts) + "\n"


def work_rows(steps: Sequence[StepResult], setup: Setup) -> list[list[str]]:
    """The fleet without beats first (pollers, pings), then each step."""
    idle = WorkWindow("no beats", setup.idle_work, setup.idle_seconds, 0, setup.idle_cpu)
    windows = [idle]
    for step in steps:
        cpu = [step.server_cpu, step.control_plane_cpu, step.simulator_cpu, step.machine_cpu]
        windows.append(
            WorkWindow(
                f"{step.hosts:,}",
                step.server_work,
                step.window_seconds,
                step.recorded_in_window,
                cpu,
            )
        )
    return [work_row(w, base) for w, base in zip(windows, [idle, *windows], strict=False)]


def notes(steps: Sequence[StepResult], setup: Setup, probe: ProbeResult | None) -> list[str]:
    server, worker, simulator, machine = setup.idle_cpu
    lines = [
        f"- No beats yet ({setup.ping_hosts} ping hosts' workers polling, one ping a second, "
        f"{setup.idle_seconds:.0f} s): server {server:.1f} %, AgentHeartbeat worker "
        f"{worker:.1f} %, simulator {simulator:.1f} %, machine {machine:.1f} % of a core; "
        f"pings ok {setup.idle_pings.count if setup.idle_pings else 0} / "
        f"{setup.idle_pings_sent}, p50 / p99 {ms_pair(setup.idle_pings)} ms.",
        "- CPU: utime+stime from /proc over the window, % of one core (200 % = both cores). "
        "Machine CPU counts every process, so what is not server, worker or simulator is "
        "other load on the machine.",
        "- Signal RPC: `sent_at` to the signal-with-start call's return (acknowledged by the "
        "server). Send → recorded: `sent_at` to the receive time the recording activity "
        "stored, from the sampled histories. Waits: a task's schedule → start in those "
        "histories, the time it sat in its task queue before devcloud's worker took it.",
        "- Lost: acknowledged by the server but never recorded in cloud.db (after draining). "
        "Failed sends: the RPC errored or outlasted the beat interval (the orchestrator's "
        "timeout); the host retries at its next tick.",
        "- Server work: counters of the window per second; per beat, the marginal cost over "
        "the row above (the difference in counters or CPU over the difference in recorded "
        "beats), so that pollers and pings cancel out; a dash where the "
        "server recorded too few more beats than the row above (saturated). "
        "A state transition is one update of a workflow's mutable state; workflow tasks are "
        "the history service's RecordWorkflowTaskStarted.",
        "- sqlite bytes / beat: growth of the server's sqlite file and WAL over the step, "
        "per recorded beat (the WAL is reused, so this is a floor).",
    ]
    for step in steps:
        late = f"; {step.late_hosts} had none yet" if step.late_hosts else ""
        lines.append(
            f"- {step.hosts:,} hosts: the window opened {step.warmup_seconds:.0f} s after they "
            f"started, once every host had delivered a beat{late}."
        )
    if probe is None:
        lines.append("- Continue-as-new probe: skipped or no run continued as new.")
    else:
        lines.append(
            "- Continue-as-new probe (one host, 10 beats a second): its "
            f"first run continued as new after {probe.beats_in_run} beats, "
            f"{probe.events_in_run:,} events, {probe.bytes_in_run:,} bytes of history "
            f"({probe.events_in_run / probe.beats_in_run:.2f} events a beat; "
            f"{probe.beats_sent} beats sent in {probe.seconds:.0f} s)."
        )
    return lines


# ---- the whole run --------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    hosts: list[int]
    compress: float
    duration: float
    ping_hosts: int
    sample: int
    seed: int
    probe: bool
    out: Path


IDLE_SECONDS: Final = 30.0


async def prepare(bench: Bench, options: Options) -> tuple[Setup, ProbeResult | None]:
    """The continue-as-new probe; then the fleet without beats (pollers, pings), the
    background the steps' marginal costs are taken over."""
    probe = await continue_as_new_probe(bench.client) if options.probe else None
    print(f"continue-as-new probe: {probe}", flush=True)
    idle = await measure_window(bench, IDLE_SECONDS)
    setup = Setup(
        every=bench.every,
        compress=options.compress,
        duration=options.duration,
        ping_hosts=len(bench.pingable),
        sample=options.sample,
        idle_seconds=idle.seconds,
        idle_cpu=idle.cpu,
        idle_work=idle.work,
        idle_pings_sent=idle.pings_sent,
        idle_pings=summarize(idle.round_trips),
    )
    return setup, probe


async def run_steps(bench: Bench, counts: Sequence[int]) -> list[StepResult]:
    steps = []
    for count in counts:
        step = await run_step(bench, count)
        print(render_table(COST_HEADERS, [cost_row(step)]), flush=True)
        print(render_table(DELIVERY_HEADERS, [delivery_row(step)]), flush=True)
        steps.append(step)
    return steps


async def run_fleet(options: Options, work: Path, server: Server) -> str:
    config = server.config
    await wait_server(config, server.proc)
    control = await start_control_plane(config.address, work / "cloud")
    client = await Client.connect(
        config.address, namespace=config.namespace, data_converter=pydantic_data_converter
    )
    bench = Bench(
        client=client,
        conn=db.connect(work / "cloud"),
        server=server,
        db_file=config.db_file,
        clock=CpuClock(server.proc.pid, control.pid),
        every=beat_interval(options.compress),
        duration=options.duration,
        sample=options.sample,
        pingable=host_ids(min(options.ping_hosts, max(options.hosts))),
        rng=random.Random(options.seed),
    )
    executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ping-wf")
    workers = [ping_worker(client, h, executor) for h in bench.pingable]
    running = [asyncio.create_task(w.run()) for w in workers]
    try:
        setup, probe = await prepare(bench, options)
        steps = await run_steps(bench, options.hosts)
        date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        machine, software = machine_description(), versions(config.binary)
        return render_report(steps, setup, probe, machine, software, date)
    finally:
        await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
        await asyncio.gather(*running, return_exceptions=True)
        executor.shutdown(wait=False)
        bench.conn.close()
        await stop_child(control)


def quiet_logs() -> None:
    """The orchestrator's heartbeat loop logs per host; a fleet's worth of that is noise."""
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))


def run(options: Options) -> int:
    quiet_logs()
    with tempfile.TemporaryDirectory(prefix="bigeye-fleet-") as tmp:
        work = Path(tmp)
        with (work / "temporal.log").open("w") as output:
            server = start_server(work, output)
            try:
                report = asyncio.run(run_fleet(options, work, server))
            finally:
                stop_process(server.proc)
    print()
    print(report)
    options.out.write_text(report)
    print(f"written to {options.out}")
    return 0


def host_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or any(c < 1 for c in counts) or counts != sorted(counts):
        raise argparse.ArgumentTypeError("a rising list of host counts, e.g. 100,500,1000")
    return counts


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__)
    parser.add_argument("--hosts", type=host_counts, default=list(DEFAULT_HOSTS))
    parser.add_argument("--compress", type=float, default=DEFAULT_COMPRESS)
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION)
    parser.add_argument("--ping-hosts", type=int, default=DEFAULT_PING_HOSTS)
    parser.add_argument("--sample", type=int, default=DEFAULT_SAMPLE)
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--no-probe", action="store_true", help="skip the continue-as-new probe")
    parser.add_argument("--out", type=Path, default=RESULTS)
    # the child process that runs devcloud's worker
    parser.add_argument("--control-plane", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.control_plane is not None:
        quiet_logs()
        asyncio.run(serve_control_plane(args.address, args.control_plane))
        return 0
    beat_interval(args.compress)  # rejects a non-positive factor before anything starts
    return run(
        Options(
            hosts=args.hosts,
            compress=args.compress,
            duration=args.duration,
            ping_hosts=args.ping_hosts,
            sample=args.sample,
            seed=args.seed,
            probe=not args.no_probe,
            out=args.out,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
