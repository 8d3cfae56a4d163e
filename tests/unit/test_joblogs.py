"""activities/joblogs.py: the follow stream's jump over a rotated file is caught, not forwarded.

The engine is faked here by what it sends: a followed read that skips a file (as Docker 20.10's
json-file reader does when it falls a whole file behind), reads from `since` that cover every
file still held, and probes of the log's last entries.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from activities import containers
from activities.joblogs import PROBE_ENTRIES, OutputForwarder
from activities.logstream import Entry, LineReader, timestamp_ns


def stamp(ns: int) -> str:
    seconds, nanos = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def numbered(first: int, count: int, written_ns: int) -> list[Entry]:
    """Lines `first`… written one millisecond apart from `written_ns` on."""
    return [
        Entry("stdout", stamp(written_ns + n * 1_000_000), f"line {first + n}\n".encode())
        for n in range(count)
    ]


class Engine:
    """What the engine sends: the held log for a read from `since`, a scripted first follow."""

    def __init__(self, held: list[Entry], first_follow: list[Entry]) -> None:
        self.held = held
        self.first_follow: list[Entry] | None = first_follow
        self.reads: list[str] = []

    async def log_entries(
        self,
        docker: Any,
        container_id: str,
        *,
        since: str | None = None,
        follow: bool,
        tail: int | None = None,
        timestamps: bool = True,
    ) -> AsyncIterator[Entry]:
        floor = -1 if since is None else int(since.replace(".", ""))
        later = [e for e in self.held if timestamp_ns(e.timestamp or "") >= floor]
        if tail is not None:
            self.reads.append("probe")
            sent = [e for e in self.held[-tail:] if e in later]
        elif follow and self.first_follow is not None:
            self.reads.append("follow")
            sent, self.first_follow = self.first_follow, None
        else:
            self.reads.append("since")
            sent = later
        for entry in sent:
            yield entry


class Log:
    def __init__(self) -> None:
        self.numbers: list[int] = []
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self._log("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log("warning", event, fields)

    def _log(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if fields.get("stream") == "agent":
            self.agent_line(event)
        else:
            self.events.append((level, event, fields))

    def agent_line(self, event: str) -> None:
        """A job's own line: its number is what the tests look at."""
        self.numbers.append(int(event.split()[1]))


async def forward(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> tuple[Log, LineReader]:
    monkeypatch.setattr(containers, "log_entries", engine.log_entries)
    log, reader = Log(), LineReader()
    forwarder = OutputForwarder(None, "c0ffee", reader, log)  # type: ignore[arg-type]
    await forwarder.drain()
    return log, reader


FILE = 2 * PROBE_ENTRIES  # lines in one rotated file: more than a probe reads


async def test_a_skipped_rotated_file_is_read_again_from_the_cursor(monkeypatch):
    now = time.time_ns()
    files = [
        numbered(1, FILE, now - 20_000_000_000),  # read 20 s after it was written
        numbered(FILE + 1, FILE, now - 10_000_000_000),  # skipped by the follow reader
        numbered(2 * FILE + 1, FILE, now - 1_000_000),
    ]
    engine = Engine(files[0] + files[1] + files[2], files[0] + files[2])
    log, reader = await forward(engine, monkeypatch)
    assert log.numbers == list(range(1, 3 * FILE + 1))
    assert engine.reads == ["follow", "probe", "since"]
    (reread,) = [e for e in log.events if e[1] == "job output read again"]
    assert reread[2] == {"after": files[0][-1].timestamp, "next": files[2][0].timestamp}
    assert reader.gaps == 0


async def test_a_job_that_paused_while_the_reader_was_behind_is_not_read_again(monkeypatch):
    now = time.time_ns()
    before, after = numbered(1, 5, now - 10_000_000_000), numbered(6, 5, now - 1_000_000)
    engine = Engine(before + after, before + after)
    log, _ = await forward(engine, monkeypatch)
    assert log.numbers == list(range(1, 11))
    assert engine.reads == ["follow", "probe"]  # a few entries since: no room for a file
    assert [e for e in log.events if e[1] == "job output read again"] == []


async def test_a_skipped_end_of_a_file_is_read_again_though_a_probe_holds_the_rest(monkeypatch):
    # The follow reader skipped lines 6-8, the unread end of a file, not a whole file: the
    # probe reads every entry from line 5 on, and line 9 does not follow line 5 there.
    now = time.time_ns()
    before, after = numbered(1, 8, now - 10_000_000_000), numbered(9, 4, now - 1_000_000)
    engine = Engine(before + after, before[:5] + after)
    log, reader = await forward(engine, monkeypatch)
    assert log.numbers == list(range(1, 13))
    assert engine.reads == ["follow", "probe", "since"]
    (reread,) = [e for e in log.events if e[1] == "job output read again"]
    assert reread[2] == {"after": before[4].timestamp, "next": after[0].timestamp}
    assert reader.gaps == 0


async def test_output_rotated_away_before_it_was_read_is_reported_lost(monkeypatch):
    now = time.time_ns()
    files = [
        numbered(1, FILE, now - 30_000_000_000),
        numbered(FILE + 1, FILE, now - 20_000_000_000),  # gone before it could be read
        numbered(2 * FILE + 1, FILE, now - 1_000_000),
    ]
    engine = Engine(files[2], files[0] + files[2])
    log, reader = await forward(engine, monkeypatch)
    assert log.numbers == list(range(1, FILE + 1)) + list(range(2 * FILE + 1, 3 * FILE + 1))
    (lost,) = [e for e in log.events if e[1] == "job output lost"]
    assert lost[0] == "warning"
    assert lost[2]["lost_after"] == files[0][-1].timestamp
    assert lost[2]["lost_before"] == files[2][0].timestamp
    assert lost[2]["lines_lost"] == "unknown"
    assert reader.gaps == 1
