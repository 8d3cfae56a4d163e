"""Release queues: names, the drainer's decision to leave, connect errors."""

from __future__ import annotations

from temporalio.common import WorkerDeploymentVersion

from orchestrator.connection import connect_error
from orchestrator.contract import (
    host_id_of,
    is_release_queue,
    launch_queue,
    release_queue,
    task_queue,
    watch_queue,
)
from orchestrator.releases import DrainState, build_identity, open_runs_query, run_queue
from workflows.agent_job import AgentJobRun
from workflows.host_ping import HostPing


def test_a_release_queue_is_the_host_queue_and_the_release() -> None:
    assert run_queue("host-1", "0.2.0") == "agent-orchestrator.host-1@0.2.0"
    assert release_queue(task_queue("host-1"), "0.2.0") == run_queue("host-1", "0.2.0")
    assert is_release_queue(run_queue("host-1", "0.2.0"))
    assert not is_release_queue(task_queue("host-1"))
    # the host id reads back from either queue, even when a version holds dots or a plus
    for queue in (task_queue("h-1"), run_queue("h-1", "0.2.0+g1a2b"), run_queue("h-1", "1")):
        assert host_id_of(queue) == "h-1"
    # a run's activities follow it to its release's queues
    assert launch_queue(run_queue("h", "1.0")) == "agent-orchestrator.h@1.0.launch"
    assert watch_queue(run_queue("h", "1.0")) == "agent-orchestrator.h@1.0.watch"
    # two releases never share a queue
    assert run_queue("h", "1.0") != run_queue("h", "1.0.1")


def test_workers_name_their_release_without_versioned_routing() -> None:
    config = build_identity("0.2.0")
    assert config.version == WorkerDeploymentVersion("agent-orchestrator", "0.2.0")
    assert not config.use_worker_versioning  # routing is by queue: nothing per host on the server


def test_no_workflow_declares_a_versioning_behavior() -> None:
    # a declared behavior makes an unversioned worker refuse to start
    for defn in (AgentJobRun, HostPing):
        assert defn.__temporal_workflow_definition.versioning_behavior.value == 0  # type: ignore[attr-defined]


def test_the_open_runs_query_names_the_release_queue_and_the_job_workflow() -> None:
    query = open_runs_query("h1", "0.1.0")
    assert "TaskQueue = 'agent-orchestrator.h1@0.1.0'" in query
    assert "ExecutionStatus = 'Running'" in query
    assert "WorkflowType = 'AgentJobRun'" in query


def test_a_drainer_stays_until_settled_however_empty() -> None:
    state = DrainState(started=100.0, settle_seconds=30)
    assert not state.observe(0, 100.0)
    assert not state.observe(0, 105.0)  # two empty looks, but not settled
    assert not state.observe(0, 129.0)
    assert state.observe(0, 130.0)


def test_a_drainer_stays_while_runs_are_open() -> None:
    state = DrainState(started=0.0, settle_seconds=30)
    for now in range(0, 300, 5):
        assert not state.observe(1, float(now))
    assert not state.observe(0, 300.0)  # one empty look is not two
    assert state.observe(0, 305.0)


def test_an_open_run_resets_the_empty_looks() -> None:
    state = DrainState(started=0.0, settle_seconds=0)
    assert not state.observe(0, 0.0)
    assert not state.observe(1, 5.0)
    assert not state.observe(0, 10.0)
    assert state.observe(0, 15.0)


def test_a_connection_closed_after_connect_is_one_stable_line_whatever_the_transport_said() -> None:
    said = [
        "Failed client connect: `get_system_info` call error after connection: Status { code: "
        'Cancelled, message: "operation was canceled" }',
        "Failed client connect: `get_system_info` call error after connection: Status { code: "
        'Unknown, message: "transport error", source: Some(Io(ConnectionReset)) }',
    ]
    lines = {connect_error(RuntimeError(text)) for text in said}
    assert len(lines) == 1
    (line,) = lines
    assert "client certificate" in line and "BIGEYE_TLS_SERVER_NAME" in line
    assert connect_error(RuntimeError("Failed client connect: dns error\nmore")) == (
        "Failed client connect: dns error"
    )
    assert connect_error(TimeoutError()) == "TimeoutError"
