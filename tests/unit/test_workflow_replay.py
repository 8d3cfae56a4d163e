"""Histories recorded from real runs of earlier releases must replay on this one.

A change to `AgentJobRun` that is not behind `workflow.patched(...)` makes a run that was in
flight during `bigeye-agent compose upgrade` fail with a non-determinism error; this catches it
before release. Record histories with scripts/record_histories.py (it runs every way a run can end).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from orchestrator import version
from orchestrator.contract import RELEASE_SEPARATOR
from workflows.agent_job import AgentJobRun

HERE = Path(__file__).parent / "agent_job_histories"
HISTORIES = sorted(HERE.glob("*.json"))


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
ONE_QUEUE = "one-queue-1"
QUIET_QUEUE = "quiet-queue-1"
HANDING_OVER = ("release_queues", "one_queue", "quiet_queue")  # recordings of runs with children
QUEUED = {"canceled_while_queued", "timed_out_after_queue"}  # the ways that waited for a slot


def expected_patches(stem: str) -> set[str]:
    """What each recording must hold. `.fewer_round_trips`: runs that took the first patch.
    `.release_queues`: runs that handed their work to a child on their release's queue, and
    `.release_queues.child` that child; `.one_queue.child`: a child that schedules every activity
    on its own queue and whose launch tells the parent `running` (its parent, `.one_queue`, is
    the same as before); `.quiet_queue.child`: a child that, when it waits for a slot, does not
    tell its parent `queued`, which the parent shows from its start. An invalid request
    fails before any patch is looked at; a run canceled on arrival does what little is left
    itself, on the host queue."""
    way, _, path = stem.partition(".")
    if way == "invalid":
        return set()
    if path == "fewer_round_trips" or path == "release_queues.child":
        return {FEWER}
    if path == "one_queue.child":
        return {FEWER, ONE_QUEUE}
    if path == "quiet_queue.child":
        return {FEWER, ONE_QUEUE} | ({QUIET_QUEUE} if way in QUEUED else set())
    if path in HANDING_OVER:
        # a cancel sent right after the start may come before or after the first task
        handed_over = (HERE / f"{way}.{path}.child.json").exists()
        return {RELEASE} if handed_over else {RELEASE, FEWER}
    return set()


def test_histories_cover_every_way_a_run_ends() -> None:
    """On every path: runs recorded before the patches, and runs that took them."""
    stems = {p.stem for p in HISTORIES}
    assert stems >= WAYS
    assert stems >= {f"{way}.fewer_round_trips" for way in WAYS}
    since_release_queues = WAYS | {"canceled_on_arrival"}
    handed_over = since_release_queues - {"invalid", "canceled_on_arrival", "canceled_at_once"}
    for recording in HANDING_OVER:
        assert stems >= {f"{way}.{recording}" for way in since_release_queues}
        assert stems >= {f"{way}.{recording}.child" for way in handed_over}
    for path in HISTORIES:
        assert patches_in(path) == expected_patches(path.stem), path.name


def recorded_workflow_id(recorded: dict[str, Any], path: Path) -> str:
    """The id the run had: its child's id is derived from it, so the replay must use it."""
    for event in recorded["events"]:
        child = event.get("startChildWorkflowExecutionInitiatedEventAttributes")
        if child:
            return str(child["workflowId"]).partition(RELEASE_SEPARATOR)[0]
    return f"agent-job-{path.stem}"


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
    history = WorkflowHistory.from_json(recorded_workflow_id(recorded, path), recorded)
    replayer = Replayer(workflows=[AgentJobRun], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


@pytest.mark.parametrize(
    "path", [p for p in HISTORIES if p.stem.endswith(HANDING_OVER)], ids=lambda p: p.stem
)
async def test_a_later_release_replays_the_runs_it_takes_over(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an upgrade, the new release runs the tasks of runs the old one started on the host
    queue: the child it relays must be the one the history names, not one of its own release."""
    monkeypatch.setattr(version, "VERSION", "99.0.0-later")  # the sandbox re-imports the rest
    await test_recorded_history_replays(path)
