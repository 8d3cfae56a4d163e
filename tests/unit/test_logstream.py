"""activities/logstream.py: Docker's log entries cut into lines, each forwarded exactly once."""

from __future__ import annotations

import itertools
import struct
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activities.agents import LOG_MAX_SIZE
from activities.joblogs import PROBE_ENTRIES
from activities.logstream import (
    JUMP_NS,
    MAX_ENTRY_BYTES,
    MAX_LINE_BYTES,
    Entry,
    JumpWatch,
    LineReader,
    LogCursor,
    LogLine,
    docker_since,
    entries,
    frames,
    log_file_bytes,
    probe_entries,
    split_timestamp,
    tail_lines,
    tail_of,
    timestamp_ns,
    truncate_utf8,
)

STDOUT, STDERR = 1, 2


def frame(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", kind, len(payload)) + payload


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def from_chunks(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def collect(chunks: AsyncIterator[bytes]) -> list[tuple[str, bytes]]:
    return [item async for item in frames(chunks)]


STREAM = [
    (STDOUT, b"hello\n"),
    (STDERR, b"oops: \xff\xfe broken\n"),
    (STDOUT, b""),
    (STDOUT, b"x" * 300),
    (STDERR, "caf\u00e9 \u2603\n".encode()),
    (STDOUT, b"last"),
]
EXPECTED = [("stdout" if k == STDOUT else "stderr", p) for k, p in STREAM]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 9, 64, 10_000])
async def test_frames_survive_any_chunk_split(size):
    data = b"".join(frame(k, p) for k, p in STREAM)
    assert await collect(chunked(data, size)) == EXPECTED


async def test_frames_with_headers_split_across_uneven_chunks():
    data = b"".join(frame(k, p) for k, p in STREAM)
    cuts = [0, 3, 4, 13, 14, 15, 40, 41, len(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise(cuts)]
    assert await collect(from_chunks(chunks)) == EXPECTED


async def test_incomplete_trailing_frame_is_not_yielded():
    data = frame(STDOUT, b"whole\n") + frame(STDOUT, b"partial")[:-2]
    assert await collect(chunked(data, 5)) == [("stdout", b"whole\n")]


async def test_stream_tags():
    data = frame(0, b"in") + frame(1, b"out") + frame(2, b"err")
    assert await collect(chunked(data, 1)) == [
        ("stdin", b"in"),
        ("stdout", b"out"),
        ("stderr", b"err"),
    ]


# ---- lines ---------------------------------------------------------------------------------


def texts(lines: list[LogLine]) -> list[tuple[str, str]]:
    return [(line.stream, line.text) for line in lines]


def feed_all(reader: LineReader, items: Iterable[Entry]) -> list[LogLine]:
    return [line for entry in items for line in reader.feed(entry)]


def test_pieces_of_a_line_are_joined_and_stamped_with_its_start():
    reader = LineReader()
    lines = feed_all(reader, [Entry("stdout", T(1), b"hel"), Entry("stdout", T(1), b"lo wor"),
                              Entry("stdout", T(1), b"ld\n")])  # fmt: skip
    assert texts(lines) == [("stdout", "hello world")]
    assert lines[0].timestamp == T(1) and lines[0].cut_bytes == 0


def test_a_multi_line_entry_is_split():
    lines = LineReader().feed(Entry("stdout", None, b"one\ntwo\r\n\nthree\n"))
    assert texts(lines) == [
        ("stdout", "one"),
        ("stdout", "two"),
        ("stdout", ""),
        ("stdout", "three"),
    ]


def test_streams_are_buffered_separately():
    reader = LineReader()
    assert reader.feed(Entry("stdout", None, b"out-")) == []
    assert texts(reader.feed(Entry("stderr", None, b"err\n"))) == [("stderr", "err")]
    assert texts(reader.feed(Entry("stdout", None, b"line\n"))) == [("stdout", "out-line")]


def test_invalid_utf8_is_replaced_not_dropped():
    lines = LineReader().feed(Entry("stderr", None, b"bad \xff\xfe end\n"))
    assert texts(lines) == [("stderr", "bad \ufffd\ufffd end")]


def test_multibyte_character_split_across_entries_is_kept():
    data = "caf\u00e9\n".encode()
    reader = LineReader()
    assert reader.feed(Entry("stdout", None, data[:4])) == []
    assert texts(reader.feed(Entry("stdout", None, data[4:]))) == [("stdout", "caf\u00e9")]


def test_a_line_above_the_cap_is_forwarded_truncated_with_the_cut_counted():
    reader = LineReader()
    lines = feed_all(reader, [Entry("stdout", T(1), b"x" * 16_384) for _ in range(10)])
    assert lines == []  # still one line: forwarded when it ends
    (line,) = reader.feed(Entry("stdout", T(1), b"x" * 100 + b"\n"))
    assert len(line.text) == MAX_LINE_BYTES
    assert line.cut_bytes == 10 * 16_384 + 100 - MAX_LINE_BYTES
    cursor = reader.cursor
    assert (cursor.lines, cursor.lines_cut, cursor.bytes_cut) == (1, 1, line.cut_bytes)
    assert cursor.bytes == 10 * 16_384 + 100


def test_a_line_of_exactly_the_cap_is_not_cut():
    reader = LineReader()
    assert reader.feed(Entry("stdout", None, b"y" * MAX_LINE_BYTES)) == []
    (line,) = reader.feed(Entry("stdout", None, b"\n"))
    assert len(line.text) == MAX_LINE_BYTES and line.cut_bytes == 0


@pytest.mark.parametrize("char", ["\u00e9", "\u20ac", "\U0001f600"])
def test_the_cap_never_splits_a_character(char):
    text = "a" + char * 40_000
    reader = LineReader()
    (line,) = reader.feed(Entry("stdout", None, text.encode() + b"\n"))
    assert "\ufffd" not in line.text and text.startswith(line.text)
    assert len(line.text.encode()) + line.cut_bytes == len(text.encode())
    assert len(line.text.encode()) > MAX_LINE_BYTES - 4


def test_finish_returns_the_last_unterminated_line_of_each_stream():
    reader = LineReader()
    reader.feed(Entry("stdout", T(1), b"done\nno newline"))
    reader.feed(Entry("stderr", T(2), b"err tail"))
    flushed = reader.finish()
    assert sorted(texts(flushed)) == [("stderr", "err tail"), ("stdout", "no newline")]
    assert reader.finish() == []


async def test_frames_entries_and_lines_end_to_end_with_one_byte_chunks():
    stream = [
        (STDOUT, b"2024-05-01T10:00:00.1Z first li"),
        (STDOUT, b"2024-05-01T10:00:00.1Z ne\n"),
        (STDOUT, b"2024-05-01T10:00:00.2Z second\n"),
        (STDERR, b"2024-05-01T10:00:00.3Z \xffwarn\n"),
        (STDOUT, b"2024-05-01T10:00:00.4Z tail"),
    ]
    data = b"".join(frame(k, p) for k, p in stream)
    reader = LineReader()
    lines = [
        line async for e in entries(chunked(data, 1), timestamps=True) for line in reader.feed(e)
    ]
    lines += reader.finish()
    assert [(line.stream, line.text, line.timestamp) for line in lines] == [
        ("stdout", "first line", "2024-05-01T10:00:00.1Z"),
        ("stdout", "second", "2024-05-01T10:00:00.2Z"),
        ("stderr", "\ufffdwarn", "2024-05-01T10:00:00.3Z"),
        ("stdout", "tail", "2024-05-01T10:00:00.4Z"),
    ]


# ---- resuming: every line exactly once --------------------------------------------------------

BASE_NS = 1_704_067_200_000_000_000


def T(n: int) -> str:
    """The n-th microsecond after a fixed moment, as Docker writes timestamps."""
    ns = BASE_NS + n * 1000
    return f"2024-01-01T00:00:00.{ns % 1_000_000_000:09d}Z"


def as_docker_log(lines: list[tuple[str, int, bytes]]) -> list[Entry]:
    """Docker's entries for (stream, tick, line): pieces of 16 KiB, all with the line's stamp."""
    log: list[Entry] = []
    for stream, tick, data in lines:
        body = data + b"\n"
        for start in range(0, len(body), 16_384):
            log.append(Entry(stream, T(tick), body[start : start + 16_384]))
    return log


def read_since(log: list[Entry], since: str | None) -> list[Entry]:
    """What the engine sends for `since=` (inclusive), in the order it stored the entries."""
    if since is None:
        return list(log)
    seconds, _, nanos = since.partition(".")
    floor = int(seconds) * 1_000_000_000 + int(nanos)
    return [e for e in log if e.timestamp is None or timestamp_ns(e.timestamp) >= floor]


def expected(data: bytes) -> tuple[str, int]:
    """What a forwarded line holds: the line up to the cap (whole characters), the rest counted."""
    if len(data) <= MAX_LINE_BYTES:
        return data.rstrip(b"\r").decode("utf-8", "replace"), 0
    kept = data[:MAX_LINE_BYTES]  # the long lines generated below are ASCII
    return kept.rstrip(b"\r").decode(), len(data) - len(kept)


log_lines = st.lists(
    st.tuples(
        st.sampled_from(["stdout", "stderr"]),
        st.integers(min_value=0, max_value=3),  # ticks to the next line: 0 = same stamp
        st.one_of(
            st.binary(max_size=40).filter(lambda b: b"\n" not in b),
            st.integers(min_value=16_000, max_value=100_000).map(lambda n: b"z" * n),
        ),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(log_lines, st.lists(st.integers(min_value=0, max_value=60), max_size=6))
def test_a_stream_cut_anywhere_and_resumed_forwards_every_line_exactly_once(spec, cuts):
    # Each stream's stamps go forward (Docker stamps every line with its own clock reading;
    # only the pieces of one line share a stamp); across streams a line may be stored after
    # one stamped later (Docker stamps the two streams in two goroutines): stderr lags by up
    # to 2 ticks.
    lines, tick, last = [], 10, {"stdout": 0, "stderr": 0}
    for stream, step, data in spec:
        tick += step
        stamp = max(last[stream] + 1, tick - (2 if stream == "stderr" else 0))
        last[stream] = stamp
        lines.append((stream, stamp, data))
    log = as_docker_log(lines)
    reader = LineReader()
    forwarded: list[LogLine] = []
    for cut in [*cuts, len(log) + 1]:  # each pass breaks after `cut` entries
        batch = read_since(log, reader.resume())
        forwarded += feed_all(reader, batch[:cut])
    forwarded += reader.finish()
    for stream in ("stdout", "stderr"):
        sent = [expected(data) for s, _, data in lines if s == stream]
        got = [(line.text, line.cut_bytes) for line in forwarded if line.stream == stream]
        assert got == sent
    assert reader.cursor.lines == len(lines)


def test_resume_starts_at_an_unfinished_line_and_skips_what_was_forwarded():
    log = as_docker_log([("stdout", 1, b"a"), ("stderr", 2, b"b" * 40_000), ("stdout", 3, b"c")])
    reader = LineReader()
    first = feed_all(reader, log[:3])  # "a", and two pieces of the long stderr line
    assert texts(first) == [("stdout", "a")]
    since = reader.resume()
    assert since is not None
    again = feed_all(reader, read_since(log, since))
    assert [(line.stream, len(line.text)) for line in again] == [("stderr", 40_000), ("stdout", 1)]


def test_the_cursor_survives_a_round_trip_through_json():
    log = as_docker_log([("stdout", 1, b"one"), ("stdout", 1, b"two"), ("stdout", 2, b"three")])
    reader = LineReader()
    feed_all(reader, log[:1])
    saved = LogCursor.model_validate_json(reader.cursor.model_dump_json())
    resumed = LineReader(saved)
    assert texts(feed_all(resumed, read_since(log, resumed.resume()))) == [
        ("stdout", "two"),
        ("stdout", "three"),
    ]


# ---- exact tail ------------------------------------------------------------------------------


def test_tail_lines_counts_lines_not_entries():
    log = as_docker_log([("stdout", i, b"%d" % i) for i in range(10)]
                        + [("stderr", 20, b"L" * 50_000), ("stdout", 21, b"last")])  # fmt: skip
    untimed = [Entry(e.stream, None, e.data) for e in log]
    tail = tail_lines(untimed, 3, whole_log=True)
    assert tail == ["9", "L" * 2048, "last"]


def test_tail_lines_drops_a_line_that_may_have_started_before_the_read_and_asks_for_more():
    log = [Entry(e.stream, None, e.data) for e in as_docker_log([("stdout", 1, b"x" * 40_000)])]
    assert tail_lines(log[1:], 1, whole_log=False) is None
    assert tail_lines(log, 1, whole_log=True) == ["x" * 2048]


# ---- timestamps ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            b"2024-05-01T10:00:00.123456789Z hello world",
            ("2024-05-01T10:00:00.123456789Z", b"hello world"),
        ),
        (b"2024-05-01T10:00:00Z ", ("2024-05-01T10:00:00Z", b"")),
        (b"hello world", (None, b"hello world")),
        (b"12 monkeys", (None, b"12 monkeys")),
        (b"2024-05-01T10:00:00Z", (None, b"2024-05-01T10:00:00Z")),
        (b"", (None, b"")),
    ],
)
def test_split_timestamp(payload, expected):
    assert split_timestamp(payload) == expected


@pytest.mark.parametrize(
    ("timestamp", "since"),
    [
        ("1970-01-01T00:00:00Z", "0.000000000"),
        ("2024-01-01T00:00:02Z", "1704067202.000000000"),
        ("2024-01-01T00:00:02.8Z", "1704067202.800000000"),
        ("2024-01-01T00:00:02.79Z", "1704067202.790000000"),
        ("2024-01-01T00:00:02.000000001Z", "1704067202.000000001"),
        ("2024-01-01T00:00:02.123456789Z", "1704067202.123456789"),
    ],
)
def test_docker_since(timestamp, since):
    assert docker_since(timestamp) == since


def test_timestamp_ns_orders_trimmed_fractions_correctly():
    # Docker trims trailing zeros: .8 is later than .79 although "8" < "79" by length
    assert timestamp_ns("2024-01-01T00:00:02.8Z") > timestamp_ns("2024-01-01T00:00:02.79Z")
    assert (
        timestamp_ns("2024-01-01T00:00:02.8Z") - timestamp_ns("2024-01-01T00:00:02.79Z")
        == 10_000_000
    )
    assert timestamp_ns("2024-01-01T00:00:03Z") > timestamp_ns("2024-01-01T00:00:02.999999999Z")
    assert timestamp_ns("2024-01-01T00:00:02.5Z") == 1_704_067_202_500_000_000


# ---- tail ----------------------------------------------------------------------------------


def test_tail_keeps_the_last_50_lines():
    assert tail_of(f"line {i}" for i in range(120)) == [f"line {i}" for i in range(70, 120)]


def test_tail_of_few_lines_keeps_them_all():
    assert tail_of(["a", "b"]) == ["a", "b"]
    assert tail_of([]) == []


def test_tail_truncates_each_line_to_2048_bytes():
    tail = tail_of(["x" * 5000, "short"])
    assert tail == ["x" * 2048, "short"]


@pytest.mark.parametrize("char", ["\u00e9", "\u20ac", "\U0001f600"])
def test_tail_truncation_stays_on_a_utf8_boundary(char):
    line = "a" + char * 2000
    (truncated,) = tail_of([line])
    raw = truncated.encode()
    assert len(raw) <= 2048
    assert len(raw) > 2048 - len(char.encode())
    assert line.startswith(truncated)
    assert "\ufffd" not in truncated


def test_truncate_utf8_leaves_short_text_alone():
    assert truncate_utf8("caf\u00e9", limit=5) == "caf\u00e9"
    assert truncate_utf8("caf\u00e9", limit=4) == "caf"


# ---- the follow reader's faults at a log rotation ------------------------------------------------


def test_an_entry_the_follow_reader_sends_twice_is_forwarded_once():
    log = as_docker_log([("stdout", 1, b"one"), ("stdout", 2, b"two"), ("stdout", 3, b"three")])
    sent = [log[0], log[1], log[1], log[2]]  # the engine re-read the entry it had just sent
    assert texts(feed_all(LineReader(), sent)) == [
        ("stdout", "one"),
        ("stdout", "two"),
        ("stdout", "three"),
    ]


def test_a_run_of_entries_sent_again_from_the_start_of_a_file_is_forwarded_once():
    log = as_docker_log([("stdout", n, f"line {n}".encode()) for n in range(1, 7)])
    sent = log[:5] + log[2:5] + log[5:]  # the engine reopened the file it was reading
    got = texts(feed_all(LineReader(), sent))
    assert got == [("stdout", f"line {n}") for n in range(1, 7)]


def test_pieces_of_one_line_that_look_alike_are_all_kept():
    piece = b"=" * 16_384
    log = [Entry("stdout", T(1), piece), Entry("stdout", T(1), piece), Entry("stdout", T(1), b"\n")]
    (line,) = feed_all(LineReader(), log)
    assert len(line.text) == 2 * len(piece)


def test_a_resumed_read_that_starts_after_the_horizon_reports_the_gap():
    log = as_docker_log([("stdout", n, f"line {n}".encode()) for n in range(1, 10)])
    reader = LineReader()
    feed_all(reader, log[:3])
    since = reader.resume()
    assert since is not None
    held = read_since(log, since)
    assert reader.lost_before(held[0].timestamp or "") is None  # the horizon is still held
    rotated = log[6:]  # the engine no longer holds lines 4 to 6
    assert reader.lost_before(rotated[0].timestamp or "") == T(3)
    assert reader.cursor.gaps == 1
    assert LineReader(LogCursor.model_validate_json(reader.cursor.model_dump_json())).gaps == 1


def test_after_a_jump_the_file_read_to_its_end_may_be_gone_with_nothing_lost():
    log = as_docker_log([("stdout", n, f"line {n}".encode()) for n in range(1, 10)])
    reader = LineReader()
    feed_all(reader, log[:3])  # line 3 ended the file the follow reader had read
    reader.resume()
    # line 4, a microsecond later, begins the oldest file the engine still holds
    assert reader.lost_before(log[3].timestamp or "", after_jump=True) is None
    assert reader.gaps == 0
    # a whole file between them would have taken longer to write than a jump's threshold
    assert reader.lost_before(at(3 + JUMP_NS // 1000 + 1), after_jump=True) == T(3)
    assert reader.gaps == 1


def test_nothing_is_reported_lost_before_the_first_read():
    assert LineReader().lost_before(T(5)) is None


def at(us: int) -> str:
    """A Docker timestamp `us` microseconds after a fixed moment (any number of seconds)."""
    seconds, nanos = divmod(BASE_NS + us * 1000, 1_000_000_000)
    whole = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{whole}.{nanos:09d}Z"


def lag_steps(watch: JumpWatch, steps: list[tuple[int, int]]) -> list[str | None]:
    """(µs written, ms of delay when it arrived) for each entry, in the order sent."""
    return [watch.step(at(us), BASE_NS + us * 1000 + delay * 1_000_000) for us, delay in steps]


def test_a_stream_read_behind_the_job_does_not_look_like_a_jump():
    watch = JumpWatch()
    watch.new_read(0)
    # Two seconds behind, and falling further behind: no entry arrives much fresher.
    assert lag_steps(watch, [(n, 2000 + n) for n in range(1, 50)]) == [None] * 49


def test_a_pause_of_the_job_while_the_reader_keeps_up_does_not_look_like_a_jump():
    watch = JumpWatch()
    watch.new_read(0)
    assert lag_steps(watch, [(1, 1), (2, 1), (5_000_000, 1)]) == [None, None, None]


def test_an_entry_much_fresher_than_the_one_before_is_a_possible_jump():
    watch = JumpWatch()
    watch.new_read(0)
    # Five seconds behind until the stream skips to an entry written 5 s (5,000,000 µs) later.
    got = lag_steps(watch, [(1, 5000), (2, 5000), (5_000_002, 10), (5_000_003, 10)])
    assert got == [None, None, at(2), None]


def test_a_new_read_does_not_suspect_what_it_reads_from_the_files_again():
    watch = JumpWatch()
    watch.new_read(0)
    assert lag_steps(watch, [(1, 5000), (5_000_000, 10)]) == [None, at(1)]
    watch.new_read(0)  # read again from the cursor: up to what arrived before, it is settled
    again = lag_steps(watch, [(1, 9000), (5_000_000, 4000), (5_000_001, 4000), (9_000_000, 10)])
    assert again == [None, None, None, at(5_000_001)]
    # what was written well before the read began is settled too
    watch.new_read(BASE_NS + 9_000_000_000)
    assert lag_steps(watch, [(6_000_000, 5000), (7_000_000, 10)]) == [None, None]


@pytest.mark.parametrize("max_file_bytes", [10 * 1024**2, 1024**2, 100 * 1024**2, 123_457])
def test_fewer_entries_than_the_probe_reads_cannot_hold_a_rotated_file(max_file_bytes):
    probe = probe_entries(max_file_bytes)
    # a probe that counts fewer than `probe` entries from the last one read on saw at most
    # probe - 1 entries after it (one of the other stream's may be stored out of order)
    assert (probe - 1) * MAX_ENTRY_BYTES < max_file_bytes <= probe * MAX_ENTRY_BYTES


@pytest.mark.parametrize(
    ("max_size", "size"),
    [("10m", 10_000_000), ("10M", 10_000_000), ("1.5g", 1_500_000_000), ("512k", 512_000),
     ("100", 100), ("10mb", 10_000_000), ("10 MiB", 10_000_000)],
)  # fmt: skip
def test_json_file_sizes_are_decimal(max_size, size):
    assert log_file_bytes(max_size) == size


def test_a_size_that_is_not_one_is_refused():
    with pytest.raises(ValueError):
        log_file_bytes("ten megabytes")


def test_the_probe_for_the_orchestrators_log_files():
    assert PROBE_ENTRIES == probe_entries(log_file_bytes(LOG_MAX_SIZE)) == 98
