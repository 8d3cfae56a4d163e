"""orchestrator/logs.py: a job's own lines, written without stdlib logging, read the same."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
import structlog

from orchestrator import logs

CONTEXT = {"job_id": "j1", "run_id": "r1", "agent": "datahealth", "container": "abc123"}


@pytest.fixture
def stdout() -> Iterator[io.StringIO]:
    """The configured handler's stream, captured; logging put back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    saved_config = structlog.get_config()
    saved_output = dict(logs._OUTPUT)
    yield io.StringIO()
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**saved_config)
    structlog.contextvars.clear_contextvars()
    logs._OUTPUT.clear()
    logs._OUTPUT.update(saved_output)


def configure(fmt: str, stream: io.StringIO) -> None:
    logs.configure_logging(fmt, host_id="host-1")
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)


def lines_of(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def log_both_ways(message: str, fd: str) -> None:
    """The same job line through structlog's usual chain, then through `output_logger`."""
    structlog.get_logger("bigeye.orchestrator.job").bind(**CONTEXT).info(
        message, stream="agent", fd=fd
    )
    logs.output_logger("bigeye.orchestrator.job", **CONTEXT).info(message, stream="agent", fd=fd)


def test_a_job_line_in_json_has_the_same_keys_and_values(stdout: io.StringIO) -> None:
    configure("json", stdout)
    log_both_ways('line 1 \u00e9 "quoted"', "stdout")
    via_stdlib, direct = (json.loads(line) for line in lines_of(stdout))
    assert list(direct) == list(via_stdlib)
    via_stdlib.pop("timestamp"), direct.pop("timestamp")
    assert direct == via_stdlib
    assert direct["host_id"] == "host-1" and direct["logger"] == "bigeye.orchestrator.job"
    assert direct["level"] == "info" and direct["stream"] == "agent"


def test_a_job_line_for_people_reads_the_same(stdout: io.StringIO) -> None:
    configure("console", stdout)
    log_both_ways("line 2", "stderr")
    stamp = re.compile(r"^\S+ ")
    via_stdlib, direct = (stamp.sub("", line) for line in lines_of(stdout))
    assert direct == via_stdlib


def test_below_the_configured_level_nothing_is_written(stdout: io.StringIO) -> None:
    logs.configure_logging("json", level=logging.WARNING)
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stdout)
    logs.output_logger("bigeye.orchestrator.job", **CONTEXT).info("quiet", stream="agent")
    assert stdout.getvalue() == ""


def test_without_configured_logging_it_is_the_usual_structlog_logger() -> None:
    saved = dict(logs._OUTPUT)
    logs._OUTPUT.clear()
    try:
        logger = logs.output_logger("bigeye.orchestrator.job", **CONTEXT)
        assert structlog.get_context(logger) == CONTEXT
    finally:
        logs._OUTPUT.update(saved)


class Broken(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError("the reader of stdout went away")


def test_a_line_that_cannot_be_written_does_not_stop_the_forwarder(
    stdout: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("json", Broken())
    logs.output_logger("bigeye.orchestrator.job", **CONTEXT).info("lost", stream="agent")
    assert "BrokenPipeError" in capsys.readouterr().err
