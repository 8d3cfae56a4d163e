"""activities/exits.py: exit codes and OOM kills as an operator-readable reason."""

from __future__ import annotations

import pytest

from activities.exits import exit_reason


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
