"""devcloud's ports against a real `temporal server start-dev`: the one port it cannot hold
for the dev server (the binary binds its own) taken between the choice and the bind."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from devcloud import listeners, server, state, temporal_server
from devcloud.temporal_server import probe
from orchestrator.ports import LOOPBACK
from tests.e2e.conftest import start_cloud, stop_cloud

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def fresh_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """structlog as it comes, with loggers made under it: another test's configuration in this
    process may filter below `warning` (devcloud's own does), which `capture_logs` keeps, and
    a module's logger may be cached under it."""
    saved = structlog.get_config()
    structlog.reset_defaults()
    monkeypatch.setattr(server, "log", structlog.get_logger("devcloud.server"))
    monkeypatch.setattr(temporal_server, "log", structlog.get_logger("devcloud.temporal"))
    yield
    structlog.configure(**saved)


async def test_a_temporal_port_taken_before_the_dev_server_binds_it_moves_the_server(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        held = int(taken.getsockname()[1])
        config = dataclasses.replace(server.server_config(tmp_path), port=held)
        bound = listeners.reserve(
            gateway=None, previous_api=None, previous_front=None, exclude=frozenset({held})
        )
        never = asyncio.create_task(asyncio.Event().wait())
        try:
            with capture_logs() as logged:
                temporal = await server._start_temporal(tmp_path, config, bound, never, 60)
            assert temporal is not None
            try:
                moved = temporal.config
                assert moved.port not in (held, bound.api_port, bound.front_port)
                await probe(moved.address, moved.namespace)
                assert state.read_server_state(tmp_path).temporal_port == moved.port
                assert state.read_server_state(tmp_path).temporal_pid == temporal.pid
            finally:
                await temporal.stop()
        finally:
            never.cancel()
            bound.close()
    [moving] = [e for e in logged if e["event"] == "temporal_port_taken"]
    assert moving["port"] == held and moving["attempt"] == 1


async def test_a_dev_server_that_fails_for_another_reason_is_not_started_again(
    tmp_path: Path,
) -> None:
    unreadable = tmp_path / "no-such-dir" / "temporal.db"
    config = dataclasses.replace(server.server_config(tmp_path), db_file=unreadable)
    bound = listeners.reserve(
        gateway=None, previous_api=None, previous_front=None, exclude=frozenset()
    )
    never = asyncio.create_task(asyncio.Event().wait())
    try:
        with capture_logs() as logged, pytest.raises(server.DevcloudError, match="while starting"):
            await server._start_temporal(tmp_path, config, bound, never, 60)
    finally:
        never.cancel()
        bound.close()
    assert [e["event"] for e in logged if e["event"] == "temporal_port_taken"] == []
    assert any(e["event"] == "temporal_starting" for e in logged)


def test_a_stopped_cloud_records_it_and_a_restart_keeps_every_address(tmp_path: Path) -> None:
    """The state file is written after the services closed their sockets: the ports it keeps
    come from the reservation, and the next start binds the same ones again."""
    first = start_cloud(tmp_path)
    addresses = {key: first.endpoints[key] for key in ("api_url", "temporal_address")}
    stop_cloud(first)
    assert first.proc.returncode == 0, (tmp_path / "server.log").read_text()[-2000:]
    stopped = state.read_server_state(tmp_path)
    assert stopped.temporal_pid is None
    assert addresses["api_url"].endswith(f":{stopped.api_port}")
    assert addresses["temporal_address"].endswith(f":{stopped.front_port}")
    assert not (tmp_path / "endpoints.json").exists()

    second = start_cloud(tmp_path)
    try:
        assert {key: second.endpoints[key] for key in addresses} == addresses
    finally:
        stop_cloud(second)
    assert second.proc.returncode == 0, (tmp_path / "server.log").read_text()[-2000:]
