"""Every log line structured: our own, the libraries' (stdlib logging) and the Temporal core's."""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from typing import Any

import structlog

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


_OUTPUT: dict[str, Any] = {}  # the configured handler, renderer and level


def configure_logging(fmt: str = "json", level: int = logging.INFO, **context: Any) -> None:
    """Route structlog and stdlib logging through one renderer on stdout."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
    structlog.configure(
        processors=[
            *_SHARED,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_SHARED, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    _OUTPUT.update(handler=handler, renderer=renderer, level=level)
    for noisy in ("aiohttp.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.contextvars.clear_contextvars()
    if context:
        structlog.contextvars.bind_contextvars(**context)


class _HandlerLines:
    """Writes rendered lines as the root handler does: to its stream, under its lock."""

    def __init__(self, handler: logging.StreamHandler[Any], name: str) -> None:
        self.handler = handler
        self.name = name

    def msg(self, line: str) -> None:
        handler = self.handler
        try:
            with handler.lock or contextlib.nullcontext():
                handler.stream.write(line + handler.terminator)
                handler.flush()
        except Exception:  # as the handler does: a line that cannot be written stops nothing
            if logging.raiseExceptions:
                traceback.print_exc(file=sys.stderr)

    debug = info = warning = error = critical = msg


def output_logger(name: str, **context: Any) -> Any:
    """A logger for a job's own output: the same line as through stdlib logging (the same
    keys, renderer, stream and lock), without building a `LogRecord` twice per line.

    A job's output is most of the daemon's lines, and the stdlib path costs about three times
    as much per line: a forwarder slower than the job falls behind what the engine keeps.
    """
    handler = _OUTPUT.get("handler")
    if handler is None:  # logging not configured (a library use, a test): the usual path
        return structlog.get_logger(name).bind(**context)
    processors = [*_SHARED, structlog.processors.StackInfoRenderer(),
                  structlog.processors.format_exc_info, _OUTPUT["renderer"]]  # fmt: skip
    return structlog.wrap_logger(
        _HandlerLines(handler, name),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_OUTPUT["level"]),
        cache_logger_on_first_use=True,
    ).bind(**context)
