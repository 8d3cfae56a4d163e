"""orchestrator/contract.py: how a run ended, as the JobRunResult an operator reads."""

from __future__ import annotations

import pytest

from orchestrator.contract import (
    ContainerEnd,
    exit_reason,
    job_result,
    parse_job_request,
)


def test_clean_exit_has_no_reason():
    assert exit_reason(0) is None


@pytest.mark.parametrize(("code", "expected"), [(137, 137), (None, 137), (1, 1), (0, 0)])
def test_oom_kill_wins_over_the_exit_code(code, expected):
    assert exit_reason(code, oom_killed=True) == f"killed: out of memory (exit {expected})"


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (137, "killed: SIGKILL (exit 137)"),
        (143, "terminated: SIGTERM (exit 143)"),
        (125, "the container failed to run (exit 125)"),
        (126, "the command could not be invoked (exit 126)"),
        (127, "the command was not found in the image (exit 127)"),
        (1, "exited with code 1"),
        (2, "exited with code 2"),
        (255, "exited with code 255"),
        (128, "exited with code 128"),
        (130, "killed by signal 2 (exit 130)"),
        (129, "killed by signal 1 (exit 129)"),
        (159, "killed by signal 31 (exit 159)"),
        (160, "exited with code 160"),
        (-1, "exited with code -1"),
    ],
)
def test_reasons(code, reason):
    assert exit_reason(code) == reason


def test_unknown_exit_code_is_said_so():
    reason = exit_reason(None)
    assert reason is not None
    assert "unknown" in reason


# ---- job_result: how the run ended + what the container left → the result ----------------------

REQUEST = parse_job_request(
    {"job_id": "j1", "run_id": "r1", "agent": "datahealth", "parameters": {"file_name": "a"}}
)
NOW = "2026-11-30T12:00:09Z"


def end(exit_code: int | None = 0, *, state: str = "exited", oom: bool = False) -> ContainerEnd:
    return ContainerEnd(
        container_id="c" * 64,
        state=state,
        exit_code=exit_code,
        oom_killed=oom,
        started_at=None if state == "created" else "2026-11-30T12:00:00.5Z",
        finished_at=None if state == "created" else "2026-11-30T12:00:08.25Z",
        log_tail=["first", "last"],
    )


def result(ended_by: str, container: ContainerEnd | None, reason: str | None = None, **kw: object):
    fields: dict[str, object] = {
        "request": REQUEST,
        "host_id": "h1",
        "image": "reg/dh:1",
        "image_id": "sha256:" + "1" * 64,
        "image_digest": None,
        "ended_by": ended_by,
        "end": container,
        "reason": reason,
        "timeout_seconds": 60,
        "finished_at": NOW,
        "orchestrator_version": "9.9.9",
        **kw,
    }
    return job_result(**fields)  # type: ignore[arg-type]


def test_a_clean_exit_succeeds_with_the_containers_times_and_tail():
    done = result("exited", end(0))
    assert (done.status, done.exit_code, done.reason) == ("succeeded", 0, None)
    assert done.started_at == "2026-11-30T12:00:00.5Z"
    assert done.finished_at == "2026-11-30T12:00:08.25Z"
    assert done.log_tail == ["first", "last"]
    assert done.container_name == "bigeye-job-j1-r1" and done.host_id == "h1"
    assert done.orchestrator_version == "9.9.9"


@pytest.mark.parametrize(
    ("container", "reason"),
    [
        (end(3), "exited with code 3"),
        (end(137, oom=True), "killed: out of memory (exit 137)"),
        (end(0, oom=True), "killed: out of memory (exit 0)"),
    ],
)
def test_a_bad_exit_fails_with_the_exit_reason(container, reason):
    done = result("exited", container)
    assert (done.status, done.reason, done.exit_code) == ("failed", reason, container.exit_code)


def test_an_engine_that_went_away_during_the_run_is_said_so():
    done = result("exited", end(143), engine_interrupted=True)
    assert done.status == "failed"
    assert done.reason == (
        "terminated: SIGTERM (exit 143) (the Docker engine restarted or was unreachable during "
        "the run)"
    )
    assert result("exited", end(0), engine_interrupted=True).reason is None


@pytest.mark.parametrize(
    ("container", "reason"),
    [
        (end(143), "timed out after 60 s (terminated: SIGTERM (exit 143))"),
        (end(0), "timed out after 60 s (exit 0)"),
        (end(137), "timed out after 60 s (killed: SIGKILL (exit 137))"),
        (None, "timed out after 60 s"),
    ],
)
def test_the_deadline_times_out_whatever_the_exit(container, reason):
    done = result("deadline", container)
    assert (done.status, done.reason) == ("timed_out", reason)


def test_a_cancel_keeps_the_exit_code_and_tail_of_what_ran():
    done = result("canceled", end(143))
    assert (done.status, done.reason, done.exit_code) == ("canceled", "canceled by request", 143)
    assert done.log_tail == ["first", "last"]


def test_a_cancel_before_anything_ran_has_no_exit_code_or_times():
    for container in (None, end(state="created")):
        done = result("canceled", container)
        assert (done.status, done.exit_code, done.started_at) == ("canceled", None, None)
        assert done.finished_at == NOW


def test_a_clean_up_that_failed_is_added_to_the_reason():
    done = result("canceled", None, "the container could not be stopped (x)")
    assert done.reason == "canceled by request; the container could not be stopped (x)"


def test_a_failure_before_the_container_ran_reports_the_error_alone():
    done = result("failed", end(state="created"), "launching: Docker engine answered 400: no")
    assert (done.status, done.reason, done.exit_code) == (
        "failed",
        "launching: Docker engine answered 400: no",
        None,
    )
    assert result("failed", None).reason == "the run failed"


def test_a_failure_without_a_reason_falls_back_to_the_exit_reason():
    assert result("failed", end(2)).reason == "exited with code 2"
