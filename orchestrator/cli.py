"""`bigeye-orchestrator run | check | healthcheck` — a thin shell over functions tests call."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import NoReturn

from activities.docker_api import connect as connect_docker
from activities.docker_api import describe
from orchestrator.connection import connect, connect_error, tls_config
from orchestrator.health import split_addr
from orchestrator.logs import configure_logging
from orchestrator.settings import (
    DEFAULT_HEALTH_ADDR,
    Settings,
    SettingsError,
    listen_address,
    load_settings,
)
from orchestrator.version import VERSION

CHECK_TIMEOUT_SECONDS = 10.0


async def check(env: Mapping[str, str] | None = None) -> list[str]:
    """Every problem that would stop the daemon, one line each; empty means ready to run."""
    try:
        settings, host = load_settings(env)
    except SettingsError as exc:
        return [str(exc)]
    problems: list[str] = []
    if not host.agents:
        problems.append(
            f"{settings.config_path}: agents: no agent is installed: add one with "
            "bigeye-agent register --agent TYPE=IMAGE"
        )
    try:
        tls_config(settings)
    except SettingsError as exc:
        problems.append(str(exc))
        return problems
    tls = tls_problems(settings)
    problems += tls
    if any(not line.startswith(WARNING) for line in tls):
        return problems  # the handshake would only fail, and say less
    problems += await _reach_temporal(settings)
    problems += await _reach_docker(settings)
    return problems


WARNING = "warning: "


def tls_problems(settings: Settings) -> list[str]:
    """The mTLS files: dates, key pairs, CAs (warnings start with `warning: `)."""
    if settings.tls is None:
        return []
    # `check` only: the daemon does not load cryptography (its import is ~5 MB of resident memory)
    from orchestrator import certificates

    files = settings.tls
    account_ca = files.cert.parent / "mtls_ca.pem"
    found = certificates.check_tls(
        files.cert, certificates.read(files.cert), files.key, certificates.read(files.key),
        files.ca, certificates.read(files.ca),
        account_ca if account_ca.is_file() else None, certificates.read(account_ca),
    )  # fmt: skip
    return [str(p) if p.fatal else f"{WARNING}{p}" for p in found]


async def _reach_temporal(settings: Settings) -> list[str]:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            await connect(settings)
    except (TimeoutError, RuntimeError, OSError) as exc:
        detail = connect_error(exc) if str(exc) else "timed out"
        return [
            f"cannot reach Temporal at {settings.temporal_address}: {detail}: check "
            "BIGEYE_TEMPORAL_ADDRESS, the network and the TLS files"
        ]
    return []


async def _reach_docker(settings: Settings) -> list[str]:
    docker = connect_docker(settings.docker_host)
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            await docker.version()
    except Exception as exc:  # every failure to reach the engine is reported the same way
        return [describe(exc)]
    finally:
        await docker.close()
    return []


def healthcheck(env: Mapping[str, str] | None = None, show: bool = False) -> int:
    env = os.environ if env is None else env
    try:
        host, port = split_addr(listen_address(env, "BIGEYE_HEALTH_ADDR") or DEFAULT_HEALTH_ADDR)
    except SettingsError:
        host, port = "", 0
    if port == 0:
        print("orchestrator not ready: healthcheck needs BIGEYE_HEALTH_ADDR with a fixed port, "
              f"not {env.get('BIGEYE_HEALTH_ADDR')!r}", file=sys.stderr)  # fmt: skip
        return 1
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/readyz", timeout=5) as response:
            body, code = response.read(), 0 if response.status == 200 else 1
    except urllib.error.HTTPError as exc:  # 503: not ready, and why
        body, code = exc.read(), 1
    except OSError as exc:
        print(f"orchestrator not ready: {exc}", file=sys.stderr)
        return 1
    if show:
        print(body.decode("utf-8", "replace").strip())
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bigeye-orchestrator",
        description="Runs Bigeye batch agent jobs on this host, dispatched over Temporal.",
    )
    parser.add_argument("--version", action="version", version=VERSION)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the daemon (the image's entrypoint)")
    sub.add_parser(
        "drain",
        help="finish the runs on this release's queue, then exit (started by compose upgrade)",
    )
    sub.add_parser("check", help="validate settings and certificates, reach Temporal and Docker")
    health = sub.add_parser(
        "healthcheck", help="exit 0 when the daemon is ready (Docker HEALTHCHECK)"
    )
    health.add_argument("--show", action="store_true", help="print /readyz's answer (JSON)")
    args = parser.parse_args(argv)

    if args.command == "healthcheck":
        return healthcheck(show=args.show)
    if args.command == "check":
        problems = asyncio.run(check())
        for line in problems:
            print(line, file=sys.stderr)
        fatal = [line for line in problems if not line.startswith(WARNING)]
        if not fatal:
            print("ok: settings and certificates valid, Temporal and Docker reachable")
        leave_without_finalizing(1 if fatal else 0)

    try:
        settings, _ = load_settings()
    except SettingsError as exc:
        print(f"bigeye-orchestrator: {exc}", file=sys.stderr)
        return 1
    configure_logging(settings.log_format, host_id=settings.host_id)
    from orchestrator.worker import run_daemon  # imports the workflow; only the daemon needs it

    try:
        code = asyncio.run(run_daemon(settings, drain=args.command == "drain"))
    except SettingsError as exc:
        print(f"bigeye-orchestrator: {exc}", file=sys.stderr)
        code = 1
    leave_without_finalizing(code)


def leave_without_finalizing(code: int) -> NoReturn:
    """The Temporal core's threads (log forwarding, a connection being dropped) may still call
    into Python while the interpreter finalizes, which aborts the process (SIGABRT, in about one
    `check` of eight on a busy machine): flush what was written and leave without finalizing."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
