"""What the bench runs against: its own Temporal dev server and an orchestrator process on this
host (the Docker socket directly), started and stopped by the bench."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from devcloud.temporal_server import DevServerConfig, find_temporal_binary, pick_port

BIN = Path(sys.executable).parent
DEMO_IMAGE = "bigeye-demo-agent:dev"
T = TypeVar("T")


def wait_for(check: Callable[[], T | None], within: float, what: str) -> T:
    deadline = time.monotonic() + within
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: gave up waiting for {what} after {within:.0f} s")
        time.sleep(0.02)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class DevServer:
    """devcloud's dev server command; its state in memory (the dev server's default), or with
    `on_disk` in a database file in the bench's work directory, as devcloud keeps it."""

    def __init__(self, work: Path, on_disk: bool = False) -> None:
        self.port = pick_port()
        config = DevServerConfig(
            binary=find_temporal_binary(),
            db_file=work / f"temporal-{self.port}.db",
            port=self.port,
            ui_port=pick_port(exclude=frozenset({self.port})),
        )
        self.address = config.address
        argv = config.command()
        if on_disk:
            work.mkdir(parents=True, exist_ok=True)
        else:
            at = argv.index("--db-filename")
            del argv[at : at + 2]
        self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self._proc.pid
        wait_for(lambda: port_open(self.port), 60, "the Temporal dev server")

    def stop(self) -> None:
        self._proc.send_signal(signal.SIGTERM)
        self._proc.wait(30)


def proc_ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def proc_cpu_seconds(pid: int) -> float:
    return proc_ticks(pid) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory in MiB (VmRSS), as the tables print it in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Orchestrator:
    """`bigeye-orchestrator run` with its own host id and bigeye_agent.yml; its JSON log goes to
    a file the bench reads (it is what an operator's log collector reads)."""

    def __init__(self, work: Path, address: str, env: dict[str, str], slots: int) -> None:
        self.host_id = f"bench-{uuid.uuid4().hex[:6]}"
        self.dir = work / self.host_id
        (self.dir / "agent_config" / "datahealth").mkdir(parents=True)
        self.config = self.dir / "bigeye_agent.yml"
        self.write_agent(env)
        yaml_config = yaml.safe_load(self.config.read_text())
        yaml_config["orchestrator"] = {"host_id": self.host_id, "temporal": {"address": address}}
        self.config.write_text(yaml.safe_dump(yaml_config))
        self.log_path = self.dir / "orchestrator.log"
        self._log = self.log_path.open("wb")
        self.task_queue = f"agent-orchestrator.{self.host_id}"
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [str(BIN / "bigeye-orchestrator"), "run"],
            env={
                **os.environ,
                "BIGEYE_AGENT_CONFIG": str(self.config),
                "BIGEYE_HEALTH_ADDR": "127.0.0.1:0",  # any free port: nothing reads it
                "BIGEYE_LOG_FORMAT": "json",
                "BIGEYE_MAX_CONCURRENT_JOBS": str(slots),
            },
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.polling_after = wait_for(self._polling, 60, "the orchestrator to poll")

    def write_agent(self, env: dict[str, str]) -> None:
        agents = {"datahealth": {"image": DEMO_IMAGE, "env": env, "max_concurrent": 64}}
        existing = yaml.safe_load(self.config.read_text()) if self.config.exists() else {}
        existing["agents"] = agents
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(existing))
        tmp.replace(self.config)

    def events(self) -> list[dict[str, Any]]:
        found = []
        with self.log_path.open("rb") as f:
            for line in f:
                if b'"stream"' in line and b'"agent"' in line:
                    continue  # a job's own output
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    def _polling(self) -> float | None:
        with self.log_path.open("rb") as f:
            for line in f:
                if b'"event": "polling"' in line:
                    return time.monotonic() - self.started
        return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        self._log.close()
