"""The CLI's structured logs: structlog to stderr, debug with `-v`, warnings otherwise.

The CLI's loggers are wrapped here instead of configuring structlog globally, so that calling
`cli.main()` in a process that has its own structlog set-up (tests, the daemon) changes nothing.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_state = {"level": logging.WARNING}
_LEVELS = logging.getLevelNamesMapping()


class _Stderr:
    """Writes each rendered line to the current sys.stderr (looked up on every call)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    debug = info = warning = warn = error = critical = exception = msg


def _filter(_: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if _LEVELS.get(method.upper(), logging.INFO) < _state["level"]:
        raise structlog.DropEvent
    return event


def set_verbose(verbose: bool) -> None:
    _state["level"] = logging.DEBUG if verbose else logging.WARNING


def get_logger(name: str) -> Any:
    return structlog.wrap_logger(
        _Stderr(),
        processors=[
            _filter,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.BoundLogger,
        module=name,
    )
