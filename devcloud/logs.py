"""structlog set-up for bigeye-cloud-dev: logs go to stderr, stdout stays for machine output."""

from __future__ import annotations

import logging
import os
import sys

import structlog


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines unless stderr is a terminal (or BIGEYE_LOG_FORMAT says otherwise)."""
    fmt = os.environ.get("BIGEYE_LOG_FORMAT") or ("console" if sys.stderr.isatty() else "json")
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
