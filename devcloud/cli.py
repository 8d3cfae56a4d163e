"""`bigeye-cloud-dev`: the local stand-in for Bigeye's cloud (design §10).

A thin shell over `devcloud.server`, `devcloud.runs` and `devcloud.state`. Exit codes: 0 ok,
1 failure (one line on stderr), 2 usage. Every command and subcommand takes `--state-dir`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from devcloud import runs, state
from devcloud.errors import DevcloudError
from devcloud.logs import configure_logging

PROG = "bigeye-cloud-dev"
Handler = Callable[[argparse.Namespace], int]


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(getattr(args, "state_dir", None) or state.DEFAULT_STATE_DIR)


def add_command(
    subparsers: Any, name: str, handler: Handler | None, help_text: str
) -> argparse.ArgumentParser:
    """A (sub)command that accepts `--state-dir` after its own name."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help_text, description=help_text
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        # SUPPRESS: a nested subcommand's default must not overwrite a value given earlier.
        default=argparse.SUPPRESS,
        help=f"state directory (default {state.DEFAULT_STATE_DIR}/)",
    )
    if handler is not None:
        parser.set_defaults(handler=handler)
    return parser


def _param(spec: str) -> str:
    try:
        runs.parse_param(spec)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return spec


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="the local stand-in for Bigeye's cloud")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_command(commands, "server", cmd_server, "run the local cloud in the foreground")

    run = add_command(commands, "run", cmd_run, "trigger a run of a job on a host")
    run.add_argument("--host", required=True, help="host id")
    run.add_argument("--agent", required=True, help="lineage_plus | datahealth | external_monitors")
    run.add_argument("--job", help="job id (default <host>-<agent>)")
    run.add_argument(
        "--param",
        action="append",
        default=[],
        type=_param,
        metavar="KEY=VALUE",
        help="agent parameter; a value that parses as JSON is JSON, else a string",
    )
    run.add_argument("--timeout-seconds", type=int, help="run timeout (default: the agent's)")
    run.add_argument(
        "--queue-wait-seconds",
        type=int,
        default=runs.QUEUE_WAIT_SECONDS,
        help=f"how long a run may wait for its host (default {runs.QUEUE_WAIT_SECONDS})",
    )
    run.add_argument("--wait", action="store_true", help="wait for the run to finish")

    cancel = add_command(commands, "cancel", cmd_cancel, "cancel a run")
    cancel.add_argument("--run", required=True, help="run id")
    return parser


# ---- commands ------------------------------------------------------------------------------


def cmd_server(args: argparse.Namespace) -> int:
    from devcloud.server import serve  # the server's imports are not needed by the other commands

    configure_logging(logging.INFO)
    return serve(_state_dir(args))


def cmd_run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    client = await runs.connect(state_dir)
    try:
        outcome = await runs.trigger_run(
            client,
            state_dir,
            host_id=args.host,
            agent=args.agent,
            job_id=args.job,
            parameters=runs.build_parameters(args.agent, args.param),
            timeout_seconds=args.timeout_seconds,
            queue_wait_seconds=args.queue_wait_seconds,
            wait=args.wait,
        )
    except runs.RunAlreadyActive as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(json.dumps(outcome.run, indent=2))
    return 1 if outcome.rejected else 0


def cmd_cancel(args: argparse.Namespace) -> int:
    return asyncio.run(_cancel(args))


async def _cancel(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    record = state.find_run(state_dir, args.run)
    if record is None:
        raise DevcloudError(f"unknown run {args.run} (not in {state_dir / state.RUNS_FILE})")
    client = await runs.connect(state_dir)
    await runs.cancel_run(client, state_dir, args.run)
    print(f"cancel requested for run {record.run_id} (job {record.job_id}, host {record.host_id})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # usage errors exit 2
    configure_logging(logging.WARNING)
    handler: Handler = args.handler
    try:
        return handler(args)
    except DevcloudError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
