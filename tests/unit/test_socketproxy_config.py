"""socketproxy/config.py: the proxy's environment, each problem one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from socketproxy.config import ConfigError, ProxyConfig, from_env

GOOD = {"BIGEYE_HOST_ID": "prod-agent-01", "BIGEYE_AGENT_HOST_DIR": "/srv/bigeye"}


def test_defaults():
    config = from_env(GOOD)
    assert config == ProxyConfig(
        "prod-agent-01", "/srv/bigeye", "/var/run/docker.sock", "0.0.0.0", 2375
    )
    assert config.agent_config == "/etc/bigeye/bigeye_agent.yml"
    assert config.mounted_host_dir == "/etc/bigeye"
    assert config.allow_loopback_registry is False
    assert config.max_connections == 64


def test_the_agent_set_and_connection_settings():
    config = from_env(
        {
            **GOOD,
            "BIGEYE_AGENT_CONFIG": "/mnt/host/bigeye_agent.yml",
            "BIGEYE_PROXY_ALLOW_LOOPBACK_REGISTRY": "1",
            "BIGEYE_PROXY_MAX_CONNECTIONS": "8",
        }
    )
    assert config.mounted_host_dir == "/mnt/host"
    assert config.allow_loopback_registry is True
    assert config.max_connections == 8
    assert (
        from_env({**GOOD, "BIGEYE_PROXY_ALLOW_LOOPBACK_REGISTRY": "0"}).allow_loopback_registry
        is False
    )


def test_overrides():
    config = from_env(
        {**GOOD, "BIGEYE_DOCKER_SOCKET": "/run/d.sock", "BIGEYE_PROXY_LISTEN": "127.0.0.1:9"}
    )
    assert (config.socket_path, config.listen_host, config.listen_port) == (
        "/run/d.sock",
        "127.0.0.1",
        9,
    )
    assert from_env({**GOOD, "BIGEYE_PROXY_LISTEN": "[::]:2375"}).listen_host == "::"


@pytest.mark.parametrize(
    "change, why",
    [
        ({"BIGEYE_HOST_ID": ""}, "BIGEYE_HOST_ID is not set"),
        ({"BIGEYE_HOST_ID": "-bad"}, "not a valid host id"),
        ({"BIGEYE_HOST_ID": "a_b"}, "not a valid host id"),
        ({"BIGEYE_AGENT_HOST_DIR": ""}, "BIGEYE_AGENT_HOST_DIR is not set"),
        ({"BIGEYE_AGENT_HOST_DIR": "relative/dir"}, "absolute"),
        ({"BIGEYE_AGENT_HOST_DIR": "/srv/bigeye/"}, "normalised"),
        ({"BIGEYE_AGENT_HOST_DIR": "/srv/../etc"}, "normalised"),
        ({"BIGEYE_AGENT_HOST_DIR": "//srv"}, "normalised"),
        ({"BIGEYE_AGENT_HOST_DIR": "/"}, "must not be /"),
        ({"BIGEYE_AGENT_HOST_DIR": "/etc"}, "/etc"),
        ({"BIGEYE_AGENT_HOST_DIR": "/var"}, "/var/lib/docker"),
        ({"BIGEYE_AGENT_HOST_DIR": "/var/run"}, "/var/run"),
        ({"BIGEYE_AGENT_HOST_DIR": "/run"}, "/run"),
        ({"BIGEYE_DOCKER_SOCKET": "docker.sock"}, "absolute"),
        ({"BIGEYE_PROXY_LISTEN": "2375"}, "HOST:PORT"),
        ({"BIGEYE_PROXY_LISTEN": "0.0.0.0:99999"}, "HOST:PORT"),
        ({"BIGEYE_AGENT_CONFIG": "bigeye_agent.yml"}, "absolute"),
        ({"BIGEYE_AGENT_CONFIG": "/etc/bigeye/../bigeye_agent.yml"}, "normalised"),
        ({"BIGEYE_PROXY_ALLOW_LOOPBACK_REGISTRY": "yes"}, "use 1 or 0"),
        ({"BIGEYE_PROXY_MAX_CONNECTIONS": "0"}, "from 1 to 4096"),
        ({"BIGEYE_PROXY_MAX_CONNECTIONS": "many"}, "from 1 to 4096"),
    ],
)
def test_problems_are_one_line(change, why):
    env = {**GOOD, **change}
    with pytest.raises(ConfigError, match=why) as info:
        from_env({k: v for k, v in env.items() if v or k not in GOOD})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("host_dir", ["/etc/bigeye", "/home/ops/bigeye", "/var/lib/bigeye"])
def test_host_dirs_below_system_dirs_are_fine(host_dir):
    assert from_env({**GOOD, "BIGEYE_AGENT_HOST_DIR": host_dir}).host_dir == host_dir


def test_the_entry_point_fails_with_one_line_when_unconfigured():
    result = subprocess.run(
        [sys.executable, "-m", "socketproxy"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "BIGEYE_HOST_ID is not set" in result.stderr
