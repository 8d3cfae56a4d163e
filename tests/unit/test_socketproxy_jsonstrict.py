"""socketproxy/jsonstrict.py: read only what Go's encoding/json reads the same way."""

from __future__ import annotations

import json

import pytest

from socketproxy.jsonstrict import INT64_MAX, INT64_MIN, JSONRejected, canonical, loads_object


@pytest.mark.parametrize(
    "text",
    [
        b'{"a": 1}',
        b' \t\r\n{"a": 1} \n',
        b'{"a": {"b": [1, -2, 0, "x", true, false, null]}}',
        b'{"a": "caf\xc3\xa9 \\u00e9 \\ud83d\\ude00"}',  # a valid surrogate pair is fine
        b'{"Labels": {"a": "1", "b": "1"}}',
        b"{}",
        f'{{"min": {INT64_MIN}, "max": {INT64_MAX}}}'.encode(),
    ],
)
def test_plain_json_is_read(text):
    assert loads_object(text) == json.loads(text)


@pytest.mark.parametrize(
    "text, why",
    [
        (b'{"a": 1, "a": 2}', "duplicate key"),
        (b'{"Memory": 1, "memory": 2}', "differ only in case"),
        (b'{"HostConfig": {}, "hostconfig": {}}', "differ only in case"),
        (b'{"x": {"Binds": [], "BINDS": []}}', "differ only in case"),
        (b'{"x": [{"k": 1, "K": 2}]}', "differ only in case"),
        # Go folds the Kelvin sign onto k and the long s onto s.
        ('{"kind": 1, "\u212aind": 2}'.encode(), "differ only in case"),
        ('{"SecurityOpt": 1, "\u017fecurityOpt": 2}'.encode(), "differ only in case"),
        (b'{"Hos\\u0074Config": 1, "HostConfig": 2}', "duplicate key"),  # escaped key
        (b'\xef\xbb\xbf{"a": 1}', "byte order mark"),
        (b'{"a": "\xff"}', "not valid UTF-8"),
        (b'{"a": "\xed\xa0\x80"}', "not valid UTF-8"),  # a UTF-8-encoded surrogate
        (b'{"a": "\xc0\xaf"}', "not valid UTF-8"),  # overlong
        (b'{"a": "\\ud800"}', "lone UTF-16 surrogate"),
        (b'{"\\udc00": 1}', "lone UTF-16 surrogate"),
        (b'{"a": NaN}', "not JSON"),
        (b'{"a": Infinity}', "not JSON"),
        (b'{"a": -Infinity}', "not JSON"),
        (b'{"a": 1.0}', "not an integer"),
        (b'{"a": 1e3}', "not an integer"),
        (b'{"a": 1E+3}', "not an integer"),
        (b'{"a": -0.0}', "not an integer"),
        (f'{{"a": {INT64_MAX + 1}}}'.encode(), "64 bits"),
        (f'{{"a": {INT64_MIN - 1}}}'.encode(), "64 bits"),
        (b'{"a": 1} {"b": 2}', "trailing data"),
        (b'{"a": 1}x', "trailing data"),
        (b'{"a": 1}\x00', "trailing data"),
        ('{"a": 1}\u00a0'.encode(), "trailing data"),  # not JSON whitespace
        (b'\x0c{"a": 1}', "invalid JSON"),
        (b"", "empty"),
        (b"  ", "empty"),
        (b"[]", "must be an object"),
        (b"null", "must be an object"),
        (b'"x"', "must be an object"),
        (b"1", "must be an object"),
        (b'{"a": "x\ny"}', "invalid JSON"),  # raw control character in a string
        (b'{"a": 01}', "invalid JSON"),
        (b"{'a': 1}", "invalid JSON"),
        (b'{"a": 1,}', "invalid JSON"),
        (b'{"a": [1,]}', "invalid JSON"),
        (b'{"a" 1}', "invalid JSON"),
        (b'{"a": "\\x41"}', "invalid JSON"),
        (b"[" * 100 + b"]" * 100, "nested deeper"),
        (b'{"a":' * 50 + b"1" + b"}" * 50, "nested deeper"),
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested deeper"),
        ('{"a": 1}'.encode("utf-16"), "byte"),
    ],
)
def test_what_go_would_read_differently_is_rejected(text, why):
    with pytest.raises(JSONRejected, match=why):
        loads_object(text)


def test_canonical_is_ascii_compact_and_round_trips():
    value = loads_object('{"b": "é\\u2028", "a": [1, {"c": null}]}'.encode())
    out = canonical(value)
    assert out == b'{"b":"\\u00e9\\u2028","a":[1,{"c":null}]}'
    assert loads_object(out) == value


@pytest.mark.parametrize(
    "number",
    [
        "9" * 19,
        "-" + "9" * 19,
        "1" + "0" * 19,
        "0" * 20,
        "9" * 5000,  # Python itself refuses to convert more than 4,300 digits
        "-" + "9" * 5000,
        "1." + "5" * 5000,
        "1e" + "9" * 5000,
    ],
)
def test_numbers_beyond_int64_are_rejected_never_an_error(number):
    with pytest.raises(JSONRejected):
        loads_object(f'{{"Memory": {number}}}'.encode())
