"""A job's own output, forwarded line by line into the daemon's log (`stream=agent`).

Resumable: the `LineReader`'s cursor rides in the watch heartbeat, so a dropped stream or a
new attempt forwards every line exactly once. A line above the cap is forwarded truncated
with `cut_bytes`; the totals are logged when the job ends.

The engine's follow stream can jump over a rotated log file when it falls behind the job
(logstream's docstring has the details). Where it may have jumped, a probe of the log's last
entries settles it; when the probe cannot rule a jump out, the stream is read again from the
cursor, and that read covers every file the engine still holds. Output the engine rotated
away before anyone read it is reported as lost, in one line, never skipped silently.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from typing import Any

import aiodocker

from activities import containers
from activities.agents import LOG_MAX_SIZE
from activities.docker_api import is_unreachable
from activities.logstream import (
    Entry,
    JumpWatch,
    LineReader,
    LogLine,
    docker_since,
    log_file_bytes,
    probe_entries,
)
from orchestrator import metrics

PROBE_ENTRIES = probe_entries(log_file_bytes(LOG_MAX_SIZE))


class OutputForwarder:
    def __init__(
        self,
        docker: aiodocker.Docker,
        container_id: str,
        reader: LineReader,
        jlog: Any,
        out: Any = None,
    ) -> None:
        self.docker = docker
        self.container_id = container_id
        self.reader = reader
        self.jlog = jlog
        self.out = jlog if out is None else out  # where the job's own lines go
        self.watch = JumpWatch()
        self.jumped = False  # the last read was given up where the stream may have jumped

    async def follow(self, *, follow: bool = True) -> None:
        """Forward from the cursor until the engine ends the stream (the job exited, or a cut)."""
        while not await self._read(follow=follow):
            metrics.LOG_REREADS.inc()

    async def drain(self) -> None:
        """Everything the container printed, up to its exit (it has exited or is stopping)."""
        await self.follow(follow=True)
        for line in self.reader.finish():
            self._emit(line)

    def summary(self) -> None:
        reader = self.reader
        self.jlog.info(
            "job output forwarded",
            lines=reader.lines,
            bytes=reader.bytes,
            lines_cut=reader.lines_cut,
            bytes_cut=reader.bytes_cut,
            gaps=reader.gaps,
        )

    async def _read(self, *, follow: bool) -> bool:
        """One read from the cursor; False when it was given up because it may have jumped."""
        reader, watch = self.reader, self.watch
        since = reader.resume()
        watch.new_read(time.time_ns())
        first = since is not None
        stream = containers.log_entries(self.docker, self.container_id, since=since, follow=follow)
        previous: Entry | None = None
        async with contextlib.aclosing(stream):
            async for entry in stream:
                stamp = entry.timestamp
                if stamp is not None:
                    if first:
                        first = False
                        horizon = reader.lost_before(stamp, after_jump=self.jumped)
                        if horizon is not None:
                            self._lost(horizon, stamp)
                    before = watch.step(stamp, time.time_ns()) if follow else None
                    if (
                        before is not None
                        and previous is not None
                        and not await self._contiguous(previous, entry)
                    ):
                        self.jlog.info("job output read again", after=before, next=stamp)
                        self.jumped = True
                        return False
                    self.jumped = False
                    previous = entry
                for line in reader.feed(entry):
                    self._emit(line)
        return True

    async def _contiguous(self, previous: Entry, entry: Entry) -> bool:
        """Whether `entry` follows `previous` in the log, as the stream sent them.

        The probe reads the log's last entries from `previous` on. When they are all of them
        (fewer than a probe reads), the log says exactly what follows `previous`: the engine
        may have skipped the unread end of a file, not only whole files. When they are not,
        the read from the cursor settles it.
        """
        assert previous.timestamp is not None
        held: list[Entry] = []
        probe = containers.log_entries(
            self.docker,
            self.container_id,
            since=docker_since(previous.timestamp),
            follow=False,
            tail=PROBE_ENTRIES,
        )
        try:
            async with contextlib.aclosing(probe):
                async for found in probe:
                    held.append(found)
        except Exception as exc:
            if is_unreachable(exc) or isinstance(exc, aiodocker.DockerError):
                return False  # unknown: the read from the cursor settles it
            raise
        if len(held) >= PROBE_ENTRIES:
            return False
        return any(a == previous and b == entry for a, b in itertools.pairwise(held))

    def _lost(self, after: str, before: str) -> None:
        metrics.LOG_GAPS.inc()
        self.jlog.warning(
            "job output lost",
            reason="the engine rotated its log files before they were read",
            lost_after=after,
            lost_before=before,
            lines_lost="unknown",
        )

    def _emit(self, line: LogLine) -> None:
        metrics.LOG_LINES.inc()
        if line.cut_bytes:
            metrics.LOG_LINES_CUT.inc()
            metrics.LOG_BYTES_CUT.inc(line.cut_bytes)
            self.out.info(line.text, stream="agent", fd=line.stream, cut_bytes=line.cut_bytes)
        else:
            self.out.info(line.text, stream="agent", fd=line.stream)
