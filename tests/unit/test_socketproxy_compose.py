"""The proxy's service in docker-compose.bigeye.yml: what the proxy needs to know the agent set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bigeye_agent.compose_file import (
    LOOPBACK_REGISTRY_ENV,
    PROXY_SERVICE,
    ComposeInputs,
    render,
)


def proxy_service(**changes: Any) -> dict[str, Any]:
    inputs = ComposeInputs(
        host_dir=Path("/srv/bigeye"),
        host_id="prod-agent-01",
        uid=4242,
        gid=4343,
        socket_gid=999,
        allow_loopback_registry=False,
    )
    fields = {**inputs.__dict__, **changes}
    service: dict[str, Any] = yaml.safe_load(render(ComposeInputs(**fields)))["services"][
        PROXY_SERVICE
    ]
    return service


def test_the_proxy_reads_the_host_directory_read_only():
    service = proxy_service()
    assert service["volumes"] == [
        "/var/run/docker.sock:/var/run/docker.sock:ro",
        "/srv/bigeye:/etc/bigeye:ro",  # the directory: atomic replaces of the file are seen
    ]
    assert service["environment"] == {
        "BIGEYE_HOST_ID": "prod-agent-01",
        "BIGEYE_AGENT_HOST_DIR": "/srv/bigeye",
        "BIGEYE_AGENT_CONFIG": "/etc/bigeye/bigeye_agent.yml",
    }
    # As the orchestrator's user (who can read the directory), with the socket's group.
    assert service["user"] == "4242:4343"
    assert service["group_add"] == ["999"]
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    assert service["networks"] == ["orchestrator-internal"]


def test_rootless_the_proxy_is_the_engines_own_user():
    service = proxy_service(rootless=True)
    assert service["user"] == "0:0" and "group_add" not in service
    assert "/srv/bigeye:/etc/bigeye:ro" in service["volumes"]


def test_a_loopback_registry_is_allowed_only_when_asked(monkeypatch: pytest.MonkeyPatch):
    assert LOOPBACK_REGISTRY_ENV not in proxy_service()["environment"]
    assert proxy_service(allow_loopback_registry=True)["environment"][LOOPBACK_REGISTRY_ENV] == "1"
    monkeypatch.setenv(LOOPBACK_REGISTRY_ENV, "1")
    inputs = ComposeInputs(host_dir=Path("/srv/bigeye"), host_id="h")
    assert inputs.allow_loopback_registry is True
    monkeypatch.setenv(LOOPBACK_REGISTRY_ENV, "yes")
    assert ComposeInputs(host_dir=Path("/srv/bigeye"), host_id="h").allow_loopback_registry is False
