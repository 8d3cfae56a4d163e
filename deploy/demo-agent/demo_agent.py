"""Stand-in for Bigeye's agent images (design §9), stdlib only.

Accepts the agents' command lines, prints its argv and the files under /app/config, then
behaves as its environment says (DEMO_* variables). It runs as PID 1 without an init, so it
installs its own SIGTERM handler first thing: the kernel drops signals sent to PID 1 that
has no handler for them.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import NoReturn, TextIO

CONFIG_DIR = Path("/app/config")
MIB = 1024 * 1024
PAGE = 4096


class UsageError(Exception):
    pass


class StrictParser(argparse.ArgumentParser):
    """No help, no abbreviations, and errors raise instead of printing usage."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog=prog, add_help=False, allow_abbrev=False)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _lineage() -> StrictParser:
    p = StrictParser("lineage run")
    p.add_argument("-c", dest="connectors", action="append", default=[])
    p.add_argument("-n", dest="name")
    p.add_argument("--no-sync", action="store_true")
    p.add_argument("--skip-notifications", action="store_true")
    return p


def _datahealth() -> StrictParser:
    p = StrictParser("datahealth run")
    p.add_argument("--file-name", required=True)
    p.add_argument("--command")
    return p


def _external_monitors() -> StrictParser:
    p = StrictParser("external-monitors run")
    p.add_argument("-c", dest="connector", required=True)
    return p


COMMANDS = {
    ("lineage", "run"): _lineage,
    ("datahealth", "run"): _datahealth,
    ("external-monitors", "run"): _external_monitors,
}


def check_command_line(argv: list[str]) -> None:
    make_parser = COMMANDS.get((argv[0], argv[1])) if len(argv) >= 2 else None
    if make_parser is None:
        raise UsageError(f"unknown command line: {' '.join(argv) or '(empty)'}")
    make_parser().parse_args(argv[2:])


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        raise UsageError(f"{name} must be a number, got {raw!r}") from None


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        raise UsageError(f"{name} must be an integer, got {raw!r}") from None


def print_config_files() -> None:
    if not CONFIG_DIR.is_dir():
        print(f"config: {CONFIG_DIR} is missing", flush=True)
        return
    files = sorted(p for p in CONFIG_DIR.rglob("*") if not p.is_dir())
    if not files:
        print(f"config: {CONFIG_DIR} is empty", flush=True)
    for path in files:
        print(f"config: {path}", flush=True)


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    print("demo-agent: SIGTERM received, exiting with 143", flush=True)
    sys.exit(143)


def on_sigterm_ignored(signum: int, frame: FrameType | None) -> None:
    print("demo-agent: SIGTERM received and ignored", flush=True)


def allocate(mib: int) -> bytearray:
    """Allocates and writes one byte per page, so the memory is really resident."""
    buf = bytearray(mib * MIB)
    buf[::PAGE] = b"\x01" * len(range(0, len(buf), PAGE))
    return buf


# Where the numbered lines go; `both` alternates (odd lines on stdout, even on stderr).
LOG_STREAMS: dict[str, tuple[Callable[[], TextIO], ...]] = {
    "stdout": (lambda: sys.stdout,),
    "stderr": (lambda: sys.stderr,),
    "both": (lambda: sys.stderr, lambda: sys.stdout),
}


def log_line(number: int, total: int, width: int) -> str:
    head = f"line {number}/{total} "
    return head + "." * max(0, width - len(head))


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, on_sigterm)
    print(f"demo-agent argv: {' '.join(argv)}", flush=True)
    try:
        check_command_line(argv)
        sleep_seconds = env_float("DEMO_SLEEP_SECONDS", 1.0)
        exit_code = env_int("DEMO_EXIT_CODE", 0)
        lines = env_int("DEMO_LOG_LINES", 10)
        line_bytes = env_int("DEMO_LOG_LINE_BYTES", 80)
        ignore_sigterm = env_int("DEMO_IGNORE_SIGTERM", 0) == 1
        alloc_mb = env_int("DEMO_ALLOC_MB", 0)
        streams = LOG_STREAMS.get(os.environ.get("DEMO_LOG_STREAM", "stdout").strip())
        if streams is None:
            raise UsageError("DEMO_LOG_STREAM must be stdout, stderr or both")
    except UsageError as e:
        print(f"demo-agent: {e}", file=sys.stderr, flush=True)
        return 2

    if ignore_sigterm:
        signal.signal(signal.SIGTERM, on_sigterm_ignored)
        print("demo-agent: DEMO_IGNORE_SIGTERM=1, SIGTERM will be ignored", flush=True)
    print_config_files()

    held = allocate(alloc_mb) if alloc_mb > 0 else None
    if held is not None:
        print(f"demo-agent: allocated and touched {alloc_mb} MiB", flush=True)

    # The log lines are spread over the sleep: one line, then one slice of the sleep.
    slices = max(lines, 1)
    for number in range(1, lines + 1):
        out = streams[number % len(streams)]
        print(log_line(number, lines, line_bytes), file=out(), flush=True)
        time.sleep(sleep_seconds / slices)
    if lines <= 0:
        time.sleep(sleep_seconds)

    print(f"demo-agent: done, exiting with {exit_code}", flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
