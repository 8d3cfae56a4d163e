"""The orchestrator's own Prometheus metrics (prometheus_client), in one registry.

Served at `/metrics` beside `/healthz` and `/readyz` (and at BIGEYE_METRICS_ADDR when set),
followed on the same page by the Temporal SDK's runtime metrics. Every name is documented in
docs/operations.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY: Final = CollectorRegistry(auto_describe=True)
_SECONDS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600)

RUNS_STARTED: Final = Counter(
    "bigeye_runs_started",
    "Job containers created and started (adopted ones are not counted again).",
    ["agent"],
    registry=REGISTRY,
)
RUNS_FINISHED: Final = Counter(
    "bigeye_runs_finished",
    "Runs that ended with a JobRunResult, by how they ended.",
    ["agent", "status"],
    registry=REGISTRY,
)
RUN_DURATION: Final = Histogram(
    "bigeye_run_duration_seconds",
    "How long job containers ran (start to exit).",
    ["agent", "status"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
DISPATCH_TO_RUNNING: Final = Histogram(
    "bigeye_dispatch_to_running_seconds",
    "From the run's first workflow task to its container running (queue waits included).",
    ["agent"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
IMAGE_PULLS: Final = Counter(
    "bigeye_image_pulls", "Image pulls, by result.", ["result"], registry=REGISTRY
)
IMAGE_PULL_DURATION: Final = Histogram(
    "bigeye_image_pull_duration_seconds",
    "How long image pulls took.",
    buckets=_SECONDS,
    registry=REGISTRY,
)
ADOPTIONS: Final = Counter(
    "bigeye_containers_adopted",
    "Job containers found already launched (a retried attempt, a restarted orchestrator).",
    registry=REGISTRY,
)
ORPHANS_SWEPT: Final = Counter(
    "bigeye_orphans_swept", "Job containers of closed runs removed by the sweep.", registry=REGISTRY
)
HEARTBEATS: Final = Counter(
    "bigeye_heartbeats", "Host heartbeats sent to Bigeye, by result.", ["result"], registry=REGISTRY
)
LOG_LINES: Final = Counter(
    "bigeye_log_lines_forwarded", "Lines of job output forwarded to the log.", registry=REGISTRY
)
LOG_LINES_CUT: Final = Counter(
    "bigeye_log_lines_cut", "Forwarded lines that were longer than the cap.", registry=REGISTRY
)
LOG_BYTES_CUT: Final = Counter(
    "bigeye_log_bytes_cut", "Bytes of job output beyond the line cap, not forwarded.",
    registry=REGISTRY,
)  # fmt: skip
LOG_REREADS: Final = Counter(
    "bigeye_log_rereads",
    "Times a job's followed output stream may have skipped a rotated log file and was read "
    "again from the cursor.",
    registry=REGISTRY,
)
LOG_GAPS: Final = Counter(
    "bigeye_log_gaps",
    "Times a job's output had been rotated away by the engine before it was read (lines lost, "
    "how many unknown).",
    registry=REGISTRY,
)
SLOTS_USED: Final = Gauge(
    "bigeye_slots_used", "Job containers holding a slot, as last counted.", registry=REGISTRY
)
SLOTS_MAX: Final = Gauge("bigeye_slots_max", "BIGEYE_MAX_CONCURRENT_JOBS.", registry=REGISTRY)
RUNS_QUEUED: Final = Gauge(
    "bigeye_runs_queued", "Runs waiting for a slot (host or agent).", registry=REGISTRY
)
POLLING: Final = Gauge(
    "bigeye_orchestrator_polling", "1 while the worker polls.", registry=REGISTRY
)
READY: Final = Gauge("bigeye_orchestrator_ready", "1 while /readyz says ready.", registry=REGISTRY)
INFO: Final = Gauge(
    "bigeye_orchestrator_info", "The running version.", ["version", "build_id"], registry=REGISTRY
)


def seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds from one RFC 3339 time to another (Docker's nanoseconds are cut to micro)."""
    if not start or not end:
        return None
    try:
        return (_parse(end) - _parse(start)).total_seconds()
    except ValueError:
        return None


def _parse(value: str) -> datetime:
    whole, _, fraction = value.rstrip("Z").partition(".")
    micros = (fraction + "000000")[:6] if fraction else "000000"
    return datetime.fromisoformat(f"{whole}.{micros}+00:00")


def render() -> bytes:
    return generate_latest(REGISTRY)
