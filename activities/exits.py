"""Exit codes and OOM kills as a sentence an operator understands."""

from __future__ import annotations

_KNOWN = {
    125: "the container failed to run (exit 125)",
    126: "the command could not be invoked (exit 126)",
    127: "the command was not found in the image (exit 127)",
    137: "killed: SIGKILL (exit 137)",
    143: "terminated: SIGTERM (exit 143)",
}


def exit_reason(exit_code: int | None, oom_killed: bool = False) -> str | None:
    """None for a clean exit; otherwise why the run ended as it did."""
    if oom_killed:
        code = exit_code if exit_code is not None else 137
        return f"killed: out of memory (exit {code})"
    if exit_code is None:
        return "the container's exit code is unknown"
    if exit_code == 0:
        return None
    if exit_code in _KNOWN:
        return _KNOWN[exit_code]
    if 128 < exit_code < 160:
        return f"killed by signal {exit_code - 128} (exit {exit_code})"
    return f"exited with code {exit_code}"
