"""orchestrator/settings.py: bigeye_agent.yml overlaid by the environment (design §5)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.settings import SettingsError, load_settings

CONFIG = """\
unrelated_agent_key: keep-me
orchestrator:
  host_id: file-host
  temporal: {address: "file.example:7233", namespace: file-ns, server_name: file-sn}
agents:
  datahealth: {image: reg/dh:1}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "bigeye_agent.yml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def env_for(path: Path, **extra: str) -> dict[str, str]:
    return {"BIGEYE_AGENT_CONFIG": str(path), "BIGEYE_LOG_FORMAT": "json", **extra}


def settings_error(env: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as info:
        load_settings(env=env)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_values_come_from_the_file(config):
    settings, host = load_settings(env=env_for(config))
    assert settings.host_id == "file-host"
    assert settings.temporal_address == "file.example:7233"
    assert settings.namespace == "file-ns"
    assert settings.config_path == config
    assert settings.tls is None
    assert settings.docker_host is None
    assert settings.health_addr == "127.0.0.1:9464"
    assert settings.max_concurrent_jobs == 8
    assert list(host.agents) == ["datahealth"]


def test_environment_overlays_the_file(config):
    env = env_for(
        config,
        BIGEYE_HOST_ID="env-host",
        BIGEYE_TEMPORAL_ADDRESS="env.example:443",
        BIGEYE_TEMPORAL_NAMESPACE="env-ns",
        DOCKER_HOST="tcp://docker-socket-proxy:2375",
        BIGEYE_HEALTH_ADDR="0.0.0.0:9464",
        BIGEYE_MAX_CONCURRENT_JOBS="3",
        BIGEYE_LOG_FORMAT="console",
    )
    settings, _ = load_settings(env=env)
    assert settings.host_id == "env-host"
    assert settings.temporal_address == "env.example:443"
    assert settings.namespace == "env-ns"
    assert settings.docker_host == "tcp://docker-socket-proxy:2375"
    assert settings.health_addr == "0.0.0.0:9464"
    assert settings.max_concurrent_jobs == 3
    assert settings.log_format == "console"


def test_empty_environment_values_fall_back_to_the_file(config):
    env = env_for(config, BIGEYE_HOST_ID="", BIGEYE_TEMPORAL_ADDRESS="", DOCKER_HOST="")
    settings, _ = load_settings(env=env)
    assert settings.host_id == "file-host"
    assert settings.temporal_address == "file.example:7233"
    assert settings.docker_host is None


def test_namespace_defaults_to_default(tmp_path):
    path = tmp_path / "bigeye_agent.yml"
    path.write_text("orchestrator: {host_id: h1, temporal: {address: 'x:1'}}\n", encoding="utf-8")
    settings, host = load_settings(env=env_for(path))
    assert settings.namespace == "default"
    assert host.agents == {}


def test_host_id_only_from_the_environment(tmp_path):
    path = tmp_path / "bigeye_agent.yml"
    path.write_text("agents: {}\n", encoding="utf-8")
    env = env_for(path, BIGEYE_HOST_ID="h-2", BIGEYE_TEMPORAL_ADDRESS="t:7233")
    assert load_settings(env=env)[0].host_id == "h-2"


# ---- TLS -----------------------------------------------------------------------------------

TLS = {
    "BIGEYE_TLS_CERT": "/k/mtls.pem",
    "BIGEYE_TLS_KEY": "/k/mtls.key",
    "BIGEYE_TLS_CA": "/k/ca.pem",
}


def test_full_tls_set(config):
    settings, _ = load_settings(env=env_for(config, **TLS))
    assert settings.tls is not None
    assert settings.tls.cert == Path("/k/mtls.pem")
    assert settings.tls.key == Path("/k/mtls.key")
    assert settings.tls.ca == Path("/k/ca.pem")
    assert settings.tls.server_name == "file-sn"


def test_tls_server_name_from_the_environment_wins(config):
    env = env_for(config, **TLS, BIGEYE_TLS_SERVER_NAME="env-sn")
    settings, _ = load_settings(env=env)
    assert settings.tls is not None and settings.tls.server_name == "env-sn"


@pytest.mark.parametrize(
    "given",
    [
        ["BIGEYE_TLS_CERT"],
        ["BIGEYE_TLS_KEY"],
        ["BIGEYE_TLS_CA"],
        ["BIGEYE_TLS_CERT", "BIGEYE_TLS_KEY"],
        ["BIGEYE_TLS_KEY", "BIGEYE_TLS_CA"],
    ],
)
def test_partial_tls_is_an_error_naming_the_missing_variables(config, given):
    message = settings_error(env_for(config, **{name: TLS[name] for name in given}))
    named = set(re.findall(r"BIGEYE_TLS_(?:CERT|KEY|CA)\b", message))
    assert named == set(TLS) - set(given)


def test_server_name_alone_does_not_enable_tls(config):
    settings, _ = load_settings(env=env_for(config, BIGEYE_TLS_SERVER_NAME="x"))
    assert settings.tls is None


# ---- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("host_id", ["bad_id", "-lead", "trail-", "a b", "a" * 257])
def test_invalid_host_id_from_the_environment(config, host_id):
    assert "BIGEYE_HOST_ID" in settings_error(env_for(config, BIGEYE_HOST_ID=host_id))


def test_invalid_host_id_in_the_file_names_the_key(tmp_path):
    path = tmp_path / "bigeye_agent.yml"
    path.write_text("orchestrator: {host_id: bad_id}\n", encoding="utf-8")
    message = settings_error(env_for(path, BIGEYE_TEMPORAL_ADDRESS="t:1"))
    assert "orchestrator.host_id" in message
    assert str(path) in message


def test_missing_host_id(tmp_path):
    path = tmp_path / "bigeye_agent.yml"
    path.write_text("orchestrator: {temporal: {address: 't:1'}}\n", encoding="utf-8")
    message = settings_error(env_for(path))
    assert "BIGEYE_HOST_ID" in message
    assert "orchestrator.host_id" in message


def test_missing_address(tmp_path):
    path = tmp_path / "bigeye_agent.yml"
    path.write_text("orchestrator: {host_id: h1}\n", encoding="utf-8")
    message = settings_error(env_for(path))
    assert "BIGEYE_TEMPORAL_ADDRESS" in message
    assert "orchestrator.temporal.address" in message


@pytest.mark.parametrize("value", ["0", "x", "-1", "1.5", " "])
def test_bad_max_concurrent_jobs(config, value):
    message = settings_error(env_for(config, BIGEYE_MAX_CONCURRENT_JOBS=value))
    assert "BIGEYE_MAX_CONCURRENT_JOBS" in message


@pytest.mark.parametrize("name", ["BIGEYE_HEALTH_ADDR", "BIGEYE_METRICS_ADDR"])
@pytest.mark.parametrize("value", ["9464", "localhost", "127.0.0.1:x", "127.0.0.1:65536", ":-1"])
def test_a_listen_address_that_is_not_host_port_names_the_variable(config, name, value):
    message = settings_error(env_for(config, **{name: value}))
    assert message.startswith(f"{name} {value!r} must be HOST:PORT"), message


@pytest.mark.parametrize("name", ["BIGEYE_HEALTH_ADDR", "BIGEYE_METRICS_ADDR"])
def test_port_zero_asks_for_any_free_port(config, name):
    settings, _ = load_settings(env=env_for(config, **{name: "127.0.0.1:0"}))
    assert getattr(settings, name.removeprefix("BIGEYE_").lower()) == "127.0.0.1:0"


def test_bad_log_format(config):
    assert "BIGEYE_LOG_FORMAT" in settings_error(env_for(config, BIGEYE_LOG_FORMAT="xml"))


def test_missing_config_file_names_the_path(tmp_path):
    path = tmp_path / "absent.yml"
    message = settings_error(env_for(path))
    assert str(path) in message


def test_broken_config_file_names_the_key(tmp_path):
    path = tmp_path / "bigeye_agent.yml"
    path.write_text("agents: {datahealth: {image: x, memory: lots}}\n", encoding="utf-8")
    assert "agents.datahealth.memory" in settings_error(env_for(path))


# ---- host directory ------------------------------------------------------------------------


def test_host_dir_defaults_to_the_config_files_directory(config):
    settings, _ = load_settings(env=env_for(config))
    assert settings.host_dir == str(config.resolve().parent)


def test_host_dir_default_is_absolute_for_a_relative_config_path(config, monkeypatch):
    monkeypatch.chdir(config.parent)
    settings, _ = load_settings(env=env_for(Path("bigeye_agent.yml")))
    assert settings.host_dir == str(config.resolve().parent)
    assert settings.host_dir.startswith("/")


@pytest.mark.parametrize(
    ("given", "expected"), [("/srv/bigeye", "/srv/bigeye"), ("/srv/bigeye/", "/srv/bigeye")]
)
def test_host_dir_from_the_environment(config, given, expected):
    settings, _ = load_settings(env=env_for(config, BIGEYE_AGENT_HOST_DIR=given))
    assert settings.host_dir == expected


@pytest.mark.parametrize("given", ["relative/dir", "./bigeye", "~/bigeye"])
def test_relative_host_dir_is_an_error(config, given):
    assert "BIGEYE_AGENT_HOST_DIR" in settings_error(env_for(config, BIGEYE_AGENT_HOST_DIR=given))


def test_load_host_rereads_the_file(config):
    settings, _ = load_settings(env=env_for(config))
    config.write_text(CONFIG.replace("reg/dh:1", "reg/dh:2"), encoding="utf-8")
    assert settings.load_host().agents["datahealth"].image == "reg/dh:2"
