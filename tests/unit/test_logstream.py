"""activities/logstream.py: Docker's multiplexed log stream cut into lines."""

from __future__ import annotations

import itertools
import struct
from collections.abc import AsyncIterator, Iterable

import pytest

from activities.logstream import (
    MAX_LINE_BYTES,
    LineAssembler,
    LogLine,
    docker_since,
    frames,
    split_timestamp,
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


def test_partial_frames_are_joined_into_one_line():
    assembler = LineAssembler()
    assert assembler.feed("stdout", "t1", b"hel") == []
    assert assembler.feed("stdout", "t2", b"lo wor") == []
    lines = assembler.feed("stdout", "t3", b"ld\n")
    assert texts(lines) == [("stdout", "hello world")]
    assert lines[0].timestamp == "t1"  # when the line started


def test_a_multi_line_frame_is_split():
    lines = LineAssembler().feed("stdout", "t", b"one\ntwo\r\n\nthree\n")
    assert texts(lines) == [
        ("stdout", "one"),
        ("stdout", "two"),
        ("stdout", ""),
        ("stdout", "three"),
    ]


def test_streams_are_buffered_separately():
    assembler = LineAssembler()
    assert assembler.feed("stdout", None, b"out-") == []
    assert texts(assembler.feed("stderr", None, b"err\n")) == [("stderr", "err")]
    assert texts(assembler.feed("stdout", None, b"line\n")) == [("stdout", "out-line")]


def test_rest_of_a_frame_starts_the_next_line_with_that_frames_timestamp():
    assembler = LineAssembler()
    assembler.feed("stdout", "t1", b"a")
    assert [line.timestamp for line in assembler.feed("stdout", "t2", b"\nb")] == ["t1"]
    assert [line.timestamp for line in assembler.feed("stdout", "t3", b"\n")] == ["t2"]


def test_invalid_utf8_is_replaced_not_dropped():
    lines = LineAssembler().feed("stderr", None, b"bad \xff\xfe end\n")
    assert texts(lines) == [("stderr", "bad \ufffd\ufffd end")]


def test_multibyte_character_split_across_frames_is_kept():
    data = "caf\u00e9\n".encode()
    assembler = LineAssembler()
    assert assembler.feed("stdout", None, data[:4]) == []
    assert texts(assembler.feed("stdout", None, data[4:])) == [("stdout", "caf\u00e9")]


def test_an_endless_line_is_cut_at_max_line_bytes():
    assembler = LineAssembler()
    lines: list[LogLine] = []
    for _ in range(5):
        lines += assembler.feed("stdout", None, b"x" * 30_000)
    assert [len(line.text) for line in lines] == [MAX_LINE_BYTES, MAX_LINE_BYTES]
    assert all(len(line.text.encode()) <= MAX_LINE_BYTES for line in lines)
    rest = assembler.feed("stdout", None, b"\n")
    assert [len(line.text) for line in rest] == [150_000 - 2 * MAX_LINE_BYTES]


def test_a_line_of_exactly_max_line_bytes_is_not_cut():
    assembler = LineAssembler()
    assert assembler.feed("stdout", None, b"y" * MAX_LINE_BYTES) == []
    assert [len(line.text) for line in assembler.feed("stdout", None, b"\n")] == [MAX_LINE_BYTES]


def test_cutting_an_endless_line_keeps_multibyte_characters_whole():
    text = "a" + "\u00e9" * 40_000  # byte MAX_LINE_BYTES falls inside an é
    assembler = LineAssembler()
    lines = assembler.feed("stdout", None, text.encode()) + assembler.flush()
    joined = "".join(line.text for line in lines)
    assert "\ufffd" not in joined
    assert joined == text


def test_flush_returns_the_last_unterminated_line_of_each_stream():
    assembler = LineAssembler()
    assembler.feed("stdout", "t1", b"done\nno newline")
    assembler.feed("stderr", "t2", b"err tail")
    flushed = assembler.flush()
    assert sorted(texts(flushed)) == [("stderr", "err tail"), ("stdout", "no newline")]
    assert {line.text: line.timestamp for line in flushed}["err tail"] == "t2"
    assert assembler.flush() == []


def test_flush_without_pending_data_is_empty():
    assembler = LineAssembler()
    assembler.feed("stdout", None, b"whole\n")
    assert assembler.flush() == []


async def test_frames_and_lines_end_to_end_with_one_byte_chunks():
    entries = [
        (STDOUT, b"2024-05-01T10:00:00.1Z first li"),
        (STDOUT, b"2024-05-01T10:00:00.2Z ne\nsecond\n"),
        (STDERR, b"2024-05-01T10:00:00.3Z \xffwarn\n"),
        (STDOUT, b"2024-05-01T10:00:00.4Z tail"),
    ]
    data = b"".join(frame(k, p) for k, p in entries)
    assembler = LineAssembler()
    lines: list[LogLine] = []
    async for stream, payload in frames(chunked(data, 1)):
        ts, body = split_timestamp(payload)
        lines += assembler.feed(stream, ts, body)
    lines += assembler.flush()
    assert [(line.stream, line.text, line.timestamp) for line in lines] == [
        ("stdout", "first line", "2024-05-01T10:00:00.1Z"),
        ("stdout", "second", "2024-05-01T10:00:00.2Z"),
        ("stderr", "\ufffdwarn", "2024-05-01T10:00:00.3Z"),
        ("stdout", "tail", "2024-05-01T10:00:00.4Z"),
    ]


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
