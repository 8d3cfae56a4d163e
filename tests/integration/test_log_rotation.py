"""A job's output across json-file log rotations: every line forwarded once, in order.

Real engine, real container (the demo agent), the orchestrator's own log options and
forwarder, followed the way the watch activity follows it. The engine's follow reader skips a
rotated file when it is a whole file behind the job at a rotation; the tests put it there by
holding the forwarder (and with it the event loop, so nothing reads the stream) until the job
has written past the rotations they need.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiodocker
import pytest

from activities import containers
from activities.agents import LOG_MAX_FILE, LOG_MAX_SIZE
from activities.ending import has_ended
from activities.joblogs import OutputForwarder
from activities.logstream import LineReader, log_file_bytes
from tests.integration.conftest import DEMO_IMAGE
from tests.unit.test_joblogs import Log
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

LINE_BYTES = 200
# A json-file entry of a demo line is the line, its escaped newline, the keys, the stream and
# the time (20 to 30 characters): 261 to 271 bytes. A file is rotated once it holds 10 MB.
MOST_LINES_PER_FILE = log_file_bytes(LOG_MAX_SIZE) // (LINE_BYTES + 61)
FEWEST_LINES_PER_FILE = log_file_bytes(LOG_MAX_SIZE) // (LINE_BYTES + 71)
# A held reader is ahead of line 1 by what Docker, the socket and aiohttp buffer: a few MB,
# well inside the first file.
PAST_A_ROTATION = 2_000
NUMBERED = re.compile(r"line (\d+)/")


@pytest.fixture
async def docker(docker_engine: None) -> AsyncIterator[aiodocker.Docker]:
    async with aiodocker.Docker() as client:
        yield client


async def start_job(docker: aiodocker.Docker, lines: int) -> str:
    body: dict[str, Any] = {
        "Image": DEMO_IMAGE,
        "Cmd": ["datahealth", "run", "--file-name", "rotation.yml"],
        "Env": [
            f"DEMO_LOG_LINES={lines}",
            f"DEMO_LOG_LINE_BYTES={LINE_BYTES}",
            "DEMO_SLEEP_SECONDS=0",
        ],
        "HostConfig": {
            "LogConfig": {
                "Type": "json-file",
                "Config": {"max-size": LOG_MAX_SIZE, "max-file": LOG_MAX_FILE},
            }
        },
    }
    container = await docker.containers.create(body, name=f"it-rotation-{uuid.uuid4().hex[:8]}")
    await container.start()
    return container.id


def last_line_written(container_id: str) -> int:
    out = subprocess.run(
        ["docker", "logs", "--tail", "2", container_id], capture_output=True, text=True
    ).stdout
    numbers = [int(n) for n in NUMBERED.findall(out)]
    return max(numbers, default=0)


class JobLog(Log):
    """Stands in for the job's structlog logger. Line `hold_at` blocks the event loop until
    the job has written line `until`: meanwhile nothing reads the log stream."""

    def __init__(self, container_id: str, hold_at: int, until: int) -> None:
        super().__init__()
        self.container_id = container_id
        self.hold_at, self.until = hold_at, until

    def agent_line(self, event: str) -> None:
        found = NUMBERED.match(event)
        if found is None:
            return
        number = int(found.group(1))
        self.numbers.append(number)
        if number == self.hold_at:
            wait_for(
                lambda: last_line_written(self.container_id) >= self.until,
                60,
                f"the job to write line {self.until}",
                interval=0.2,
            )

    def named(self, event: str) -> list[dict[str, Any]]:
        return [fields for _, name, fields in self.events if name == event]


async def forward_until_exit(
    docker: aiodocker.Docker, container_id: str, log: JobLog
) -> LineReader:
    """As the watch activity does: follow, look again whenever the stream ends, then drain."""
    reader = LineReader()
    forwarder = OutputForwarder(docker, container_id, reader, log)
    try:
        while True:
            await forwarder.follow()
            info = await containers.inspect(docker, container_id)
            if info is None or has_ended(info):
                break
        await forwarder.drain()
        forwarder.summary()
    finally:
        await containers.remove(docker, container_id)
    return reader


async def test_a_job_writing_past_several_rotations_has_every_line_forwarded_once_in_order(
    docker: aiodocker.Docker,
) -> None:
    total = 4 * MOST_LINES_PER_FILE  # 31 MB of lines (40 MB as json-file entries)
    container_id = await start_job(docker, total)
    # Held at line 1 (the follow reader still in the first file) until the job is in its third
    # file: the reader finds the second file rotated out when it reaches the end of the first.
    # The first file is still kept for a while (until the job is in its fourth).
    until = 2 * MOST_LINES_PER_FILE + PAST_A_ROTATION
    assert until + PAST_A_ROTATION < 3 * FEWEST_LINES_PER_FILE
    log = JobLog(container_id, hold_at=1, until=until)
    reader = await forward_until_exit(docker, container_id, log)
    assert log.numbers == list(range(1, total + 1)), log.events
    assert log.named("job output lost") == []
    assert reader.gaps == 0


async def test_output_rotated_away_before_it_was_read_is_reported_in_one_line(
    docker: aiodocker.Docker,
) -> None:
    total = 5 * MOST_LINES_PER_FILE
    container_id = await start_job(docker, total)
    # Held until the job is in its fifth file: the engine keeps three, so the second file (the
    # one after the held reader's) is gone when the reader comes back.
    until = 4 * MOST_LINES_PER_FILE + PAST_A_ROTATION
    log = JobLog(container_id, hold_at=1, until=until)
    reader = await forward_until_exit(docker, container_id, log)
    numbers = log.numbers
    assert numbers == sorted(set(numbers)), ("a line forwarded twice or out of order", log.events)
    missing = sorted(set(range(1, total + 1)) - set(numbers))
    assert missing, "nothing was lost: the engine kept more than it should"
    assert missing == list(range(missing[0], missing[-1] + 1)), ("more than one gap", log.events)
    assert numbers[-1] == total
    (lost,) = log.named("job output lost")
    assert lost["lost_after"] < lost["lost_before"]
    assert lost["lines_lost"] == "unknown"
    assert reader.gaps == 1
    (summary,) = log.named("job output forwarded")
    assert summary["gaps"] == 1 and summary["lines"] == len(numbers) + 3  # argv, config, done
