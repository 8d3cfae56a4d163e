"""`bigeye-cloud-dev`: the local stand-in for Bigeye's cloud (design §10).

A thin shell over `devcloud.server`, the HTTP API (`devcloud.api_client`, with the server's
internal admin key, so the API's host and agent checks apply) and `devcloud.keys`. Exit codes:
0 ok, 1 failure (one line on stderr), 2 usage. Every command and subcommand takes `--state-dir`.
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

from devcloud import db, keys, runs, state, tables
from devcloud.api_client import ORCHESTRATOR, ApiClient, ApiRejected
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

    keys_parser = add_command(commands, "keys", None, "Personal API keys")
    keys_commands = keys_parser.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = add_command(keys_commands, "create", cmd_keys_create, "create a key; prints it alone")
    create.add_argument("--role", required=True, choices=keys.ROLES, help="admin | member")

    for name, handler, what in (
        ("hosts", cmd_hosts, "list registered hosts and their health"),
        ("jobs", cmd_jobs, "list jobs"),
        ("runs", cmd_runs, "list runs"),
    ):
        listing = add_command(commands, name, handler, what)
        listing.add_argument("--json", action="store_true", help="JSON for machines")

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


def cmd_keys_create(args: argparse.Namespace) -> int:
    """Straight into the store: works whether or not the server runs."""
    conn = db.connect(_state_dir(args))
    try:
        print(keys.create_key(conn, args.role))
    finally:
        conn.close()
    return 0


async def _get(args: argparse.Namespace, path: str) -> Any:
    async with ApiClient.for_state_dir(_state_dir(args)) as api:
        return await api.call("GET", f"{ORCHESTRATOR}/{path}")


def _print_listing(args: argparse.Namespace, items: Any, table: Callable[[Any], str]) -> int:
    print(json.dumps(items, indent=2) if args.json else table(items))
    return 0


def hosts_table(items: list[dict[str, Any]]) -> str:
    rows = [
        (h["host_id"], h["health"], h["last_heartbeat_at"], ",".join(h["managed_agents"]))
        for h in items
    ]
    return tables.render(("HOST", "HEALTH", "LAST HEARTBEAT", "AGENTS"), rows)


def jobs_table(items: list[dict[str, Any]]) -> str:
    rows = [
        (j["job_id"], j["host_id"], j["agent"], json.dumps(j["parameters"], sort_keys=True))
        for j in items
    ]
    return tables.render(("JOB", "HOST", "AGENT", "PARAMETERS"), rows)


def runs_table(items: list[dict[str, Any]]) -> str:
    rows = []
    for r in items:
        result = r.get("result") or {}
        detail = (r.get("error") or {}).get("type") or result.get("reason")
        rows.append((r["run_id"], r["job_id"], r["host_id"], r["agent"], r["status"],
                     result.get("exit_code"), detail))  # fmt: skip
    return tables.render(("RUN", "JOB", "HOST", "AGENT", "STATUS", "EXIT", "DETAIL"), rows)


def cmd_hosts(args: argparse.Namespace) -> int:
    return _print_listing(args, asyncio.run(_get(args, "hosts")), hosts_table)


def cmd_jobs(args: argparse.Namespace) -> int:
    return _print_listing(args, asyncio.run(_get(args, "jobs")), jobs_table)


def cmd_runs(args: argparse.Namespace) -> int:
    return _print_listing(args, asyncio.run(_get(args, "runs")), runs_table)


def cmd_run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "host_id": args.host,
        "agent": args.agent,
        "job_id": args.job,
        "queue_wait_seconds": args.queue_wait_seconds,
        "timeout_seconds": args.timeout_seconds,
    }
    if args.param:
        body["parameters"] = runs.build_parameters(args.agent, args.param)
    async with ApiClient.for_state_dir(_state_dir(args)) as api:
        try:
            run = await api.call("POST", f"{ORCHESTRATOR}/runs", body)
        except ApiRejected as exc:
            if exc.status in (400, 409):
                print(str(exc), file=sys.stderr)
                return 1
            raise
        if args.wait:
            run = await api.call(
                "GET", f"{ORCHESTRATOR}/runs/{run['run_id']}", params={"wait": "true"}
            )
    print(json.dumps(run, indent=2))
    return 1 if runs.is_rejected(run) else 0


def cmd_cancel(args: argparse.Namespace) -> int:
    return asyncio.run(_cancel(args))


async def _cancel(args: argparse.Namespace) -> int:
    async with ApiClient.for_state_dir(_state_dir(args)) as api:
        run = await api.call("POST", f"{ORCHESTRATOR}/runs/{args.run}/cancel")
    print(f"cancel requested for run {run['run_id']} (job {run['job_id']}, host {run['host_id']})")
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
