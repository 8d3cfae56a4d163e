"""`make demo`: the operator's journey on one machine.

A local Bigeye cloud comes up, an admin key is created, `bigeye-agent register` brings the host
`demo-host-01` under orchestration with the three batch agents (the compose stack: orchestrator
in its container, Docker only through the socket proxy, Temporal over mTLS), the host shows
healthy, and one job of each agent type is triggered and its result printed. Then the web UI's
URL is printed and the page stays reachable until Enter is pressed (not with `--no-wait`, nor
when standard input is not a terminal: CI and scripts never block). Everything the demo starts
is stopped before it returns; its files stay in `.demo/` to look at.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import yaml

BIN = Path(sys.executable).parent
DEMO_DIR = Path(".demo")
HOST_ID = "demo-host-01"
PROJECT = "bigeye-agent-demo"
DEMO_IMAGE = "bigeye-demo-agent:dev"
# The operator the demo plays: the stack runs as the owner of the host directory.
OPERATOR_UID = 10001
JOBS: list[tuple[str, list[str]]] = [
    ("lineage_plus", ["connectors=snowflake", "connection_name=prod-sf", "no_sync=true"]),
    ("datahealth", ["file_name=demo_health.yml"]),
    ("external_monitors", ["connector=monte-carlo"]),
]
EXISTING_CONFIG = """\
# bigeye_agent.yml of a host that ran its agents by hand until today
company_uuid: demo-company
data_source:
  type: snowflake
  account: demo.eu-west-1
"""


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def show(argv: list[str]) -> None:
    print("    $ " + " ".join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv)))


def wait_until(predicate: Any, within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise SystemExit(f"demo: timed out after {within:.0f}s waiting for {what}")


def check(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"demo: `{' '.join(argv[:3])} …` failed (exit {done.returncode})")
    return done


@contextmanager
def cloud_server(state_dir: Path, log: Path) -> Iterator[dict[str, Any]]:
    argv = [str(BIN / "bigeye-cloud-dev"), "server", "--state-dir", str(state_dir)]
    show(argv)
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        endpoints_file = state_dir / "endpoints.json"
        wait_until(lambda: endpoints_file.exists() or proc.poll() is not None, 90, "the cloud")
        if proc.poll() is not None:
            raise SystemExit(f"demo: the local cloud exited (code {proc.returncode}); see {log}")
        yield json.loads(endpoints_file.read_text())
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def cloud_cli(state_dir: Path, *args: str) -> list[str]:
    return [str(BIN / "bigeye-cloud-dev"), args[0], "--state-dir", str(state_dir), *args[1:]]


def health_of(state_dir: Path) -> str | None:
    done = subprocess.run(cloud_cli(state_dir, "hosts", "--json"), capture_output=True, text=True)
    for host in json.loads(done.stdout or "[]"):
        if host["host_id"] == HOST_ID:
            return str(host["health"])
    return None


def summarise(run: dict[str, Any]) -> str:
    result = run.get("result") or {}
    argv = next((line for line in result.get("log_tail", []) if "argv:" in line), "")
    return (
        f"{run['agent']:<18} {run['status']:<10} exit={result.get('exit_code')!s:<4} "
        f"run={run['run_id']}  {argv.split('argv: ', 1)[-1]}"
    )


def should_wait(no_wait: bool, stdin: TextIO) -> bool:
    """Wait for Enter only when asked to and someone can press it (a terminal)."""
    return not no_wait and stdin.isatty()


def show_ui(endpoints: dict[str, Any], key: str, *, wait: bool) -> None:
    key_file = DEMO_DIR / "admin.key"
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(key + "\n")
    step("the web UI: Settings → Agents → Hosts, Jobs (Run now), Run (log tail, Cancel)")
    print(f"    {endpoints.get('ui_url') or endpoints['api_url'] + '/ui/'}")
    print(f"    log in with the admin key in {key_file}")
    if not wait:
        return
    try:
        input("\n    press Enter to stop the demo ")
    except (EOFError, KeyboardInterrupt):
        print()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devcloud.demo", description="the operator's journey on one machine"
    )
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="stop as soon as the jobs are done instead of keeping the web UI up until Enter",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if DEMO_DIR.exists():
        stale = DEMO_DIR / "host" / "docker-compose.bigeye.yml"
        if stale.exists():
            subprocess.run(
                ["docker", "compose", "-f", str(stale), "-p", PROJECT, "down", "-t", "5"],
                capture_output=True,
            )
        shutil.rmtree(DEMO_DIR)
    state_dir, host_dir = DEMO_DIR / "cloud", (DEMO_DIR / "host").resolve()
    state_dir.mkdir(parents=True)
    host_dir.mkdir()
    (host_dir / "bigeye_agent.yml").write_text(EXISTING_CONFIG)
    os.chown(host_dir, OPERATOR_UID, OPERATOR_UID)
    os.chown(host_dir / "bigeye_agent.yml", OPERATOR_UID, OPERATOR_UID)

    step("the local Bigeye cloud: Temporal dev server, HTTP API, mTLS front")
    with cloud_server(state_dir, DEMO_DIR / "cloud.log") as endpoints:
        print(f"    API {endpoints['api_url']}, Temporal (mTLS) {endpoints['temporal_address']}")
        step("an admin Personal API Key")
        argv = cloud_cli(state_dir, "keys", "create", "--role", "admin")
        show(argv)
        key = check(argv).stdout.strip()
        print(f"    {key[:6]}… (kept in BIGEYE_API_KEY)")

        step(f"registering {HOST_ID} with the three batch agents")
        argv = [str(BIN / "bigeye-agent"), "register", "--host-id", HOST_ID]
        for agent, _ in JOBS:
            argv += ["--agent", f"{agent}={DEMO_IMAGE}"]
        show(argv)
        env = {
            **os.environ,
            "BIGEYE_API_KEY": key,
            "BIGEYE_URL": endpoints["api_url"],
            "BIGEYE_COMPOSE_PROJECT": PROJECT,
        }
        done = check(argv, cwd=host_dir, env=env)
        print("    " + done.stdout.strip().replace("\n", "\n    "))
        for agent, _ in JOBS:  # the operator drops each agent's own settings in place
            conf = host_dir / "agent_config" / agent / "connection.yml"
            conf.write_text(f"# {agent} connection settings\nsource: demo\n")
            os.chown(conf, OPERATOR_UID, OPERATOR_UID)
        try:
            code = run_jobs(state_dir, host_dir, env)
            show_ui(endpoints, key, wait=should_wait(args.no_wait, sys.stdin))
            return code
        finally:
            step("stopping the stack (bigeye-agent compose down)")
            subprocess.run(
                [str(BIN / "bigeye-agent"), "compose", "down"],
                cwd=host_dir,
                env=env,
                capture_output=True,
            )


def run_jobs(state_dir: Path, host_dir: Path, env: dict[str, str]) -> int:
    step("waiting for the host to report healthy")
    argv = [str(BIN / "bigeye-agent"), "compose", "status"]
    wait_until(lambda: health_of(state_dir) == "healthy", 180, "the host's first heartbeat")
    show(argv)
    status = check(argv, cwd=host_dir, env=env)
    print("    " + status.stdout.strip().replace("\n", "\n    "))
    hosts = check(cloud_cli(state_dir, "hosts"))
    print("    " + hosts.stdout.strip().replace("\n", "\n    "))

    step("triggering one job of each agent type through the cloud")
    procs = []
    for agent, params in JOBS:
        argv = cloud_cli(state_dir, "run", "--host", HOST_ID, "--agent", agent, "--wait")
        for param in params:
            argv += ["--param", param]
        show(argv)
        procs.append((agent, subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)))
    runs = []
    for agent, proc in procs:
        out, _ = proc.communicate(timeout=300)
        if not out.strip():
            raise SystemExit(f"demo: the {agent} run was rejected")
        runs.append(json.loads(out))

    step("results")
    for run in runs:
        print("    " + summarise(run))
    (DEMO_DIR / "results.json").write_text(json.dumps(runs, indent=2))
    print(f"\n    full JobRunResults in {DEMO_DIR / 'results.json'}; the host in {host_dir}")
    if runs[0].get("result"):
        print(f"\n    the {runs[0]['agent']} run's JobRunResult:")
        text = yaml.safe_dump(runs[0]["result"], sort_keys=False).rstrip()
        print("      " + text.replace("\n", "\n      "))
    succeeded = sum(run["status"] == "succeeded" for run in runs)
    print(f"\n{succeeded}/{len(runs)} succeeded")
    return 0 if succeeded == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
