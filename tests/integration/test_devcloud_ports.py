"""devcloud's ports against a real `temporal server start-dev`: the one port it cannot hold
for the dev server (the binary binds its own) taken between the choice and the bind."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from pathlib import Path

import pytest

from devcloud import listeners, server, state
from devcloud.temporal_server import probe
from orchestrator.ports import LOOPBACK

pytestmark = pytest.mark.integration


async def test_a_temporal_port_taken_before_the_dev_server_binds_it_moves_the_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
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
    out = capsys.readouterr().out
    assert "temporal_port_taken" in out and f"port={held}" in out.replace('"', "")


async def test_a_dev_server_that_fails_for_another_reason_is_not_started_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unreadable = tmp_path / "no-such-dir" / "temporal.db"
    config = dataclasses.replace(server.server_config(tmp_path), db_file=unreadable)
    bound = listeners.reserve(
        gateway=None, previous_api=None, previous_front=None, exclude=frozenset()
    )
    never = asyncio.create_task(asyncio.Event().wait())
    try:
        with pytest.raises(server.DevcloudError, match="while starting"):
            await server._start_temporal(tmp_path, config, bound, never, 60)
    finally:
        never.cancel()
        bound.close()
    assert "temporal_port_taken" not in capsys.readouterr().out
