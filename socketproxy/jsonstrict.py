"""Strict JSON reading: accept only what Go's `encoding/json` reads exactly the same way.

The Docker engine decodes request bodies with Go's `encoding/json`, which differs from Python's
`json` module in ways an attacker can use to show the proxy one document and the engine another:

- Go matches object keys to struct fields case-insensitively (with Unicode simple folding, so
  the Kelvin sign matches `k` and the long s matches `s`), and the last duplicate wins — for a
  struct or map value the duplicates are even *merged*. Python keeps only the last duplicate.
  Any object with two keys that fold to the same string is rejected, at every level.
- Go replaces invalid UTF-8 and lone surrogate escapes with U+FFFD; Python either fails or keeps
  a lone surrogate. Both are rejected, and so is a byte order mark.
- Python accepts `NaN`/`Infinity`; Go does not. Rejected.
- Go's decoder reads one value and Docker ignores whatever follows it. Trailing data is rejected.
- A number with a fraction or an exponent (`1.0`, `1e3`) is not an int for Go's int64 fields, and
  an integer outside int64 overflows. Only integers within int64 are accepted: none of the bodies
  the proxy admits has a non-integer number. A longer digit string than int64 can hold is
  refused before Python converts it (Python refuses to convert more than 4,300 digits).

Callers re-serialise the parsed value with `canonical()` and forward only that, so the engine
decodes exactly the document that was checked.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, NoReturn

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
MAX_INTEGER_DIGITS: Final = len(str(INT64_MAX))  # 19
MAX_DEPTH: Final = 32
_JSON_WS: Final = " \t\n\r"
_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")


class JSONRejected(ValueError):
    """The document is not JSON that Go and Python read identically."""


def _reject(why: str) -> NoReturn:
    raise JSONRejected(why)


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, str] = {}
    for key, _ in pairs:
        folded = key.casefold()
        if folded in seen:
            if seen[folded] == key:
                _reject(f"duplicate key {key!r}")
            _reject(f"keys {seen[folded]!r} and {key!r} differ only in case")
        seen[folded] = key
    return dict(pairs)


def _integer(text: str) -> int:
    if len(text.removeprefix("-")) > MAX_INTEGER_DIGITS:
        _reject(f"integer of {len(text)} characters does not fit in 64 bits")
    if _INTEGER.fullmatch(text) is None:
        _reject(f"number {text!r} is not a plain integer")
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        _reject(f"integer {text} does not fit in 64 bits")
    return value


def _no_float(text: str) -> NoReturn:
    shown = text if len(text) <= 40 else text[:37] + "..."
    _reject(f"number {shown} is not an integer (fractions and exponents are not accepted)")


def _no_constant(text: str) -> NoReturn:
    _reject(f"{text} is not JSON")


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        _reject("string holds a lone UTF-16 surrogate (\\ud800-\\udfff)")


def _walk(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        _reject(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        _check_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _walk(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _walk(item, depth + 1)


_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_pairs,
    parse_float=_no_float,
    parse_int=_integer,
    parse_constant=_no_constant,
    strict=True,  # no raw control characters inside strings
)


def loads(data: bytes) -> Any:
    """One JSON value, read strictly; raises `JSONRejected`."""
    if data.startswith(b"\xef\xbb\xbf"):
        _reject("body starts with a byte order mark")
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        _reject(f"body is not valid UTF-8 (byte {exc.start})")
    start = len(text) - len(text.lstrip(_JSON_WS))
    if start == len(text):
        _reject("body is empty")
    try:
        value, end = _DECODER.raw_decode(text, start)
    except JSONRejected:
        raise
    except json.JSONDecodeError as exc:
        _reject(f"invalid JSON: {exc.msg} at offset {exc.pos}")
    except RecursionError:
        _reject(f"nested deeper than {MAX_DEPTH} levels")
    except (ValueError, OverflowError, MemoryError) as exc:  # never an unread body let through
        _reject(f"cannot read the body ({type(exc).__name__})")
    if text[end:].strip(_JSON_WS):
        _reject(f"trailing data after the JSON value at offset {end}")
    _walk(value, 0)
    return value


def loads_object(data: bytes) -> dict[str, Any]:
    """A JSON object, read strictly; raises `JSONRejected` for anything else."""
    value = loads(data)
    if not isinstance(value, dict):
        _reject(f"the top-level value must be an object, not {type(value).__name__}")
    return value


def canonical(value: Any) -> bytes:
    """The one serialisation the proxy forwards: ASCII, no spaces, keys in their order."""
    return json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()
