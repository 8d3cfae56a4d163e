"""A job's own output, forwarded line by line into the daemon's log (`stream=agent`).

Resumable: the `LineReader`'s cursor rides in the watch heartbeat, so a dropped stream or a
new attempt forwards every line exactly once. A line above the cap is forwarded truncated
with `cut_bytes`; the totals are logged when the job ends.
"""

from __future__ import annotations

from typing import Any

import aiodocker

from activities import containers
from activities.logstream import LineReader, LogLine
from orchestrator import metrics


class OutputForwarder:
    def __init__(
        self, docker: aiodocker.Docker, container_id: str, reader: LineReader, jlog: Any
    ) -> None:
        self.docker = docker
        self.container_id = container_id
        self.reader = reader
        self.jlog = jlog

    async def follow(self, *, follow: bool = True) -> None:
        """Forward from the cursor until the engine ends the stream (the job exited, or a cut)."""
        since = self.reader.resume()
        async for entry in containers.log_entries(
            self.docker, self.container_id, since=since, follow=follow
        ):
            for line in self.reader.feed(entry):
                self._emit(line)

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
        )

    def _emit(self, line: LogLine) -> None:
        metrics.LOG_LINES.inc()
        if line.cut_bytes:
            metrics.LOG_LINES_CUT.inc()
            metrics.LOG_BYTES_CUT.inc(line.cut_bytes)
            self.jlog.info(line.text, stream="agent", fd=line.stream, cut_bytes=line.cut_bytes)
        else:
            self.jlog.info(line.text, stream="agent", fd=line.stream)
