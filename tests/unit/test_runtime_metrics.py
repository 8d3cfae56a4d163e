"""orchestrator/connection.py: the SDK's metrics port, found free, can be taken before it binds."""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator

import pytest

from orchestrator import connection


@pytest.fixture
def busy() -> Iterator[str]:
    """A loopback address something else already listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield f"127.0.0.1:{taken.getsockname()[1]}"


def test_a_port_taken_before_the_exporter_binds_it_is_replaced(
    busy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = iter([busy, busy, connection.free_loopback_address()])
    monkeypatch.setattr(connection, "free_loopback_address", lambda: next(found))
    runtime, address = connection.runtime_with_metrics()
    assert runtime is not None and address is not None and address != busy


def test_without_any_free_port_the_runtime_goes_without_the_sdks_metrics(
    busy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = itertools.repeat(busy)
    monkeypatch.setattr(connection, "free_loopback_address", lambda: next(found))
    runtime, address = connection.runtime_with_metrics()
    assert runtime is not None and address is None
