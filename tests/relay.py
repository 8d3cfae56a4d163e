"""A byte relay a test owns, in front of the Docker socket: to cut streams, or be away.

The orchestrator under test talks to `unix://<relay path>`; the relay forwards every
connection to the real engine. `cut()` closes every connection in flight (a log or wait stream
ends mid-job, as when a proxy restarts); `stop()` stops listening too (the engine is away);
`start()` listens again. It runs on its own event loop in a thread, so synchronous and async
tests use it alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

ENGINE_SOCKET = "/var/run/docker.sock"


class SocketRelay:
    def __init__(self, path: Path, upstream: str = ENGINE_SOCKET) -> None:
        self.path = path
        self.upstream = upstream
        self.connections = 0  # accepted so far
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def start(self) -> None:
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def cut(self) -> int:
        """Close every connection in flight; returns how many were cut."""
        return asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await self._cut()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _cut(self) -> int:
        writers, self._writers = list(self._writers), set()
        for writer in writers:
            writer.transport.abort()
        return len(writers) // 2

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        self._writers -= {writer, up_writer}

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while chunk := await source.read(65536):
                sink.write(chunk)
                await sink.drain()
        finally:
            sink.close()  # flushes what was written, then closes: one side ended, so does the other
