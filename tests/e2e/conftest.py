"""The e2e world: devcloud (Temporal dev server, HTTP API, mTLS front), real images, real
Docker Compose stacks brought up by `bigeye-agent register`, one project per test host."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.waiting import wait_for

BIN = Path(sys.executable).parent
DEMO_IMAGE = "bigeye-demo-agent:dev"
IMAGES = (
    DEMO_IMAGE,
    "bigeyedata/agent-orchestrator:dev",
    "bigeyedata/agent-docker-socket-proxy:dev",
)
# A non-root operator: the orchestrator runs as the owner of the host directory.
OPERATOR_UID = 4242


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, **kwargs)


@dataclass
class Cloud:
    state_dir: Path
    proc: subprocess.Popen[bytes]
    # the account's keys, once a host registered: later hosts copy them, as operators do
    agent_config: Path | None = None

    @property
    def endpoints(self) -> dict[str, Any]:
        return dict(json.loads((self.state_dir / "endpoints.json").read_text()))

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(
            [
                str(BIN / "bigeye-cloud-dev"),
                *args[:1],
                "--state-dir",
                str(self.state_dir),
                *args[1:],
            ]
        )

    def key(self, role: str = "admin") -> str:
        done = run(
            [
                str(BIN / "bigeye-cloud-dev"),
                "keys",
                "create",
                "--state-dir",
                str(self.state_dir),
                "--role",
                role,
            ]
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def run_job(
        self, host_id: str, agent: str, *params: str, wait: bool = True
    ) -> tuple[int, dict[str, Any] | None, str]:
        argv = ["run", "--host", host_id, "--agent", agent]
        for param in params:
            argv += ["--param", param]
        if wait:
            argv.append("--wait")
        done = self.cli(*argv)
        body = json.loads(done.stdout) if done.stdout.strip() else None
        return done.returncode, body, done.stderr

    def hosts(self) -> list[dict[str, Any]]:
        done = self.cli("hosts", "--json")
        assert done.returncode == 0, done.stderr
        return list(json.loads(done.stdout))


@pytest.fixture(scope="session")
def images() -> None:
    for image in IMAGES:
        assert run(["docker", "image", "inspect", image]).returncode == 0, (
            f"{image} is missing: run `make images`"
        )


def start_cloud(state_dir: Path) -> Cloud:
    log = open(state_dir / "server.log", "wb")
    proc = subprocess.Popen(
        [str(BIN / "bigeye-cloud-dev"), "server", "--state-dir", str(state_dir)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    endpoints = state_dir / "endpoints.json"
    wait_for(lambda: endpoints.exists() or proc.poll() is not None, 90, "devcloud")
    assert proc.poll() is None, (state_dir / "server.log").read_text()[-2000:]
    return Cloud(state_dir, proc)


def stop_cloud(cloud: Cloud) -> None:
    cloud.proc.send_signal(signal.SIGTERM)
    try:
        cloud.proc.wait(30)
    except subprocess.TimeoutExpired:
        cloud.proc.kill()


@pytest.fixture(scope="module")
def make_cloud(images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    clouds: list[Cloud] = []

    def factory() -> Cloud:
        cloud = start_cloud(tmp_path_factory.mktemp("cloud"))
        clouds.append(cloud)
        return cloud

    yield factory
    for cloud in clouds:
        stop_cloud(cloud)


@pytest.fixture(scope="module")
def cloud(make_cloud: Any) -> Cloud:
    return make_cloud()  # type: ignore[no-any-return]


def only_key_files(directory: str, names: list[str]) -> list[str]:
    """The account's keys are what hosts share, not one host's agent directories."""
    return [name for name in names if (Path(directory) / name).is_dir()]


@dataclass
class HostDir:
    host_id: str
    path: Path
    project: str
    api_url: str
    key: str
    cloud: Cloud | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            BIGEYE_API_KEY=self.key,
            BIGEYE_URL=self.api_url,
            BIGEYE_COMPOSE_PROJECT=self.project,
        )
        env.update(self.extra_env)
        env.update(extra)
        return env

    def agent_cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run([str(BIN / "bigeye-agent"), *args], cwd=self.path, env=self.env(**env))

    def register(self, *agents: str, **env: str) -> subprocess.CompletedProcess[str]:
        argv = ["register", "--host-id", self.host_id]
        for agent in agents:
            argv += ["--agent", agent]
        done = self.agent_cli(*argv, **env)
        if done.returncode == 0 and self.cloud is not None and self.cloud.agent_config is None:
            # kept with the cloud: this host's directory goes away with its test
            keys = self.cloud.state_dir / "account-agent-config"
            shutil.copytree(self.path / "agent_config", keys, ignore=only_key_files)
            self.cloud.agent_config = keys
        return done

    def compose(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(
            [
                "docker",
                "compose",
                "-f",
                str(self.path / "docker-compose.bigeye.yml"),
                "-p",
                self.project,
                *args,
            ]
        )

    def container_id(self, service: str) -> str:
        done = self.compose("ps", "-q", service)
        return done.stdout.strip()

    def healthy(self) -> bool:
        ids = [self.container_id(s) for s in ("bigeye-agent-orchestrator", "docker-socket-proxy")]
        if not all(ids):
            return False
        states = run(["docker", "inspect", "-f", "{{.State.Health.Status}}", *ids]).stdout.split()
        return states == ["healthy", "healthy"]

    def job_containers(self) -> list[str]:
        done = run([
            "docker", "ps", "-aq", "--filter", "label=com.bigeye.orchestrator.managed=true",
            "--filter", f"label=com.bigeye.orchestrator.host-id={self.host_id}",
        ])  # fmt: skip
        return done.stdout.split()


@pytest.fixture
def make_host_dir(cloud: Cloud, tmp_path: Path) -> Iterator[Any]:
    made: list[HostDir] = []
    keys: dict[int, str] = {}

    def factory(
        host_id: str | None = None,
        *,
        cloud: Cloud = cloud,
        owner: int = OPERATOR_UID,
        first_host_keys: bool = False,
    ) -> HostDir:
        host_id = host_id if host_id is not None else f"e2e-{uuid.uuid4().hex[:8]}"
        path = tmp_path / f"host-{len(made)}"
        path.mkdir()
        if first_host_keys and cloud.agent_config is not None:
            shutil.copytree(cloud.agent_config, path / "agent_config")
        run(["chown", "-R", f"{owner}:{owner}", str(path)])
        if id(cloud) not in keys:
            keys[id(cloud)] = cloud.key("admin")
        host = HostDir(
            host_id,
            path,
            f"bigeye-{uuid.uuid4().hex[:8]}",
            cloud.endpoints["api_url"],
            keys[id(cloud)],
            cloud,
        )
        made.append(host)
        return host

    yield factory
    for host in made:
        label = f"label=com.bigeye.orchestrator.compose-project={host.project}"
        drainers = run(["docker", "ps", "-aq", "--filter", label])
        if drainers.stdout.split():
            run(["docker", "rm", "-f", *drainers.stdout.split()])
        if (host.path / "docker-compose.bigeye.yml").exists():
            host.compose("down", "--remove-orphans", "-t", "5")
        leftovers = host.job_containers()
        if leftovers:
            run(["docker", "rm", "-f", *leftovers])
        shutil.rmtree(host.path, ignore_errors=True)
