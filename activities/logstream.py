"""Docker's multiplexed log stream, read as entries and cut into lines, with an exact cursor.

The engine stores a container's output as *entries*: one per line, or one per 16 KiB piece of
a longer line, every piece stamped with the time of the line's first byte. aiodocker yields
frames, not lines, and decodes them itself, so we parse the 8-byte frame headers ourselves
(one frame per entry), keep one buffer per stream, replace invalid UTF-8 instead of dropping
it, and keep at most `MAX_LINE_BYTES` of a line that never seems to end (the rest is counted).

Resuming after a dropped stream or a new activity attempt must neither repeat nor skip a line,
although many entries share a timestamp: the cursor keeps, per stream, the timestamp of the
last entry of the last line forwarded and how many entries of that stream carry it. Docker's
`since` is inclusive, so a resumed stream re-reads those entries and skips exactly them.

The json-file driver's follow reader (Docker 20.10) is not exact across a log rotation: when it
is a whole file behind the writer as a file is rotated, it reopens the log by name and skips
the rotated file in between; when it is caught up, it may send the current file again from its
start. (The end of a file was once lost unreported in a test, cause unknown.) A read without
follow (or the start of a followed one, which reads every file the engine still holds) has
neither fault. `JumpWatch` finds where a followed stream may have skipped, a probe of the
log's last entries (`probe_entries` of them) settles it when they reach back that far, and the
reader drops the entries sent twice. What the engine rotated away before anyone read it is
gone: a resumed read that starts after the cursor's horizon says so (`LineReader.lost_before`).
"""

from __future__ import annotations

import functools
import re
import struct
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel, Field

from orchestrator.contract import LOG_LINE_MAX_BYTES, LOG_TAIL_LINES

MAX_LINE_BYTES = 64 * 1024
# Docker stamps stdout and stderr in two goroutines: an entry stamped a little earlier than
# one already read may be written after it. Resuming this much earlier re-reads (and skips)
# a few entries instead of missing one.
RESUME_MARGIN_NS = 1_000_000_000
# A followed stream that skipped a rotated file shows two consecutive entries written further
# apart than they arrived: the skipped file was written in between while the reader was behind.
# Docker's json-file writer fills a 10 MB file in 70 ms at best here (about 140 MB/s); a
# threshold well below that catches every whole-file skip, and a false alarm costs one probe
# (~1 ms) when the reader is caught up. A skipped end of a file that took less than this to
# write passes unflagged, and so would a skip while the reader is caught up (no lag to drop);
# a lower threshold would flag hundreds of a fast writer's pauses per 100 MB, and a flag while
# behind costs a read from the cursor.
JUMP_NS = 20_000_000
# The most one entry takes in a json-file log: a 16 KiB piece of a line, every byte escaped
# (\u00XX is six bytes for one), plus the keys, the stream, the time and any attributes.
MAX_ENTRY_BYTES = 6 * 16 * 1024 + 4 * 1024
# The json-file driver reads max-size in decimal units (go-units' FromHumanSize: 10m is
# 10,000,000 bytes), unlike the binary sizes of memory limits.
_LOG_SIZE = re.compile(r"(\d+(?:\.\d+)?) ?([kmgtp])?i?b?", re.IGNORECASE)
_HEADER = struct.Struct(">BxxxL")
_STREAMS = {0: "stdin", 1: "stdout", 2: "stderr"}


@dataclass(frozen=True)
class Entry:
    """One log entry as the engine stored it: a whole line (ending in a newline) or a piece."""

    stream: str
    timestamp: str | None  # RFC 3339 with nanoseconds, as Docker wrote it
    data: bytes


@dataclass(frozen=True)
class LogLine:
    stream: str
    text: str
    timestamp: str | None
    cut_bytes: int = 0  # bytes of the line beyond the cap, counted and not forwarded


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


async def entries(chunks: AsyncIterator[bytes], *, timestamps: bool) -> AsyncIterator[Entry]:
    async for stream, payload in frames(chunks):
        stamp, data = split_timestamp(payload) if timestamps else (None, payload)
        yield Entry(stream, stamp, data)


def split_timestamp(payload: bytes) -> tuple[str | None, bytes]:
    """Docker prefixes each log entry with its timestamp and a space when asked."""
    head, sep, rest = payload.partition(b" ")
    if sep and head[:2].isdigit() and b"T" in head:
        return head.decode("ascii", "replace"), rest
    return None, payload


def utf8_boundary(data: bytes | bytearray, limit: int) -> int:
    """The largest cut at or below `limit` that does not split a UTF-8 character."""
    if limit >= len(data):
        return len(data)
    cut = limit
    while cut > 0 and cut > limit - 4 and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut if cut > limit - 4 else limit


def whole_characters(raw: bytes) -> int:
    """The length of `raw` without a trailing, incomplete UTF-8 sequence."""
    for back in range(1, min(4, len(raw)) + 1):
        byte = raw[-back]
        if byte & 0xC0 == 0x80:
            continue  # a continuation byte: the sequence starts further back
        need = (
            2
            if byte >> 5 == 0b110
            else 3
            if byte >> 4 == 0b1110
            else 4
            if byte >> 3 == 0b11110
            else 1
        )
        return len(raw) - back if back < need else len(raw)
    return len(raw)


def truncate_utf8(text: str, limit: int = LOG_LINE_MAX_BYTES) -> str:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")


def tail_of(lines: Iterable[str], count: int = LOG_TAIL_LINES) -> list[str]:
    return [truncate_utf8(line) for line in deque(lines, maxlen=count)]


def docker_since(timestamp: str, minus_ns: int = 0) -> str:
    """Docker's `since` parameter (seconds.nanoseconds) for an RFC 3339 timestamp."""
    total = timestamp_ns(timestamp) - minus_ns
    return f"{total // 1_000_000_000}.{total % 1_000_000_000:09d}"


def timestamp_ns(timestamp: str) -> int:
    """Nanoseconds since the epoch, for ordering Docker's RFC 3339 timestamps."""
    whole, _, fraction = timestamp.rstrip("Z").partition(".")
    digits = "".join(ch for ch in fraction if ch.isdigit())
    moment = datetime.fromisoformat(whole + "+00:00")
    return int(moment.timestamp()) * 1_000_000_000 + int(digits.ljust(9, "0")[:9])


# ---- lines ----------------------------------------------------------------------------------


@dataclass
class _Partial:
    """A line being assembled: at most `limit` bytes kept, the rest counted."""

    limit: int
    kept: bytearray = field(default_factory=bytearray)
    cut: int = 0

    def add(self, data: bytes) -> None:
        room = self.limit - len(self.kept)
        if len(data) <= room:
            self.kept += data
            return
        # keep up to the cap; the first byte past it may split a character, so re-cut below
        self.kept += data[: max(room, 0)]
        self.cut += len(data) - max(room, 0)

    def line(self, stream: str, timestamp: str | None) -> LogLine:
        raw = bytes(self.kept)
        cut = self.cut
        if cut:  # the cap may have split the last character: it goes with the cut bytes
            keep = whole_characters(raw)
            cut += len(raw) - keep
            raw = raw[:keep]
        text = raw.rstrip(b"\r").decode("utf-8", "replace")
        return LogLine(stream=stream, text=text, timestamp=timestamp, cut_bytes=cut)


class Position(BaseModel):
    timestamp: str
    count: int  # entries of the stream at `timestamp` consumed, up to and including this one


class LogCursor(BaseModel):
    """How far a container's output has been forwarded; rides in the watch heartbeat."""

    positions: dict[str, Position] = Field(default_factory=dict)  # per stream: last line's end
    pending: dict[str, str] = Field(default_factory=dict)  # per stream: an unfinished line's start
    horizon: str | None = None  # the latest entry read on any stream
    lines: int = 0
    bytes: int = 0
    lines_cut: int = 0
    bytes_cut: int = 0
    gaps: int = 0  # times the engine had rotated away output before it was read

    def since(self) -> str | None:
        """Where a resumed log stream must start so that no entry is missed (None: the start).

        Every entry up to the horizon was read; what is not forwarded yet is an unfinished
        line (re-read from its start) or comes after the horizon. Positions only say which
        of the re-read entries to skip.
        """
        marks = list(self.pending.values())
        if self.horizon is not None:
            marks.append(self.horizon)
        if not marks:
            return None
        return docker_since(min(marks, key=timestamp_ns), RESUME_MARGIN_NS)


@functools.lru_cache(maxsize=4096)
def _ns(timestamp: str) -> int:
    return timestamp_ns(timestamp)


def log_file_bytes(max_size: str) -> int:
    """How large a json-file log file grows before it is rotated, for its `max-size`."""
    found = _LOG_SIZE.fullmatch(max_size.strip())
    if found is None:
        raise ValueError(f"{max_size!r} is not a json-file max-size")
    scale = 1000 ** ("kmgtp".index(found.group(2).lower()) + 1) if found.group(2) else 1
    return int(float(found.group(1)) * scale)


def probe_entries(max_file_bytes: int) -> int:
    """How many of the log's last entries a probe reads after a suspected jump.

    Fewer entries than this, counted from the entry before the jump to the end of the log,
    cannot hold a whole rotated file (at least `max_file_bytes`), and are every entry after it:
    they say exactly which entry follows it.
    """
    return -(-max_file_bytes // MAX_ENTRY_BYTES)


class JumpWatch:
    """Where a followed log stream may have jumped over a rotated file.

    `step` sees every stamped entry in the order the engine sent it, with the time it arrived.
    A skipped file was written between two consecutive entries while the reader was behind, so
    the second arrives with much less delay than the first (its lag drops). A job that pauses
    while we are behind looks the same: the probe tells them apart.
    """

    def __init__(self) -> None:
        self._latest_ns = -1  # the latest entry that arrived, in any read
        self._settled_ns = -1
        self._previous: str | None = None
        self._previous_lag = 0

    def new_read(self, now_ns: int) -> None:
        """A read from the cursor begins at `now_ns`. It first reads every file the engine
        holds, so consecutive entries are consecutive in the log up to what was written
        before it began: what had arrived already, and what was stamped well before (an entry
        is written within moments of its stamp, and a rotated file holds many entries)."""
        self._settled_ns = max(self._latest_ns, now_ns - RESUME_MARGIN_NS)
        self._previous = None

    def step(self, stamp: str, now_ns: int) -> str | None:
        """The previous entry's timestamp when the stream may have jumped from it to `stamp`."""
        stamp_ns = _ns(stamp)
        lag = now_ns - stamp_ns
        previous = self._previous
        jumped = (
            previous is not None
            and self._previous_lag - lag > JUMP_NS
            and stamp_ns > self._settled_ns
        )
        self._previous, self._previous_lag = stamp, lag
        if stamp_ns > self._latest_ns:
            self._latest_ns = stamp_ns
        return previous if jumped else None


class LineReader:
    """Entries in, whole lines out, each line exactly once across resumed streams.

    It keeps its cursor as plain values (a line costs no model); `cursor` is the snapshot that
    rides in a heartbeat.
    """

    def __init__(self, cursor: LogCursor | None = None, max_line_bytes: int = MAX_LINE_BYTES):
        start = cursor or LogCursor()
        # per stream: (timestamp, its nanoseconds, entries at it consumed) of a last line's end
        self._done = {
            s: (p.timestamp, _ns(p.timestamp), p.count) for s, p in start.positions.items()
        }
        self._pending = dict(start.pending)
        self._horizon = start.horizon
        self._horizon_ns = _ns(start.horizon) if start.horizon else -1
        self.lines, self.bytes = start.lines, start.bytes
        self.lines_cut, self.bytes_cut = start.lines_cut, start.bytes_cut
        self.gaps = start.gaps
        self.max_line_bytes = max_line_bytes
        self._seen: dict[str, tuple[str, int]] = {}  # per stream, in this pass: (stamp, count)
        self._last_data: dict[str, bytes] = {}  # per stream, in this pass: the last entry's data
        self._partial: dict[str, _Partial] = {}
        self._partial_end: dict[str, tuple[str, int]] = {}

    @property
    def cursor(self) -> LogCursor:
        return LogCursor(
            positions={s: Position(timestamp=t, count=c) for s, (t, _, c) in self._done.items()},
            pending=dict(self._pending),
            horizon=self._horizon,
            lines=self.lines,
            bytes=self.bytes,
            lines_cut=self.lines_cut,
            bytes_cut=self.bytes_cut,
            gaps=self.gaps,
        )

    def resume(self) -> str | None:
        """A new pass over the stream (after a cut): pieces of unfinished lines are re-read."""
        self._seen.clear()
        self._last_data.clear()
        self._partial.clear()
        self._partial_end.clear()
        return self.cursor.since()

    def lost_before(self, stamp: str, *, after_jump: bool = False) -> str | None:
        """For the first entry of a resumed pass: the horizon, if output was lost after it.

        A resumed pass starts before the horizon, so the engine would send the entry at the
        horizon again if it still held it: it rotated away the file that held it, and the
        output written after the horizon and before `stamp` with it (how much is unknown).
        After a pass given up at a jump (`after_jump`), the horizon ends the file the follow
        reader had read to its end: when that file alone is gone, the next entry (the next
        file's first) comes within moments, while a whole file lost in between took longer
        than `JUMP_NS` to write.
        """
        if self._horizon is None:
            return None
        gap = _ns(stamp) - self._horizon_ns
        if gap <= 0 or (after_jump and gap <= JUMP_NS):
            return None
        self.gaps += 1
        return self._horizon

    def feed(self, entry: Entry) -> list[LogLine]:
        stream, stamp = entry.stream, entry.timestamp
        if stamp is not None:
            last = self._seen.get(stream)
            if (
                last is not None
                and last[0] == stamp
                and entry.data[-1:] == b"\n"
                and self._last_data.get(stream) == entry.data
            ):
                # The follow reader sent the same entry twice. The pieces of one line share a
                # stamp, but a whole line ends them: a stream's next line has a later stamp.
                return []
            self._last_data[stream] = entry.data
            count = last[1] + 1 if last is not None and last[0] == stamp else 1
            self._seen[stream] = (stamp, count)
            stamp_ns = _ns(stamp)
            done = self._done.get(stream)
            if done is not None and (
                stamp_ns < done[1] or (stamp_ns == done[1] and count <= done[2])
            ):
                return []  # forwarded by this attempt or an earlier one
            if stamp_ns > self._horizon_ns:
                self._horizon, self._horizon_ns = stamp, stamp_ns
        lines: list[LogLine] = []
        data = entry.data
        while data:
            partial = self._partial.get(stream)
            if partial is None:
                partial = self._partial[stream] = _Partial(self.max_line_bytes)
                if stamp is not None:
                    self._pending[stream] = stamp
            cut = data.find(b"\n")
            piece, data = (data, b"") if cut < 0 else (data[:cut], data[cut + 1 :])
            partial.add(piece)
            if stamp is not None:
                self._partial_end[stream] = (stamp, self._seen[stream][1])
            if cut >= 0:
                lines.append(self._complete(stream, stamp))
        return lines

    def finish(self) -> list[LogLine]:
        """The container has exited: what is left of unfinished lines is a last line each."""
        return [self._complete(stream, None) for stream in list(self._partial)]

    def _complete(self, stream: str, stamp: str | None) -> LogLine:
        partial = self._partial.pop(stream)
        start = self._pending.pop(stream, None)
        end = self._partial_end.pop(stream, None)
        if end is not None:
            self._done[stream] = (end[0], _ns(end[0]), end[1])
        line = partial.line(stream, start or stamp)
        self.lines += 1
        self.bytes += len(partial.kept) + partial.cut
        if line.cut_bytes:
            self.lines_cut += 1
            self.bytes_cut += line.cut_bytes
        return line


def tail_lines(
    read: Sequence[Entry], count: int = LOG_TAIL_LINES, *, whole_log: bool
) -> list[str] | None:
    """The last `count` lines of the entries Docker returned for `tail=N`; None if too few.

    When the log may hold more than was read (`whole_log` false), the first line of each
    stream may be the end of a longer one: it is dropped, and more entries are needed when
    what remains is short of `count`.
    """
    partial: dict[str, _Partial] = {}
    first_entry: dict[str, int] = {}
    lines: list[tuple[int, str, str]] = []  # (index of the line's first entry, stream, text)
    for index, entry in enumerate(read):
        data = entry.data
        while data:
            if entry.stream not in partial:
                partial[entry.stream] = _Partial(LOG_LINE_MAX_BYTES)
                first_entry[entry.stream] = index
            cut = data.find(b"\n")
            piece, data = (data, b"") if cut < 0 else (data[:cut], data[cut + 1 :])
            partial[entry.stream].add(piece)
            if cut >= 0:
                line = partial.pop(entry.stream).line(entry.stream, None)
                lines.append((first_entry[entry.stream], entry.stream, line.text))
    for stream, rest in partial.items():
        lines.append((first_entry[stream], stream, rest.line(stream, None).text))
    lines.sort(key=lambda item: item[0])
    if not whole_log:
        seen: set[str] = set()
        kept: list[tuple[int, str, str]] = []
        for item in lines:
            if item[1] in seen:
                kept.append(item)
            seen.add(item[1])
        if len(kept) < count:
            return None
        lines = kept
    return tail_of((text for _, _, text in lines), count)
