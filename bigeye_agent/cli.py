"""`bigeye-agent register | install | compose … | sync` — a thin shell over functions tests call.

Exit codes: 0 success, 1 failure (one line on stderr naming the problem and its fix),
2 usage. User-facing output is plain lines; logs (structlog, -v) go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import shtab

from bigeye_agent import compose, messages
from bigeye_agent.compose_file import ORCHESTRATOR_SERVICE
from bigeye_agent.diagnose import diagnose
from bigeye_agent.install import InstallOptions, install
from bigeye_agent.logs import set_verbose
from bigeye_agent.messages import CliError
from bigeye_agent.register import RegisterOptions, register
from bigeye_agent.sync import sync
from orchestrator.version import VERSION

PROG = "bigeye-agent"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dir",
        metavar="PATH",
        type=Path,
        default=None,
        help="the host directory holding bigeye_agent.yml (default: the current directory)",
    )
    url = argparse.ArgumentParser(add_help=False)
    url.add_argument(
        "--bigeye-url",
        metavar="URL",
        help="Bigeye's address (default: $BIGEYE_URL, else https://app.bigeye.com)",
    )

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run Bigeye's batch agents on this host under the Bigeye agent orchestrator.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {VERSION}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    reg = commands.add_parser(
        "register",
        parents=[common, url],
        help="register this host and start the Docker Compose stack",
        description=(
            "Register this host with Bigeye and move it to Docker Compose mode: checks Docker "
            "and the API key (BIGEYE_API_KEY, else a prompt; an admin Personal API Key), writes "
            "the mTLS files in agent_config/, backs up and updates bigeye_agent.yml, renders "
            "docker-compose.bigeye.yml and runs docker compose up -d. Run it from the host "
            "directory."
        ),
    )
    reg.add_argument("--host-id", required=True, metavar="ID", help="this host's id")
    reg.add_argument(
        "--agent",
        action="append",
        default=[],
        metavar="TYPE=IMAGE",
        help="add a batch agent (lineage_plus, datahealth, external_monitors); repeatable",
    )

    inst = commands.add_parser(
        "install",
        parents=[common, url],
        help="add a batch agent to the agent set (then sync, on a registered host)",
        description=(
            "Add a batch agent to the host's agent set in bigeye_agent.yml, with the image and "
            "config directory the host already uses for it (else Bigeye's published image and "
            "agent_config/<agent>). On a terminal it asks for what the flags leave open; on a "
            "registered host it then does what sync does."
        ),
    )
    inst.add_argument(
        "agent", nargs="?", metavar="AGENT", help="lineage_plus, datahealth or external_monitors"
    )
    inst.add_argument("--image", metavar="IMAGE", help="the agent's image")
    inst.add_argument(
        "--config-dir", metavar="DIR", help="its config directory, inside the host directory"
    )
    inst.add_argument("-y", "--yes", action="store_true", help="ask nothing: take the defaults")

    diag = commands.add_parser(
        "diagnose",
        parents=[common],
        help="report the host's state for a support ticket (no secret is ever in it)",
        description="Host checks (Docker, Compose, the socket, bigeye_agent.yml, the agent set, "
        "the mTLS files' modes and dates), the stack, bigeye-orchestrator check and readiness "
        "inside it, and the orchestrator's last log events. Exit 1 when a problem is found.",
    )
    diag.add_argument("--json", action="store_true", help="the report as JSON")
    comp_shell = commands.add_parser(
        "completion", help="print a shell completion script (bash, zsh or tcsh)"
    )
    comp_shell.add_argument("shell", choices=("bash", "zsh", "tcsh"))

    comp = commands.add_parser(
        "compose",
        help="manage the Docker Compose stack (status, logs, up, down, upgrade)",
        description="docker compose for docker-compose.bigeye.yml and this host's project "
        "($BIGEYE_COMPOSE_PROJECT, else bigeye-agent).",
    )
    actions = comp.add_subparsers(dest="action", metavar="ACTION", required=True)
    status_cmd = actions.add_parser(
        "status", parents=[common], help="show the stack's containers (ps)"
    )
    status_cmd.add_argument("--json", action="store_true", help="the state as JSON")
    logs = actions.add_parser("logs", parents=[common], help="show the stack's logs")
    logs.add_argument(
        "-s", "--service", metavar="SERVICE", help=f"one service, e.g. {ORCHESTRATOR_SERVICE}"
    )
    logs.add_argument("-f", "--follow", action="store_true", help="follow the logs")
    actions.add_parser("up", parents=[common], help="start the stack (up -d)")
    actions.add_parser("down", parents=[common], help="stop and remove the stack's services")
    actions.add_parser(
        "upgrade",
        parents=[common],
        help="pull the images, then recreate the orchestrator and the proxy",
        description="Pull the stack's images (a failed pull is not fatal when the images are "
        "present locally), then recreate the orchestrator and the socket proxy. Running job "
        "containers keep running and are re-adopted.",
    )

    sync_cmd = commands.add_parser(
        "sync",
        parents=[common, url],
        help="apply bigeye_agent.yml: re-render the stack, push the agent set, up -d",
        description="Re-render docker-compose.bigeye.yml from bigeye_agent.yml, push the agent "
        "set to Bigeye (BIGEYE_API_KEY, else a prompt) and run docker compose up -d.",
    )
    sync_cmd.add_argument("--json", action="store_true", help="what was applied, as JSON")
    return parser


def _dispatch(args: argparse.Namespace, env: Mapping[str, str], out: Callable[[str], None]) -> int:
    host_dir = (getattr(args, "dir", None) or Path.cwd()).resolve()
    if args.command == "register":
        opts = RegisterOptions(host_dir, args.host_id, args.bigeye_url, tuple(args.agent))
        register(opts, env, out)
    elif args.command == "install":
        options = InstallOptions(
            host_dir, args.agent, args.image, args.config_dir, args.yes, args.bigeye_url
        )
        install(options, env, out)
    elif args.command == "sync":
        if args.json:
            print(json.dumps(sync(host_dir, env, args.bigeye_url, _to_stderr), sort_keys=True))
        else:
            sync(host_dir, env, args.bigeye_url, out)
    elif args.command == "diagnose":
        return diagnose(host_dir, env, args.json, out)
    elif args.command == "completion":
        out(shtab.complete(build_parser(), shell=args.shell))
    elif args.action == "status":
        compose.status(host_dir, env, out, args.json)
    elif args.action == "logs":
        try:
            compose.logs(host_dir, env, args.service, args.follow)
        except KeyboardInterrupt:
            return 0  # the way to stop following
    elif args.action == "upgrade":
        compose.upgrade(host_dir, env, out)
    else:
        {"up": compose.up, "down": compose.down}[args.action](host_dir, env)
    return 0


def _to_stderr(line: str) -> None:
    """What a command says while its JSON goes to stdout."""
    sys.stderr.write(line + "\n")


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else 2
    set_verbose(args.verbose)
    env = dict(os.environ) if env is None else env

    def out(line: str) -> None:
        print(line, flush=True)

    try:
        return _dispatch(args, env, out)
    except CliError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: error: {messages.INTERRUPTED}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
