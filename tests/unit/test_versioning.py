"""Worker Deployment Versioning: names, the drainer's decision to leave, connect errors."""

from __future__ import annotations

from temporalio.common import VersioningBehavior, WorkerDeploymentVersion

from orchestrator.connection import connect_error
from orchestrator.contract import is_valid_host_id, task_queue
from orchestrator.versioning import (
    DrainState,
    deployment_config,
    deployment_name,
    open_pinned_query,
)
from workflows.agent_job import AgentJobRun
from workflows.host_ping import HostPing


def test_a_deployment_is_one_host_and_its_version_the_release() -> None:
    config = deployment_config("host-1", "0.2.0")
    assert config.version == WorkerDeploymentVersion("agent-orchestrator-host-1", "0.2.0")
    assert config.use_worker_versioning
    assert config.default_versioning_behavior == VersioningBehavior.PINNED
    # a deployment name holds no dot (the canonical form splits at the first one); host ids
    # cannot hold one either, so the name parses back
    assert not is_valid_host_id("a.b")
    assert "." not in deployment_name("A-b-9")
    parsed = WorkerDeploymentVersion.from_canonical_string(config.version.to_canonical_string())
    assert parsed == config.version
    assert deployment_name("h") != task_queue("h")


def test_job_runs_are_pinned_and_pings_follow_the_current_release() -> None:
    assert AgentJobRun.__temporal_workflow_definition.versioning_behavior == (  # type: ignore[attr-defined]
        VersioningBehavior.PINNED
    )
    assert HostPing.__temporal_workflow_definition.versioning_behavior == (  # type: ignore[attr-defined]
        VersioningBehavior.AUTO_UPGRADE
    )


def test_the_open_runs_query_names_the_version_and_the_job_workflow() -> None:
    query = open_pinned_query("h1", "0.1.0")
    assert "TemporalWorkerDeploymentVersion = 'agent-orchestrator-h1:0.1.0'" in query
    assert "ExecutionStatus = 'Running'" in query
    assert "WorkflowType = 'AgentJobRun'" in query


def test_a_drainer_stays_while_its_version_is_current() -> None:
    state = DrainState("1.0", settle_seconds=30)
    for now in range(0, 300, 5):
        assert not state.observe("1.0", 0, float(now))
    assert not state.observe(None, 0, 300.0)


def test_a_drainer_leaves_after_two_empty_looks_once_another_version_settled() -> None:
    state = DrainState("1.0", settle_seconds=30)
    assert not state.observe("2.0", 0, 100.0)  # first look at 2.0: the clock starts
    assert not state.observe("2.0", 0, 105.0)  # two empty looks, but not settled
    assert not state.observe("2.0", 0, 129.0)
    assert state.observe("2.0", 0, 130.0)


def test_an_open_run_resets_the_empty_looks() -> None:
    state = DrainState("1.0", settle_seconds=0)
    assert not state.observe("2.0", 0, 0.0)
    assert not state.observe("2.0", 1, 5.0)
    assert not state.observe("2.0", 0, 10.0)
    assert state.observe("2.0", 0, 15.0)


def test_its_version_current_again_starts_the_wait_over() -> None:
    state = DrainState("1.0", settle_seconds=30)
    state.observe("2.0", 0, 0.0)
    state.observe("2.0", 0, 20.0)
    assert not state.observe("1.0", 0, 25.0)  # rolled back: 1.0 takes new runs again
    assert not state.observe("2.0", 0, 40.0)
    assert not state.observe("2.0", 0, 45.0)
    assert state.observe("2.0", 0, 70.0)


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
