"""orchestrator/connection.py: the SDK's metrics port, found free, can be taken before it binds."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from orchestrator import connection


def test_a_port_taken_before_the_exporter_binds_it_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = f"127.0.0.1:{taken.getsockname()[1]}"
    free = iter([busy, busy, connection.free_loopback_address()])
    monkeypatch.setattr(connection, "free_loopback_address", lambda: next(free))
    try:
        runtime, address = connection.runtime_with_metrics()
    finally:
        taken.close()
    assert runtime is not None and address is not None and address != busy


def test_without_any_free_port_the_runtime_goes_without_the_sdks_metrics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = f"127.0.0.1:{taken.getsockname()[1]}"

    def always_busy() -> Iterator[str]:
        while True:
            yield busy

    ports = always_busy()
    monkeypatch.setattr(connection, "free_loopback_address", lambda: next(ports))
    try:
        runtime, address = connection.runtime_with_metrics()
    finally:
        taken.close()
    assert runtime is not None and address is None
