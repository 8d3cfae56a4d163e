"""Histories recorded from real runs of earlier releases must replay on this one.

A change to `AgentJobRun` that is not behind `workflow.patched(...)` makes a run that was in
flight during `bigeye-agent compose upgrade` fail with a non-determinism error; this catches it
before release. Record histories with scripts/record_histories.py (it runs every way a run can end).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.agent_job import AgentJobRun

HISTORIES = sorted((Path(__file__).parent / "agent_job_histories").glob("*.json"))


WAYS = {
    "succeeded",
    "failed",
    "pull_failed",
    "timed_out_after_queue",
    "canceled",
    "canceled_while_queued",
    "canceled_at_once",
    "invalid",
    "not_installed",
}
FEWER = "fewer-round-trips-1"
RELEASE = "release-queues-1"


def expected_patches(stem: str) -> set[str]:
    """What each recording must hold. `.fewer_round_trips`: runs that took the first patch.
    `.release_queues`: a run's execution on its release's queue, and `.release_queues.entry` its
    first execution on the host queue, which moved it there (both patches). An invalid request
    fails before either patch is looked at; a run canceled on arrival stays on the host queue."""
    way, _, path = stem.partition(".")
    if way == "invalid":
        return set()
    if path == "fewer_round_trips":
        return {FEWER}
    if path == "release_queues.entry":
        return {RELEASE}
    if path == "release_queues":
        return {RELEASE, FEWER} if way == "canceled_at_once" else {FEWER}
    return set()


def test_histories_cover_every_way_a_run_ends() -> None:
    """On every path: runs recorded before the patches, and runs that took them."""
    stems = {p.stem for p in HISTORIES}
    assert stems >= WAYS
    assert stems >= {f"{way}.fewer_round_trips" for way in WAYS}
    assert stems >= {f"{way}.release_queues" for way in WAYS}
    hopped = WAYS - {"invalid", "canceled_at_once"}
    assert stems >= {f"{way}.release_queues.entry" for way in hopped}
    for path in HISTORIES:
        assert patches_in(path) == expected_patches(path.stem), path.name


def patches_in(path: Path) -> set[str]:
    """The ids of the `workflow.patched` markers a recorded history holds."""
    found = set()
    for event in json.loads(path.read_bytes())["events"]:
        marker = event.get("markerRecordedEventAttributes", {})
        if marker.get("markerName") == "core_patch":
            data = marker["details"]["patch-data"]["payloads"][0]["data"]
            found.add(json.loads(base64.b64decode(data))["id"])
    return found


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_recorded_history_replays(path: Path) -> None:
    recorded = json.loads(path.read_bytes())  # noqa: ASYNC240 - a small local file
    history = WorkflowHistory.from_json(f"agent-job-{path.stem}", recorded)
    replayer = Replayer(workflows=[AgentJobRun], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure
