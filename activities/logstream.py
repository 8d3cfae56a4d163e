"""Docker's multiplexed log stream, read as bytes and cut into lines.

aiodocker yields frames, not lines, and decodes them itself; a frame can hold part of a line or
several lines. We parse the 8-byte frame headers ourselves, keep one buffer per stream, replace
invalid UTF-8 instead of dropping it, and bound the size of a line that never ends.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from orchestrator.contract import LOG_LINE_MAX_BYTES, LOG_TAIL_LINES

MAX_LINE_BYTES = 64 * 1024
_HEADER = struct.Struct(">BxxxL")
_STREAMS = {0: "stdin", 1: "stdout", 2: "stderr"}


@dataclass(frozen=True)
class LogLine:
    stream: str
    text: str
    timestamp: str | None  # RFC 3339 with nanoseconds, as Docker wrote it


async def frames(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[str, bytes]]:
    """(stream name, payload) for every frame of a non-TTY multiplexed stream."""
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        while len(buffer) >= _HEADER.size:
            kind, size = _HEADER.unpack_from(buffer)
            if len(buffer) < _HEADER.size + size:
                break
            payload = bytes(buffer[_HEADER.size : _HEADER.size + size])
            del buffer[: _HEADER.size + size]
            yield _STREAMS.get(kind, "stdout"), payload


def utf8_boundary(data: bytes | bytearray, limit: int) -> int:
    """The largest cut at or below `limit` that does not split a UTF-8 character."""
    cut = limit
    while cut > 0 and cut > limit - 4 and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut if cut > limit - 4 else limit


def split_timestamp(payload: bytes) -> tuple[str | None, bytes]:
    """Docker prefixes each log entry with its timestamp and a space when asked."""
    head, sep, rest = payload.partition(b" ")
    if sep and head[:2].isdigit() and b"T" in head:
        return head.decode("ascii", "replace"), rest
    return None, payload


@dataclass
class LineAssembler:
    """Turns timestamped entries into whole lines, one buffer per stream."""

    pending: dict[str, bytearray] = field(default_factory=dict)
    pending_ts: dict[str, str | None] = field(default_factory=dict)

    def feed(self, stream: str, timestamp: str | None, data: bytes) -> list[LogLine]:
        buf = self.pending.setdefault(stream, bytearray())
        if not buf:
            self.pending_ts[stream] = timestamp
        buf += data
        lines: list[LogLine] = []
        while True:
            cut = buf.find(b"\n")
            if cut < 0 or cut > MAX_LINE_BYTES:
                if len(buf) > MAX_LINE_BYTES:
                    cut = utf8_boundary(buf, MAX_LINE_BYTES)
                    lines.append(self._line(stream, bytes(buf[:cut])))
                    del buf[:cut]
                    self.pending_ts[stream] = timestamp
                    continue
                break
            lines.append(self._line(stream, bytes(buf[:cut])))
            del buf[: cut + 1]
            self.pending_ts[stream] = timestamp
        return lines

    def flush(self) -> list[LogLine]:
        lines = [self._line(s, bytes(b)) for s, b in self.pending.items() if b]
        self.pending.clear()
        return lines

    def _line(self, stream: str, raw: bytes) -> LogLine:
        text = raw.rstrip(b"\r").decode("utf-8", "replace")
        return LogLine(stream=stream, text=text, timestamp=self.pending_ts.get(stream))


def truncate_utf8(text: str, limit: int = LOG_LINE_MAX_BYTES) -> str:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")


def tail_of(lines: Iterable[str], count: int = LOG_TAIL_LINES) -> list[str]:
    return [truncate_utf8(line) for line in deque(lines, maxlen=count)]


def docker_since(timestamp: str) -> str:
    """Docker's `since` parameter (seconds[.nanoseconds]) for an RFC 3339 timestamp."""
    whole, _, fraction = timestamp.rstrip("Z").partition(".")
    fraction = "".join(ch for ch in fraction if ch.isdigit())
    moment = datetime.fromisoformat(whole + "+00:00")
    return f"{int(moment.timestamp())}.{fraction.ljust(9, '0')[:9]}"


def timestamp_ns(timestamp: str) -> int:
    """Nanoseconds since the epoch, for ordering Docker's trimmed RFC 3339 timestamps."""
    seconds, _, nanos = docker_since(timestamp).partition(".")
    return int(seconds) * 1_000_000_000 + int(nanos)
