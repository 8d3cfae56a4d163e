"""Records `AgentJobRun` histories for tests/unit/test_workflow_replay.py, from real runs.

Starts its own Temporal dev server and two orchestrators of this checkout (Docker and the
demo image are needed: `make setup`), runs one job for every way a run can end, and writes
each history as JSON. Re-record only when a release may break replay on purpose (0.x, before
the first release); otherwise new histories are added beside the old ones.

    .venv/bin/python scripts/record_histories.py tests/unit/agent_job_histories .release_queues

(the second argument names the new files: `succeeded.release_queues.json`, …).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle

from orchestrator.ports import free_port

BIN = Path(sys.executable).parent
DEMO = "bigeye-demo-agent:dev"


def host_dir(root: Path, host_id: str, agents: dict[str, Any]) -> Path:
    directory = root / host_id
    for agent in agents:
        (directory / "agent_config" / agent).mkdir(parents=True)
    config = {"orchestrator": {"host_id": host_id}, "agents": agents}
    (directory / "bigeye_agent.yml").write_text(yaml.safe_dump(config))
    return directory


def orchestrator(directory: Path, address: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, BIGEYE_AGENT_CONFIG=str(directory / "bigeye_agent.yml"),
               BIGEYE_TEMPORAL_ADDRESS=address, BIGEYE_HEALTH_ADDR="127.0.0.1:0",
               BIGEYE_LOG_FORMAT="json")  # fmt: skip
    log = open(directory / "orchestrator.log", "wb")
    return subprocess.Popen([str(BIN / "bigeye-orchestrator"), "run"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)  # fmt: skip


class Recorder:
    def __init__(self, client: Client, out: Path, logs: Path, suffix: str) -> None:
        self.client = client
        self.out = out
        self.suffix = suffix  # names the release's histories, beside the older ones
        self.logs = logs  # the orchestrator log of host replay-a

    async def start(self, host: str, agent: str, params: dict[str, Any], **extra: Any) -> Any:
        request = {"job_id": uuid.uuid4().hex[:8], "run_id": "r-" + uuid.uuid4().hex[:8],
                   "agent": agent, "parameters": params, **extra}  # fmt: skip
        return await self.client.start_workflow(
            "AgentJobRun", request, id=f"agent-job-{request['job_id']}",
            task_queue=f"agent-orchestrator.{host}", execution_timeout=timedelta(minutes=5),
        )  # fmt: skip

    async def save(self, name: str, handle: WorkflowHandle[Any, Any]) -> None:
        """The run as `<name><suffix>.json`; when it handed its work to a child on its release's
        queue (release queues), the child too, as `<name><suffix>.child.json`."""
        with contextlib.suppress(WorkflowFailureError):
            result = await handle.result()
            print(f"{name}: {result['status']} {result.get('reason') or ''}")
        run = await handle.fetch_history()
        (self.out / f"{name}{self.suffix}.json").write_text(run.to_json())
        for event in run.events:
            started = event.start_child_workflow_execution_initiated_event_attributes
            if started.workflow_id:
                child = self.client.get_workflow_handle(started.workflow_id)
                history = (await child.fetch_history()).to_json()
                (self.out / f"{name}{self.suffix}.child.json").write_text(history)

    async def waiting_for_slot(self, handle: WorkflowHandle[Any, Any]) -> None:
        """Its launch found no slot (a run is also `queued` at its very start)."""
        started = (await handle.fetch_history()).events[0]
        request = started.workflow_execution_started_event_attributes.input.payloads[0].data
        run = json.loads(request)["run_id"]
        deadline = time.monotonic() + 60
        while f'"run_id": "{run}"' not in self._slot_lines():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{handle.id} never waited for a slot")
            await asyncio.sleep(0.2)

    def _slot_lines(self) -> str:
        text = self.logs.read_text() if self.logs.exists() else ""
        return "\n".join(line for line in text.splitlines() if "waiting for a job slot" in line)

    @staticmethod
    async def phase(handle: WorkflowHandle[Any, Any], wanted: str) -> None:
        deadline = time.monotonic() + 60
        while (await handle.query("status"))["phase"] != wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{handle.id} never reached {wanted}")
            await asyncio.sleep(0.2)


async def record(
    address: str, out: Path, logs: Path, suffix: str, start_late_host: Callable[[], None]
) -> None:
    client = await Client.connect(address)
    rec = Recorder(client, out, logs, suffix)
    dh = {"file_name": "a.yml"}
    lp = {"connectors": ["snowflake"]}
    await rec.save("succeeded", await rec.start("replay-a", "datahealth", dh))
    await rec.save("invalid", await rec.start("replay-a", "datahealth", {"file_name": "../x"}))
    await rec.save("not_installed", await rec.start("replay-a", "external_monitors",
                                                    {"connector": "x"}))  # fmt: skip
    await rec.save("failed", await rec.start("replay-b", "datahealth", dh))
    await rec.save("pull_failed", await rec.start("replay-b", "external_monitors",
                                                  {"connector": "x"}))  # fmt: skip
    # one slow lineage run at a time: the next ones queue, one is canceled while it waits, one
    # is offered the slot when the first is canceled and then runs out of time
    first = await rec.start("replay-a", "lineage_plus", lp)
    await rec.phase(first, "running")
    waiting = await rec.start("replay-a", "lineage_plus", lp)
    await rec.waiting_for_slot(waiting)
    await waiting.cancel()
    await rec.save("canceled_while_queued", waiting)
    after = await rec.start("replay-a", "lineage_plus", lp, timeout_seconds=2)
    await rec.waiting_for_slot(after)
    await first.cancel()
    await rec.save("canceled", first)
    await rec.save("timed_out_after_queue", after)
    starting = await rec.start("replay-a", "datahealth", dh)
    await starting.cancel()
    await rec.save("canceled_at_once", starting)
    # the cancel is in the history before any worker takes the run's first task
    arriving = await rec.start("replay-c", "datahealth", dh)
    await arriving.cancel()
    start_late_host()
    await rec.save("canceled_on_arrival", arriving)


def main(out: str, suffix: str) -> None:
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        port = free_port()
        server = subprocess.Popen(
            [str(BIN / "temporal"), "server", "start-dev", "--ip", "127.0.0.1", "--port",
             str(port), "--ui-port", str(free_port()), "--headless", "--log-level", "warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        address = f"127.0.0.1:{port}"
        fast = {"DEMO_SLEEP_SECONDS": "0.5", "DEMO_LOG_LINES": "3"}
        a = host_dir(root, "replay-a", {
            "datahealth": {"image": DEMO, "memory": "64m", "env": fast},
            "lineage_plus": {"image": DEMO, "memory": "64m", "stop_grace_seconds": 1,
                             "env": {"DEMO_SLEEP_SECONDS": "60"}},
        })  # fmt: skip
        b = host_dir(root, "replay-b", {
            "datahealth": {"image": DEMO, "memory": "64m", "env": {**fast, "DEMO_EXIT_CODE": "3"}},
            "external_monitors": {"image": "127.0.0.1:9/bigeye/missing:1"},
        })  # fmt: skip
        c = host_dir(
            root, "replay-c", {"datahealth": {"image": DEMO, "memory": "64m", "env": fast}}
        )
        procs = []
        try:
            time.sleep(3)  # the dev server's start-up; the orchestrators retry anyway
            procs = [orchestrator(a, address), orchestrator(b, address)]
            late = lambda: procs.append(orchestrator(c, address))  # noqa: E731
            asyncio.run(record(address, target, a / "orchestrator.log", suffix, late))
        finally:
            for proc in [*procs, server]:
                proc.terminate()
                proc.wait(30)


if __name__ == "__main__":
    main(
        sys.argv[1] if len(sys.argv) > 1 else "tests/unit/agent_job_histories",
        sys.argv[2] if len(sys.argv) > 2 else "",
    )
