"""`make demo`: a local Bigeye cloud, one host's orchestrator, one job of each agent type.

Every step runs the project's own commands (`bigeye-cloud-dev`, `bigeye-orchestrator`) the way
an operator would, and every process it starts is stopped before it returns.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from devcloud import pki

BIN = Path(sys.executable).parent
DEMO_DIR = Path(".demo")
HOST_ID = "demo-host-01"
DEMO_IMAGE = "bigeye-demo-agent:dev"
HEALTH_ADDR = "127.0.0.1:9474"
JOBS: list[tuple[str, list[str]]] = [
    ("lineage_plus", ["connectors=snowflake", "connection_name=prod-sf", "no_sync=true"]),
    ("datahealth", ["file_name=demo_health.yml"]),
    ("external_monitors", ["connector=monte-carlo"]),
]


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def wait_until(predicate: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise SystemExit(f"demo: timed out after {within:.0f}s waiting for {what}")


@contextmanager
def background(name: str, argv: list[str], log: Path, env: dict[str, str]) -> Iterator[None]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield
        if proc.poll() is not None:
            raise SystemExit(f"demo: {name} exited early (code {proc.returncode}); see {log}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def write_host(directory: Path, temporal_address: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for agent, _ in JOBS:
        conf = directory / "agent_config" / agent
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "connection.yml").write_text(f"# {agent} connection settings\nsource: demo\n")
    config = {
        "orchestrator": {"host_id": HOST_ID, "temporal": {"address": temporal_address}},
        "agents": {
            agent: {"image": DEMO_IMAGE, "memory": "256m", "env": {"DEMO_SLEEP_SECONDS": "2"}}
            for agent, _ in JOBS
        },
    }
    path = directory / "bigeye_agent.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def register(state_dir: Path, api_url: str, host_dir: Path) -> dict[str, str]:
    """What `bigeye-agent register` does for the cloud: account CA, client certificate, host.

    Returns the orchestrator's TLS environment (files under the host's `agent_config/`).
    """
    admin = [str(BIN / "bigeye-cloud-dev"), "keys", "create", "--role", "admin"]
    key = subprocess.run(
        [*admin, "--state-dir", str(state_dir)], capture_output=True, text=True, check=True
    ).stdout.strip()
    account_ca = pki.new_ca("demo account CA")
    client = pki.issue_leaf(account_ca, HOST_ID, server=False)
    body = {
        "host_id": HOST_ID,
        "instance_id": str(uuid.uuid4()),
        "managed_agents": [agent for agent, _ in JOBS],
        "client_cert_pem": client.cert_pem,
        "client_ca_pem": account_ca.cert_pem,
    }
    request = urllib.request.Request(
        f"{api_url}/api/v1/agent-orchestrator/hosts",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"apikey {key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        registration = json.loads(response.read())
    conf = host_dir / "agent_config"
    conf.mkdir(parents=True, exist_ok=True)
    files = {
        "mtls.pem": client.cert_pem,
        "mtls.key": client.key_pem,
        "mtls_ca.pem": account_ca.cert_pem,
        "mtls_ca.key": account_ca.key_pem,
        "bigeye_workflows_ca.pem": registration["server_ca_pem"],
    }
    for name, text in files.items():
        (conf / name).write_text(text)
        (conf / name).chmod(0o600 if name.endswith(".key") else 0o644)
    return {
        "BIGEYE_TLS_CERT": str(conf / "mtls.pem"),
        "BIGEYE_TLS_KEY": str(conf / "mtls.key"),
        "BIGEYE_TLS_CA": str(conf / "bigeye_workflows_ca.pem"),
        "BIGEYE_TLS_SERVER_NAME": registration["temporal"]["server_name"],
    }


def loopback_front(endpoints: dict[str, Any]) -> str:
    """The mTLS front as this machine reaches it (the demo's orchestrator is not in a container)."""
    port = endpoints["temporal_address"].rsplit(":", 1)[1]
    return f"127.0.0.1:{port}"


def ready(addr: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{addr}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def trigger(state_dir: Path, agent: str, params: list[str]) -> subprocess.Popen[str]:
    argv = [str(BIN / "bigeye-cloud-dev"), "run", "--state-dir", str(state_dir)]
    argv += ["--host", HOST_ID, "--agent", agent, "--wait"]
    for param in params:
        argv += ["--param", param]
    print("    $ " + " ".join(argv[1:]), flush=True)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)


def summarise(run: dict[str, Any]) -> str:
    result = run.get("result") or {}
    argv = next((line for line in result.get("log_tail", []) if "argv:" in line), "")
    return (
        f"{run['agent']:<18} {run['status']:<10} exit={result.get('exit_code')!s:<4} "
        f"run={run['run_id']}  {argv.split('argv: ', 1)[-1]}"
    )


def main() -> int:
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    state_dir, host_dir = DEMO_DIR / "cloud", (DEMO_DIR / "host").resolve()
    state_dir.mkdir(parents=True)
    env = dict(os.environ)

    step("starting the local Bigeye cloud (Temporal dev server, mTLS front, API)")
    server = [str(BIN / "bigeye-cloud-dev"), "server", "--state-dir", str(state_dir)]
    with background("bigeye-cloud-dev server", server, DEMO_DIR / "cloud.log", env):
        endpoints_file = state_dir / "endpoints.json"
        wait_until(endpoints_file.exists, 90, "the local cloud")
        endpoints = json.loads(endpoints_file.read_text())
        front = loopback_front(endpoints)
        print(f"    API at {endpoints['api_url']}, Temporal (mTLS) at {front}")

        step(f"registering host {HOST_ID} with its account CA and client certificate")
        tls_env = register(state_dir, endpoints["api_url"], host_dir)

        step(f"writing host {HOST_ID}'s bigeye_agent.yml with the three batch agents")
        config = write_host(host_dir, front)

        step("starting the orchestrator against the local Docker engine")
        orch_env = {
            **env,
            "BIGEYE_AGENT_CONFIG": str(config),
            "BIGEYE_HEALTH_ADDR": HEALTH_ADDR,
            "BIGEYE_LOG_FORMAT": "json",
            **tls_env,
        }
        orchestrator = [str(BIN / "bigeye-orchestrator"), "run"]
        with background(
            "bigeye-orchestrator", orchestrator, DEMO_DIR / "orchestrator.log", orch_env
        ):
            wait_until(lambda: ready(HEALTH_ADDR), 60, "the orchestrator to poll")
            print(
                f"    polling agent-orchestrator.{HOST_ID}; logs in {DEMO_DIR / 'orchestrator.log'}"
            )

            step("dispatching one job of each agent type")
            procs = [(agent, trigger(state_dir, agent, params)) for agent, params in JOBS]
            runs = []
            for agent, proc in procs:
                out, _ = proc.communicate(timeout=300)
                if proc.returncode != 0 and not out.strip():
                    raise SystemExit(f"demo: the {agent} run was rejected")
                runs.append(json.loads(out))

    step("results")
    for run in runs:
        print("    " + summarise(run))
    print()
    print(json.dumps([r["result"] for r in runs], indent=2))
    ok = all(run["status"] == "succeeded" for run in runs)
    print(f"\n{len([r for r in runs if r['status'] == 'succeeded'])}/{len(runs)} succeeded")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
