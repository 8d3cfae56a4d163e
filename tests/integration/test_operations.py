"""What an operator watches: Prometheus metrics that count what really ran, and a readiness that
follows Temporal going away and coming back. Against a real dev server and a real engine."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client

from tests.integration.conftest import TemporalServer, agent
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the page at http://address/metrics, by name and labels."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def readiness(address: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://{address}/readyz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_metrics_count_the_runs_this_test_ran(make_host: Any, client: Client) -> None:
    host = make_host(
        {"datahealth": agent(), "external_monitors": agent(env={"DEMO_EXIT_CODE": "3"})},
        BIGEYE_METRICS_ADDR="127.0.0.1:0",
    )
    metrics_addr = host.listening("metrics")
    for request in (
        host.request("datahealth", {"file_name": "a"}),
        host.request("datahealth", {"file_name": "b"}),
        host.request("external_monitors", {"connector": "x"}),
    ):
        await (await host.start_job(client, request)).result()

    samples = scrape(metrics_addr)
    assert value(samples, "bigeye_runs_started_total", agent="datahealth") == 2
    assert value(samples, "bigeye_runs_started_total", agent="external_monitors") == 1
    finished = "bigeye_runs_finished_total"
    assert value(samples, finished, agent="datahealth", status="succeeded") == 2
    assert value(samples, finished, agent="external_monitors", status="failed") == 1
    duration = "bigeye_run_duration_seconds_count"
    assert value(samples, duration, agent="datahealth", status="succeeded") == 2
    assert value(samples, "bigeye_dispatch_to_running_seconds_count", agent="datahealth") == 2
    forwarded = [e for e in map(json.loads, host.logs().splitlines()) if e.get("stream") == "agent"]
    assert value(samples, "bigeye_log_lines_forwarded_total") == len(forwarded) > 0
    assert value(samples, "bigeye_log_lines_cut_total") == 0
    assert value(samples, "bigeye_heartbeats_total", result="delivered") >= 1
    assert value(samples, "bigeye_containers_adopted_total") == 0
    assert value(samples, "bigeye_slots_max") == 8
    assert value(samples, "bigeye_orchestrator_ready") == 1
    # the Temporal SDK's own metrics are on the same page
    names = {name for name, _ in samples}
    assert any(name.startswith("temporal_") for name in names), sorted(names)[:20]


async def test_readiness_follows_temporal_away_and_back(
    make_host: Any, own_temporal: TemporalServer
) -> None:
    host = make_host(
        {"datahealth": agent()},
        temporal=own_temporal.address,
        BIGEYE_HEALTH_ADDR="127.0.0.1:0",
        BIGEYE_HEARTBEAT_SECONDS="1",
    )
    health = host.listening("health")
    wait_for(lambda: readiness(health)[0] == 200, 30, "ready")
    _, body = readiness(health)
    assert body == {"ready": True, "polling": True, "docker": body["docker"],
                    "heartbeat_delivered": True} and body["docker"]  # fmt: skip

    own_temporal.stop()
    stopped = time.monotonic()
    wait_for(lambda: readiness(health)[0] == 503, 15, "not ready once Temporal is away")
    # the next beat (1 s) fails within its deadline (1 s): not ready in about two seconds
    assert time.monotonic() - stopped < 4, time.monotonic() - stopped
    assert readiness(health)[1]["heartbeat_delivered"] is False

    own_temporal.start(may_move=False)  # back where the host expects it
    wait_for(lambda: readiness(health)[0] == 200, 60, "ready again once Temporal is back")
