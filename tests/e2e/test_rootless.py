"""The stack on a rootless Docker engine: the socket is the rootless engine's, mounted into the
proxy alone; nothing runs as root on the host; a job runs there and not on the system engine.

The test starts its own rootless engine as the user `scripts/setup.sh` prepares
(`bigeye-rootless`), on its own socket. Where the machine cannot run one (not root, no user
namespaces, no rootlesskit) it says why and is skipped.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bigeye_agent.compose_file import CHANNEL
from tests.e2e.conftest import DEMO_IMAGE, IMAGES, Cloud, HostDir, run
from tests.e2e.test_migrate import cloud_host, job_succeeds
from tests.e2e.test_register import host_health
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e
USER = "bigeye-rootless"
SCRIPT_PLACES = ("/usr/share/docker.io/contrib", "/usr/bin", "/usr/local/bin")


@dataclass
class RootlessEngine:
    uid: int
    socket: Path

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def docker(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(["docker", "-H", self.url, *args])


def why_not(script: Path | None) -> str | None:
    if os.geteuid() != 0:
        return "starting a rootless engine for another user needs root"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return f"there is no user {USER} (scripts/setup.sh creates it, as root on Debian)"
    if script is None or shutil.which("rootlesskit") is None:
        return "dockerd-rootless.sh or rootlesskit is missing (scripts/setup.sh installs them)"
    probe = run(["runuser", "-u", USER, "--", "unshare", "--user", "--map-root-user", "true"])
    if probe.returncode != 0:
        return f"this machine does not let {USER} create a user namespace ({probe.stderr.strip()})"
    return None


@pytest.fixture(scope="module")
def rootless_engine(cloud: Cloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    script = next(
        (Path(p) / "dockerd-rootless.sh" for p in SCRIPT_PLACES
         if (Path(p) / "dockerd-rootless.sh").is_file()),
        None,
    )  # fmt: skip
    reason = why_not(script)
    if reason:
        pytest.skip(f"cannot run a rootless Docker engine here: {reason}")
    assert script is not None
    uid = pwd.getpwnam(USER).pw_uid
    runtime = Path(f"/run/user/{uid}")
    runtime.mkdir(parents=True, exist_ok=True)
    os.chown(runtime, uid, uid)
    runtime.chmod(0o700)
    # containers reach the cloud's mTLS front where the system engine's containers do
    gateway = next(a.rsplit(":", 1)[0] for a in cloud.endpoints["temporal_front_addresses"]
                   if not a.startswith("127."))  # fmt: skip
    log_path = tmp_path_factory.mktemp("rootless") / "dockerd-rootless.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["runuser", "-u", USER, "--", "env", "-i", f"XDG_RUNTIME_DIR={runtime}",
             f"HOME={pwd.getpwnam(USER).pw_dir}",
             f"PATH={script.parent}:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             # its networks keep clear of the system engine's, where the cloud's front is
             str(script), "--bip", "10.99.0.1/24", "--default-address-pool",
             "base=10.98.0.0/16,size=24", f"--host-gateway-ip={gateway}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    engine = RootlessEngine(uid, runtime / "docker.sock")
    try:

        def answers() -> bool:
            assert proc.poll() is None, log_path.read_text()[-1500:]
            return engine.docker("info").returncode == 0

        wait_for(answers, 90, "the rootless engine")
        for image in IMAGES:
            tags = [image, image.replace(":dev", f":{CHANNEL}")]  # the stack's images
            save = subprocess.Popen(["docker", "save", *tags], stdout=subprocess.PIPE)
            load = subprocess.run(["docker", "-H", engine.url, "load", "-q"], stdin=save.stdout,
                                  capture_output=True, text=True)  # fmt: skip
            save.wait()
            assert load.returncode == 0, load.stderr
        yield engine
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_the_stack_runs_on_a_rootless_engine(cloud: Cloud, rootless_engine: Any) -> None:
    engine: RootlessEngine = rootless_engine
    # a host directory the engine's user can reach and owns, as on a rootless host
    path = Path(tempfile.mkdtemp(prefix="bigeye-rootless-host-", dir="/tmp"))
    path.chmod(0o755)
    if cloud.agent_config is not None:  # the account has hosts: this one uses their keys
        shutil.copytree(cloud.agent_config, path / "agent_config")
    run(["chown", "-R", f"{engine.uid}:{engine.uid}", str(path)])
    host = HostDir(
        f"e2e-rootless-{uuid.uuid4().hex[:6]}", path, f"bigeye-{uuid.uuid4().hex[:8]}",
        cloud.endpoints["api_url"], cloud.key("admin"), cloud,
        extra_env={"DOCKER_HOST": engine.url},
    )  # fmt: skip
    since = time.time()
    stack = ["docker", "compose", "-f", str(path / "docker-compose.bigeye.yml"), "-p", host.project]
    try:
        done = host.register(f"datahealth={DEMO_IMAGE}")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"the engine's socket is {engine.socket}" in done.stdout
        assert "uid 0 of the rootless engine's user namespace" in done.stdout
        services = yaml.safe_load((path / "docker-compose.bigeye.yml").read_text())["services"]
        assert services["docker-socket-proxy"]["volumes"] == [
            f"{engine.socket}:/var/run/docker.sock:ro",
            f"{path}:/etc/bigeye:ro",  # the agent set, read-only
        ]
        assert "docker.sock" not in str(services["bigeye-agent-orchestrator"].get("volumes"))

        def healthy() -> bool:
            ids = run([*stack, "ps", "-q"], env=host.env()).stdout.split()
            states = engine.docker("inspect", "-f", "{{.State.Health.Status}}", *ids).stdout
            return len(ids) == 2 and states.split() == ["healthy", "healthy"]

        try:
            wait_for(healthy, 180, "the stack on the rootless engine")
        except AssertionError:
            shown = run([*stack, "ps", "-a"], env=host.env()).stdout
            logs = run([*stack, "logs", "--tail", "15"], env=host.env())
            raise AssertionError(f"{shown}\n{logs.stdout[-3000:]}\n{logs.stderr[-500:]}") from None
        wait_for(lambda: host_health(cloud, host.host_id) == "healthy", 90, "a heartbeat")
        assert cloud_host(cloud, host.host_id)["managed_agents"] == ["datahealth"]
        result = job_succeeds(cloud, host, "datahealth", "file_name=a.yml")["result"]
        assert result["image"] == DEMO_IMAGE and result["exit_code"] == 0
        # it ran on the rootless engine, not on the system one
        created = run(["docker", "events", "--since", f"{since:.3f}", "--until",
                       f"{time.time():.3f}", "--filter", "event=create", "--filter",
                       f"label=com.bigeye.orchestrator.host-id={host.host_id}"])  # fmt: skip
        assert created.stdout.strip() == ""
        # and nothing of the stack runs as root on the host
        for service in ("bigeye-agent-orchestrator", "docker-socket-proxy"):
            (container,) = run([*stack, "ps", "-q", service], env=host.env()).stdout.split()
            pid = engine.docker("inspect", "-f", "{{.State.Pid}}", container).stdout.strip()
            owner = Path(f"/proc/{pid}").stat().st_uid
            assert owner == engine.uid, f"{service} runs as host uid {owner}"
    finally:
        run([*stack, "down", "-t", "5"], env=host.env())
        shutil.rmtree(path, ignore_errors=True)
