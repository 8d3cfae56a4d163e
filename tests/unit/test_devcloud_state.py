"""devcloud's state files: atomic JSON, endpoints, the runs record, ports, the binary lookup."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

from devcloud import state, temporal_server
from devcloud.errors import DevcloudError


def test_write_json_atomic_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "f.json"
    state.write_json_atomic(path, {"a": 1})
    state.write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["f.json"]


def test_endpoints_round_trip_keeps_null_api_url(tmp_path):
    assert state.read_endpoints(tmp_path) is None
    endpoints = state.Endpoints(
        api_url=None,
        temporal_address="127.0.0.1:7233",
        temporal_plain_address="127.0.0.1:7233",
        namespace="default",
    )
    state.write_endpoints(tmp_path, endpoints)
    raw = json.loads((tmp_path / "endpoints.json").read_text())
    assert raw == {
        "api_url": None,
        "temporal_address": "127.0.0.1:7233",
        "temporal_plain_address": "127.0.0.1:7233",
        "namespace": "default",
        "temporal_server_name": None,
        "temporal_server_ca_file": None,
        "temporal_front_addresses": [],
    }
    assert state.require_endpoints(tmp_path) == endpoints
    state.remove_endpoints(tmp_path)
    with pytest.raises(DevcloudError, match="not running"):
        state.require_endpoints(tmp_path)


def test_server_lock_is_exclusive(tmp_path):
    with state.server_lock(tmp_path), pytest.raises(DevcloudError, match="already running"):
        with state.server_lock(tmp_path):
            pass
    with state.server_lock(tmp_path):
        pass


def test_pick_port_prefers_the_previous_port_when_free():
    port = temporal_server.pick_port()
    assert temporal_server.pick_port(port) == port
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        assert temporal_server.pick_port(taken) != taken
    assert temporal_server.pick_port(port, exclude=frozenset({port})) != port


def test_dev_server_command():
    config = temporal_server.DevServerConfig(
        binary=Path("/bin/temporal"), db_file=Path("/s/temporal.db"), port=1234, ui_port=5678
    )
    argv = config.command()
    assert argv[:3] == ["/bin/temporal", "server", "start-dev"]
    for flag, value in [("--ip", "127.0.0.1"), ("--port", "1234"), ("--ui-port", "5678"),
                        ("--db-filename", "/s/temporal.db"), ("--namespace", "default"),
                        ("--log-level", "warn")]:  # fmt: skip
        assert argv[argv.index(flag) + 1] == value
    assert "--headless" in argv
    assert config.address == "127.0.0.1:1234"


def test_temporal_binary_next_to_the_interpreter_first(tmp_path, monkeypatch):
    binary = tmp_path / "temporal"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", "")
    assert temporal_server.find_temporal_binary() == binary


def test_missing_temporal_binary_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DevcloudError, match=r"bigeye-agent-orchestrator\[devcloud\]"):
        temporal_server.find_temporal_binary()
