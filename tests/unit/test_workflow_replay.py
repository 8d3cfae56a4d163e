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
PATCH = "fewer-round-trips-1"


def test_histories_cover_every_way_a_run_ends() -> None:
    """On both paths: runs recorded before the patch, and runs that took it."""
    stems = {p.stem for p in HISTORIES}
    assert stems >= WAYS
    assert stems >= {f"{way}.fewer_round_trips" for way in WAYS}
    for path in HISTORIES:
        # an invalid request fails before the patch is looked at: no marker on either path
        expected = path.stem.endswith(".fewer_round_trips") and not path.stem.startswith("invalid")
        assert (PATCH in patches_in(path)) == expected, path.name


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
