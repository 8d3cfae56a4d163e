"""HostPing and the host heartbeat, against a real Temporal dev server and Docker engine."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import Client

from tests.integration.conftest import DEMO_IMAGE
from tests.waiting import async_wait_for

pytestmark = pytest.mark.integration


async def test_host_ping_reports_the_host(make_host: Any, client: Client) -> None:
    host = make_host({"datahealth": {"image": DEMO_IMAGE}, "lineage_plus": {"image": DEMO_IMAGE}})
    status = await client.execute_workflow(
        "HostPing",
        id=f"ping-{uuid.uuid4().hex[:8]}",
        task_queue=host.task_queue,
        execution_timeout=timedelta(seconds=60),
    )
    assert status["host_id"] == host.host_id
    assert status["managed_agents"] == ["datahealth", "lineage_plus"]
    assert status["docker"]["reachable"] is True and status["docker"]["version"]
    assert status["worker"] == {"polling": True, "slots_used": 0, "slots_max": 8}
    assert status["sent_at"].endswith("Z")


async def test_heartbeat_is_signal_with_start_of_agent_heartbeat(
    make_host: Any, client: Client
) -> None:
    host = make_host({"datahealth": {"image": DEMO_IMAGE}}, BIGEYE_HEARTBEAT_SECONDS="0.5")
    handle = client.get_workflow_handle(f"agent-heartbeat-{host.host_id}")

    async def two_signals() -> list[Any]:
        try:
            history = await handle.fetch_history()
        except Exception:
            return []
        signals = [
            e for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")
        ]
        started = history.events[0].workflow_execution_started_event_attributes
        return [started, signals] if len(signals) >= 2 else []

    started, signals = await async_wait_for(two_signals, 30, "two heartbeats")
    assert started.workflow_type.name == "AgentHeartbeat"
    assert started.task_queue.name == "bigeye-control-plane"
    converter = client.data_converter.payload_converter
    start_arg = converter.from_payloads(started.input.payloads)[0]
    assert start_arg == {"host_id": host.host_id}
    attrs = signals[0].workflow_execution_signaled_event_attributes
    assert attrs.signal_name == "heartbeat"
    status = converter.from_payloads(attrs.input.payloads)[0]
    assert status["host_id"] == host.host_id and status["managed_agents"] == ["datahealth"]
    await handle.terminate()
