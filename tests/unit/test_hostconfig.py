"""orchestrator/hostconfig.py: the agent set in bigeye_agent.yml (design §8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.hostconfig import (
    ConfigError,
    agent_config_dir,
    load_host_config,
    parse_host_config,
    parse_size,
)

PATH = Path("/srv/bigeye/bigeye_agent.yml")


def config_error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_host_config(text, PATH)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{PATH}: ")
    return message


def test_full_example_of_the_design_parses():
    text = """\
docker_compose_enabled: true
orchestrator:
  host_id: prod-agent-01
  instance_id: 3f0c9a6e-1111
  temporal: {address: app-workflows.bigeye.com:443, namespace: default, server_name: null}
  image: null
registry: {server: docker.io, username: bigeyedata, password_file: agent_config/docker_token}
agents:
  lineage_plus: {image: docker.io/bigeyedata/lineage-plus-connector:latest, memory: 25g, cpus: 4}
  datahealth: {image: docker.io/bigeyedata/datahealth:1}
"""
    host = parse_host_config(text, PATH)
    assert host.docker_compose_enabled is True
    assert host.orchestrator.host_id == "prod-agent-01"
    assert host.orchestrator.temporal.address == "app-workflows.bigeye.com:443"
    assert host.registry is not None and host.registry.username == "bigeyedata"
    assert sorted(host.agents) == ["datahealth", "lineage_plus"]
    assert host.agents["lineage_plus"].memory_bytes == 25 * 1024**3
    assert host.agents["lineage_plus"].cpus == 4.0


def test_unrelated_top_level_keys_are_ignored():
    text = """\
company_uuid: abc
workflows: [a, b]
source_db: {host: db, port: 5432, anything: {nested: true}}
agents:
  datahealth: {image: x}
"""
    host = parse_host_config(text, PATH)
    assert list(host.agents) == ["datahealth"]
    assert not hasattr(host, "company_uuid")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "agents:\n", "agents: null\n"])
def test_empty_file_or_agents_means_no_agents(text):
    host = parse_host_config(text, PATH)
    assert host.agents == {}
    assert host.docker_compose_enabled is False
    assert host.orchestrator.temporal.namespace == "default"


def test_agent_defaults():
    agent = parse_host_config("agents: {datahealth: {image: x}}", PATH).agents["datahealth"]
    assert agent.config_dir is None
    assert agent_config_dir("datahealth", agent) == "agent_config/datahealth"
    assert agent.env == {}
    assert agent.timeout_seconds is None
    assert agent.stop_grace_seconds == 10
    assert agent.memory_bytes == 2 * 1024**3
    assert agent.cpus == 1.0
    assert agent.pids_limit == 512
    assert agent.max_concurrent == 1


@pytest.mark.parametrize(
    ("agent", "timeout"),
    [("lineage_plus", 21600), ("datahealth", 3600), ("external_monitors", 3600)],
)
def test_default_agent_timeouts(agent, timeout):
    host = parse_host_config(f"agents: {{{agent}: {{image: x}}}}", PATH)
    assert host.agent_timeout(agent) == timeout


def test_configured_values_are_kept():
    text = """\
agents:
  external_monitors:
    image: reg/em:2
    config_dir: configs/em
    env: {MODE: 'yes', UMASK: '0755', EMPTY: ''}
    timeout_seconds: 90
    stop_grace_seconds: 0
    memory: 512m
    cpus: 0.5
    pids_limit: 16
    max_concurrent: 3
"""
    host = parse_host_config(text, PATH)
    agent = host.agents["external_monitors"]
    assert agent_config_dir("external_monitors", agent) == "configs/em"
    assert agent.env == {"MODE": "yes", "UMASK": "0755", "EMPTY": ""}
    assert host.agent_timeout("external_monitors") == 90
    assert agent.stop_grace_seconds == 0
    assert agent.memory_bytes == 512 * 1024**2
    assert agent.cpus == 0.5
    assert agent.pids_limit == 16
    assert agent.max_concurrent == 3


@pytest.mark.parametrize(
    ("agent_yaml", "key"),
    [
        ("{image: x, memory: lots}", "agents.datahealth.memory"),
        ("{image: x, memory: 5m}", "agents.datahealth.memory"),
        ("{image: x, memory: 0}", "agents.datahealth.memory"),
        ("{image: x, memory: [1]}", "agents.datahealth.memory"),
        ("{image: x, cpus: 0}", "agents.datahealth.cpus"),
        ("{image: x, cpus: -1}", "agents.datahealth.cpus"),
        ("{image: x, cpus: many}", "agents.datahealth.cpus"),
        ("{image: x, pids_limit: 8}", "agents.datahealth.pids_limit"),
        ("{image: x, timeout_seconds: 0}", "agents.datahealth.timeout_seconds"),
        ("{image: x, timeout_seconds: 1.5}", "agents.datahealth.timeout_seconds"),
        ("{image: x, stop_grace_seconds: -1}", "agents.datahealth.stop_grace_seconds"),
        ("{image: x, max_concurrent: 0}", "agents.datahealth.max_concurrent"),
        ("{image: x, config_dir: ../x}", "agents.datahealth.config_dir"),
        ("{image: x, config_dir: a/../../x}", "agents.datahealth.config_dir"),
        ("{image: x, config_dir: /abs}", "agents.datahealth.config_dir"),
        ("{image: x, config_dir: ''}", "agents.datahealth.config_dir"),
        ("{image: x, env: {A: 1}}", "agents.datahealth.env"),
        ("{image: x, env: {A: true}}", "agents.datahealth.env"),
        ("{image: x, env: [A=1]}", "agents.datahealth.env"),
        ("{image: x, entrypoint: sh}", "agents.datahealth.entrypoint"),
        ("{image: x, privileged: true}", "agents.datahealth.privileged"),
        ("{memory: 2g}", "agents.datahealth.image"),
        ("{image: ''}", "agents.datahealth.image"),
        ("{image: 'a b'}", "agents.datahealth.image"),
        ("null", "agents.datahealth"),
        ("[x]", "agents.datahealth"),
    ],
)
def test_bad_agent_values_name_the_dotted_key(agent_yaml, key):
    message = config_error(f"agents:\n  datahealth: {agent_yaml}\n")
    assert f": {key}" in message


def test_env_error_tells_to_quote_the_value():
    message = config_error("agents: {datahealth: {image: x, env: {A: 1}}}")
    assert "quote" in message
    assert "A" in message


def test_unknown_key_inside_an_agent_is_called_unknown():
    message = config_error("agents: {datahealth: {image: x, volumes: [/:/host]}}")
    assert message == f"{PATH}: agents.datahealth.volumes: unknown key"


def test_unknown_agent_type_is_rejected():
    message = config_error("agents: {spark: {image: x}}")
    assert "agents" in message
    assert "spark" in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("orchestrator: {host_id: 'bad id'}", "orchestrator.host_id"),
        ("orchestrator: {host_id: -x}", "orchestrator.host_id"),
        ("orchestrator: {surprise: 1}", "orchestrator.surprise"),
        ("orchestrator: {temporal: {adress: x}}", "orchestrator.temporal.adress"),
        ("registry: {server: x, token: y}", "registry.token"),
        ("docker_compose_enabled: maybe", "docker_compose_enabled"),
        ("agents: [datahealth]", "agents"),
        ("orchestrator: [x]", "orchestrator"),
    ],
)
def test_bad_orchestrator_values_name_the_dotted_key(text, key):
    assert f": {key}:" in config_error(text)


def test_several_problems_are_counted_on_the_one_line():
    message = config_error("agents: {datahealth: {image: x, cpus: 0, pids_limit: 8}}")
    assert "agents.datahealth.cpus" in message
    assert "(and 1 more problem)" in message


def test_yaml_syntax_error_names_the_line():
    message = config_error("agents:\n  datahealth: {image: x\n  bad: [\n")
    assert "line " in message
    assert "YAML" in message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a: 1\nb: 2\n  c: 3\n", 3),
        ("a: 1\n\tb: 2\n", 2),
        ("agents:\n  datahealth:\n    image: x\n   memory: 1g\n", 4),
    ],
)
def test_yaml_syntax_error_names_the_offending_line(text, line):
    assert f"at line {line}," in config_error(text)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(text):
    assert "mapping" in config_error(text)


@pytest.mark.parametrize("key", ["timeout_seconds", "max_concurrent", "stop_grace_seconds"])
def test_boolean_for_an_integer_is_rejected(key):
    assert f"agents.datahealth.{key}" in config_error(
        f"agents: {{datahealth: {{image: x, {key}: true}}}}"
    )


def test_boolean_for_cpus_is_rejected():
    assert "agents.datahealth.cpus" in config_error("agents: {datahealth: {image: x, cpus: true}}")


@pytest.mark.parametrize("config_dir", [".", "./"])
def test_config_dir_of_the_host_directory_itself_is_rejected(config_dir):
    message = config_error(f"agents: {{datahealth: {{image: x, config_dir: '{config_dir}'}}}}")
    assert "agents.datahealth.config_dir" in message


# ---- files ---------------------------------------------------------------------------------


def test_load_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope" / "bigeye_agent.yml"
    with pytest.raises(ConfigError) as info:
        load_host_config(path)
    assert str(path) in str(info.value)
    assert "not found" in str(info.value)
    assert "\n" not in str(info.value)


def test_load_reads_the_file(tmp_path):
    path = tmp_path / "bigeye_agent.yml"
    path.write_text("agents: {datahealth: {image: x, memory: 1g}}\n", encoding="utf-8")
    assert load_host_config(path).agents["datahealth"].memory_bytes == 1024**3


def test_load_error_names_the_real_path(tmp_path):
    path = tmp_path / "bigeye_agent.yml"
    path.write_text("agents: {datahealth: {image: x, cpus: 0}}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_host_config(path)
    assert str(info.value).startswith(f"{path}: agents.datahealth.cpus:")


def test_load_non_utf8_file_is_a_config_error(tmp_path):
    path = tmp_path / "bigeye_agent.yml"
    path.write_bytes(b"agents: {datahealth: {image: \xff}}\n")
    with pytest.raises(ConfigError) as info:
        load_host_config(path)
    assert str(path) in str(info.value)


# ---- sizes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("512m", 512 * 1024**2),
        ("512M", 512 * 1024**2),
        ("512mb", 512 * 1024**2),
        ("25g", 25 * 1024**3),
        ("1.5g", 3 * 1024**3 // 2),
        ("64k", 64 * 1024),
        ("1t", 1024**4),
        ("100", 100),
        ("100b", 100),
        (" 2g ", 2 * 1024**3),
        (1048576, 1048576),
    ],
)
def test_parse_size(value, size):
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["lots", "", "5x", "-5m", "m", "1.2.3g", "5 gigs", True, False])
def test_parse_size_rejects(value):
    with pytest.raises(ValueError):
        parse_size(value)


def test_a_message_keeps_the_spaces_of_a_key_it_quotes(tmp_path: Path) -> None:
    """One line, but a key of two spaces is shown as two spaces (found by the fuzz test)."""
    path = tmp_path / "bigeye_agent.yml"
    with pytest.raises(ConfigError) as refused:
        parse_host_config("agents:\n  '  ':\n    image: x\n", path)
    assert "unknown agent type '  ' (expected one of" in str(refused.value)
    assert str(refused.value).splitlines() == [str(refused.value)]
