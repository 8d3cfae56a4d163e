"""The stack the bench measures "through the proxy": a local Bigeye cloud (devcloud), a host
registered with `bigeye-agent register` (the compose stack: the orchestrator in its container,
Docker only through the socket proxy, Temporal over mTLS), as an operator sets it up."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from temporalio.service import TLSConfig

from bench.world import BIN, DEMO_IMAGE, wait_for
from devcloud.demo import OPERATOR_UID, check, cloud_cli, cloud_server

ORCHESTRATOR_SERVICE = "bigeye-agent-orchestrator"
TAKING_RUNS = b'"event": "polling"'  # its workers poll the host queue


class Stack:
    def __init__(self, host_dir: Path, host_id: str, env: dict[str, str],
                 endpoints: dict[str, Any]) -> None:  # fmt: skip
        self.host_dir = host_dir
        self.host_id = host_id
        self.env = env
        self.temporal_address = str(endpoints["temporal_plain_address"])
        self.mtls_address = str(endpoints["temporal_address"])
        self.namespace = str(endpoints.get("namespace", "default"))
        self.task_queue = f"agent-orchestrator.{host_id}"
        self.config = host_dir / "bigeye_agent.yml"

    def set_agent_env(self, agent_env: dict[str, str]) -> None:
        """As the operator edits bigeye_agent.yml: the orchestrator re-reads it for every job."""
        config: dict[str, Any] = yaml.safe_load(self.config.read_text())
        config["agents"]["datahealth"]["env"] = agent_env
        config["agents"]["datahealth"]["max_concurrent"] = 64
        tmp = self.config.with_suffix(".bench")
        tmp.write_text(yaml.safe_dump(config))
        os.chown(tmp, OPERATOR_UID, OPERATOR_UID)
        tmp.replace(self.config)

    def tls(self) -> TLSConfig:
        """The host's own mTLS files, as its orchestrator presents them to the front."""
        keys = self.host_dir / "agent_config"
        return TLSConfig(
            client_cert=(keys / "mtls.pem").read_bytes(),
            client_private_key=(keys / "mtls.key").read_bytes(),
            server_root_ca_cert=(keys / "bigeye_workflows_ca.pem").read_bytes(),
            domain="host.docker.internal",
        )

    def container(self) -> str:
        project = self.env["BIGEYE_COMPOSE_PROJECT"]
        done = check([
            "docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
            "--filter", f"label=com.docker.compose.service={ORCHESTRATOR_SERVICE}",
        ])  # fmt: skip
        return done.stdout.split()[0]

    def pid(self) -> int:
        done = check(["docker", "inspect", "-f", "{{.State.Pid}}", self.container()])
        return int(done.stdout.strip())

    def taking_runs(self, since: float) -> bool:
        done = subprocess.run(["docker", "logs", "--since", f"{since:.3f}", self.container()],
                              capture_output=True)  # fmt: skip
        return TAKING_RUNS in done.stdout or TAKING_RUNS in done.stderr

    def restart_to_taking_runs(self) -> float:
        """`docker restart` of the orchestrator's container → it takes new runs. Seconds."""
        container = self.container()
        check(["docker", "stop", "-t", "10", container])
        began = time.time()
        check(["docker", "start", container])
        wait_for(lambda: self.taking_runs(began - 0.5), 60, "the orchestrator to take runs")
        return time.time() - began


@contextmanager
def registered_stack(work: Path, agent_env: dict[str, str]) -> Iterator[Stack]:
    state_dir, host_dir = work / "cloud", work / "host"
    for directory in (work, *work.parents):  # the orchestrator's user reaches the host dir
        if directory == Path("/tmp") or directory == Path("/"):
            break
        directory.mkdir(exist_ok=True)
        directory.chmod(0o755)
    state_dir.mkdir()
    host_dir.mkdir()
    os.chown(host_dir, OPERATOR_UID, OPERATOR_UID)
    host_id = f"bench-stack-{uuid.uuid4().hex[:6]}"
    with cloud_server(state_dir, work / "cloud.log") as endpoints:
        key = check(cloud_cli(state_dir, "keys", "create", "--role", "admin")).stdout.strip()
        env = {**os.environ, "BIGEYE_API_KEY": key, "BIGEYE_URL": endpoints["api_url"],
               "BIGEYE_COMPOSE_PROJECT": f"bigeye-bench-{uuid.uuid4().hex[:6]}"}  # fmt: skip
        check([str(BIN / "bigeye-agent"), "register", "--host-id", host_id,
               "--agent", f"datahealth={DEMO_IMAGE}"], cwd=host_dir, env=env)  # fmt: skip
        stack = Stack(host_dir, host_id, env, endpoints)
        try:
            stack.set_agent_env(agent_env)
            wait_for(lambda: stack.taking_runs(0), 120, "the stack's orchestrator to take runs")
            yield stack
        finally:
            subprocess.run([str(BIN / "bigeye-agent"), "compose", "down"], cwd=host_dir,
                           env=env, capture_output=True)  # fmt: skip
