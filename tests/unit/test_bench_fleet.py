"""The pure pieces of the fleet simulation: phases, percentiles, CPU, histories, the tables."""

from __future__ import annotations

import argparse
import random
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from temporalio.api.common.v1 import Payloads
from temporalio.api.enums.v1 import EventType, TaskQueueKind
from temporalio.api.history.v1 import (
    ActivityTaskCompletedEventAttributes,
    ActivityTaskScheduledEventAttributes,
    ActivityTaskStartedEventAttributes,
    HistoryEvent,
    WorkflowTaskScheduledEventAttributes,
    WorkflowTaskStartedEventAttributes,
)
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.converter import DataConverter

from bench.fleet import (
    COST_HEADERS,
    DELIVERY_HEADERS,
    WORK_HEADERS,
    HistoryStats,
    StepResult,
    Summary,
    WorkWindow,
    beat_interval,
    cost_row,
    counter_delta,
    cpu_percent,
    delivery_row,
    history_window,
    host_counts,
    latency_ms,
    ms_pair,
    percentile,
    phase_offsets,
    render_table,
    server_counters,
    summarize,
    work_row,
)

CONVERTER = DataConverter.default.payload_converter


def test_the_beat_interval_is_thirty_seconds_compressed() -> None:
    assert beat_interval(1) == 30.0
    assert beat_interval(10) == 3.0
    assert beat_interval(30) == 1.0
    with pytest.raises(ValueError):
        beat_interval(0)


def test_phases_fall_inside_one_interval_and_spread_evenly() -> None:
    offsets = phase_offsets(30_000, 3.0, random.Random(1))
    assert len(offsets) == 30_000
    assert all(0.0 <= o < 3.0 for o in offsets)
    buckets = [0] * 30  # 0.1 s each: about 1,000 hosts begin in every tenth of a second
    for offset in offsets:
        buckets[int(offset * 10)] += 1
    assert min(buckets) > 850 and max(buckets) < 1150


def test_phases_are_reproducible_from_the_seed_and_not_in_lockstep() -> None:
    first = phase_offsets(100, 2.0, random.Random(7))
    assert first == phase_offsets(100, 2.0, random.Random(7))
    assert first != phase_offsets(100, 2.0, random.Random(8))
    assert len(set(first)) == 100


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 100 … 1, unsorted on purpose
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 1) == 1.0
    assert percentile([10.0, 20.0, 30.0, 40.0], 50) == 20.0
    assert percentile([10.0, 20.0, 30.0, 40.0], 99) == 40.0
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summary_of_values_and_of_nothing() -> None:
    assert summarize([5.0, 1.0, 3.0]) == Summary(count=3, p50=3.0, p99=5.0, max=5.0)
    assert summarize([]) is None
    assert ms_pair(Summary(count=2, p50=12.4, p99=250.6, max=300.0)) == "12 / 251"
    assert ms_pair(None) == "-"


def test_cpu_percent_is_of_one_core() -> None:
    assert cpu_percent(ticks=150, seconds=60.0, ticks_per_second=100) == 2.5
    assert cpu_percent(ticks=12_000, seconds=60.0, ticks_per_second=100) == 200.0  # both cores
    assert cpu_percent(ticks=5, seconds=0.0, ticks_per_second=100) == 0.0


def test_latency_between_two_rfc3339_times() -> None:
    sent, received = "2026-01-01T00:00:00.100000Z", "2026-01-01T00:00:00.350000+00:00"
    assert latency_ms(sent, received) == pytest.approx(250.0)
    assert latency_ms("2026-01-01T00:00:59Z", "2026-01-01T00:01:01Z") == pytest.approx(2000.0)


def test_markdown_table() -> None:
    table = render_table(("hosts", "beats/s"), [["100", "3.3"], ["1,000", "33.3"]])
    assert table == ("| hosts | beats/s |\n|---|---:|\n| 100 | 3.3 |\n| 1,000 | 33.3 |")
    with pytest.raises(ValueError):
        render_table(("a", "b"), [["only one"]])


def test_host_counts_must_rise() -> None:
    assert host_counts("100,500,1000") == [100, 500, 1000]
    for bad in ("500,100", "0", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            host_counts(bad)


def _at(seconds: float) -> Timestamp:
    return Timestamp(seconds=int(seconds), nanos=round((seconds % 1) * 1e9))


def _payloads(value: Any) -> Payloads:
    return Payloads(payloads=CONVERTER.to_payloads([value]))


def _one_beat(first_id: int, at: float, sent_at: str, received_at: str, sticky: bool) -> list:
    """The events of one recorded beat: a workflow task, then the recording activity."""
    kind = TaskQueueKind.TASK_QUEUE_KIND_STICKY if sticky else TaskQueueKind.TASK_QUEUE_KIND_NORMAL
    wft, act = first_id, first_id + 3
    return [
        HistoryEvent(
            event_id=wft,
            event_time=_at(at),
            event_type=EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
            workflow_task_scheduled_event_attributes=WorkflowTaskScheduledEventAttributes(
                task_queue=TaskQueue(name="q", kind=kind)
            ),
        ),
        HistoryEvent(
            event_id=wft + 1,
            event_time=_at(at + 0.040),
            event_type=EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
            workflow_task_started_event_attributes=WorkflowTaskStartedEventAttributes(
                scheduled_event_id=wft
            ),
        ),
        HistoryEvent(
            event_id=wft + 2,
            event_time=_at(at + 0.050),
            event_type=EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
        ),
        HistoryEvent(
            event_id=act,
            event_time=_at(at + 0.050),
            event_type=EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
            activity_task_scheduled_event_attributes=ActivityTaskScheduledEventAttributes(
                input=_payloads({"host_id": "h", "status": {"sent_at": sent_at}})
            ),
        ),
        HistoryEvent(
            event_id=act + 1,
            event_time=_at(at + 0.060),
            event_type=EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED,
            activity_task_started_event_attributes=ActivityTaskStartedEventAttributes(
                scheduled_event_id=act
            ),
        ),
        HistoryEvent(
            event_id=act + 2,
            event_time=_at(at + 0.070),
            event_type=EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
            activity_task_completed_event_attributes=ActivityTaskCompletedEventAttributes(
                scheduled_event_id=act, result=_payloads(received_at)
            ),
        ),
    ]


def test_history_window_counts_the_beats_of_the_window_only() -> None:
    base = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    events = (
        _one_beat(1, base + 1.0, "2026-01-01T00:00:00.980000Z", "2026-01-01T00:00:01.070Z", True)
        + _one_beat(7, base + 4.0, "2026-01-01T00:00:03.900000Z", "2026-01-01T00:00:04.070Z", False)
        + _one_beat(13, base + 9.0, "2026-01-01T00:00:08.990000Z", "2026-01-01T00:00:09.070Z", True)
    )
    stats = history_window(events, CONVERTER, base, base + 8.0)  # the third beat is after it
    assert stats.hosts == 1
    assert stats.events == 12 and stats.beats == 2
    assert stats.bytes == sum(e.ByteSize() for e in events[:12])
    assert stats.latencies_ms == pytest.approx([90.0, 170.0])
    assert stats.workflow_task_waits_ms == pytest.approx([40.0, 40.0], abs=0.01)
    assert stats.activity_waits_ms == pytest.approx([10.0, 10.0], abs=0.01)
    assert (stats.workflow_tasks, stats.nonsticky_tasks) == (2, 1)


def _step(**overrides: Any) -> StepResult:
    history = HistoryStats(
        hosts=50,
        events=5_000,
        bytes=850_000,
        beats=500,
        latencies_ms=[100.0, 200.0],
        workflow_task_waits_ms=[5.0, 9.0],
        activity_waits_ms=[0.0, 1.0],
        workflow_tasks=1_000,
        nonsticky_tasks=10,
    )
    fields: dict[str, Any] = {
        "hosts": 1_000,
        "window_seconds": 60.0,
        "beats_in_window": 2_000,
        "recorded_in_window": 1_980,
        "server_cpu": 55.25,
        "control_plane_cpu": 20.0,
        "simulator_cpu": 9.0,
        "machine_cpu": 90.0,
        "server_rss_mib": 330.4,
        "simulator_rss_mib": 120.0,
        "rpc": Summary(2_000, 12.0, 80.0, 95.0),
        "delivery": summarize(history.latencies_ms),
        "history": history,
        "continued_as_new": 5,
        "acknowledged": 2_500,
        "failed": 3,
        "recorded": 2_497,
        "pings_sent": 60,
        "pings": Summary(59, 110.0, 900.0, 950.0),
        "db_bytes": 24_970_000,
        "warmup_seconds": 16.0,
        "late_hosts": 0,
        "server_work": {},
    }
    fields.update(overrides)
    return StepResult(**fields)


def test_cost_row() -> None:
    row = cost_row(_step())
    assert len(row) == len(COST_HEADERS)
    assert dict(zip(COST_HEADERS, row, strict=True)) == {
        "hosts": "1,000",
        "beats/s sent": "33.3",
        "beats/s recorded": "33.0",
        "server CPU % of a core": "55.2",
        "AgentHeartbeat worker CPU %": "20.0",
        "simulator CPU %": "9.0",
        "machine CPU % (all processes)": "90.0",
        "server RSS MiB": "330",
        "simulator RSS MiB": "120",
        "events / beat": "10.00",
        "workflow tasks / beat": "2.00",
        "of which not sticky %": "1",
        "history bytes / beat": "1,700",
        "sqlite bytes / beat": "10,000",
    }


def test_delivery_row_and_lost_beats() -> None:
    step = _step()
    assert step.lost == 3
    row = dict(zip(DELIVERY_HEADERS, delivery_row(step), strict=True))
    assert row["signal RPC p50 / p99 ms"] == "12 / 80"
    assert row["send → recorded p50 / p99 ms"] == "100 / 200"
    assert row["workflow task wait p50 / p99 ms"] == "5 / 9"
    assert row["lost"] == "3"
    assert row["continue-as-new / host"] == "0.005"
    assert row["pings ok / sent"] == "59 / 60"
    # a timed-out send that the server took anyway is recorded, not lost below zero
    assert _step(recorded=2_501).lost == 0


def _sample(name: str, value: int, **labels: str) -> str:
    """One line of Prometheus text, as the dev server's /metrics writes it."""
    inner = ",".join(f'{key}="{val}"' for key, val in labels.items())
    return f"{name}{{{inner}}} {value}"


HISTORY = {"service_name": "history"}
METRICS = "\n".join(
    [
        "# TYPE state_transition_count histogram",
        _sample("state_transition_count_bucket", 3, namespace="default", le="1"),
        _sample("state_transition_count_count", 120, namespace="default", **HISTORY),
        _sample("state_transition_count_count", 2, namespace="temporal_system", **HISTORY),
        _sample(
            "persistence_requests", 119, namespace="default", operation="UpdateWorkflowExecution"
        ),
        _sample("persistence_requests", 40, namespace="default", operation="ReadHistoryBranch"),
        _sample("persistence_requests", 41, namespace="system", operation="GetTransferTasks"),
        _sample(
            "service_requests",
            40,
            namespace="default",
            operation="RecordWorkflowTaskStarted",
            **HISTORY,
        ),
        _sample(
            "service_requests",
            7,
            namespace="default",
            operation="RecordWorkflowTaskStarted",
            service_name="frontend",
        ),
        _sample(
            "service_requests",
            20,
            namespace="default",
            operation="SignalWithStartWorkflowExecution",
        ),
        _sample(
            "service_requests",
            9,
            namespace="default",
            operation="PollWorkflowTaskQueue",
            service_name="frontend",
        ),
        _sample("service_requests", 4, namespace="default", operation="PollWorkflowTaskQueue"),
    ]
)


def test_server_counters_of_one_namespace() -> None:
    counters = server_counters(METRICS)
    assert counters == {
        "transitions": 120.0,  # the histogram's _count only, the other namespace left out
        "persistence": 159.0,  # every operation of the namespace, the system one left out
        "updates": 119.0,
        "workflow_tasks": 40.0,  # the history service's, not the frontend's
        "workflow_polls": 9.0,  # the frontend's, not matching's
        "activity_polls": 0.0,
    }
    assert server_counters(METRICS, namespace="temporal_system")["transitions"] == 2.0
    assert server_counters("") == dict.fromkeys(counters, 0.0)


def test_work_per_second_and_marginal_per_beat() -> None:
    keys = ("transitions", "persistence", "updates", "workflow_tasks")
    polls = ("workflow_polls", "activity_polls")
    before = dict(zip(keys + polls, (100.0, 200.0, 90.0, 30.0, 10.0, 20.0), strict=True))
    after = dict(zip(keys + polls, (700.0, 1200.0, 690.0, 230.0, 40.0, 70.0), strict=True))
    work = counter_delta(before, after)
    assert work == {
        "transitions": 600.0,
        "persistence": 1000.0,
        "updates": 600.0,
        "workflow_tasks": 200.0,
        "workflow_polls": 30.0,
        "activity_polls": 50.0,
    }
    # idle: 1 transition and 20 persistence requests a second, 5 % of a core for the server
    idle_work = dict(zip(keys + polls, (20.0, 400.0, 0.0, 0.0, 60.0, 100.0), strict=True))
    idle = WorkWindow("idle", idle_work, 20.0, 0, [5.0, 0.0, 0.0, 6.0])
    window = WorkWindow("500", work, 10.0, 100, [45.0, 12.0, 3.0, 70.0])
    row = work_row(window, idle)
    assert len(row) == len(WORK_HEADERS)
    assert row == [
        "500",
        "60.0",  # transitions per second, as measured
        "5.90",  # (600 - 1 x 10) / 100 beats
        "100.0",
        "8.00",  # (1000 - 20 x 10) / 100
        "6.00",
        "20.0",
        "2.00",
        "8.0",  # (30 + 50) polls / 10 s
        "40.0",  # (45 - 5) % of a core = 400 ms/s, at 10 beats/s
        "12.0",
    ]
    assert work_row(idle, idle) == [
        "idle", "1.0", "-", "20.0", "-", "-", "0.0", "-", "8.0", "-", "-"
    ]  # fmt: skip
    # the next step: 300 beats more than `window` would have had in 10 s, 2 transitions each
    busier = dict(work, transitions=1200.0)
    step = WorkWindow("1,000", busier, 10.0, 400, [75.0, 24.0, 5.0, 110.0])
    assert work_row(step, window)[2] == "2.00"
    assert work_row(step, window)[-2:] == ["10.0", "4.0"]  # 3,000 and 1,200 ms more
    # saturated: hardly more beats recorded than the step before, so no marginal figure
    flat = WorkWindow("2,000", busier, 10.0, 110, [90.0, 25.0, 6.0, 130.0])
    assert work_row(flat, window)[2] == "-" and work_row(flat, window)[-1] == "-"
