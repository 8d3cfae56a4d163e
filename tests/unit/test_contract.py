"""orchestrator/contract.py: the v1 wire contract (design §3, §4)."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.contract import (
    DataHealthParameters,
    ExternalMonitorsParameters,
    InvalidRequest,
    LineagePlusParameters,
    container_name,
    heartbeat_workflow_id,
    is_valid_host_id,
    job_workflow_id,
    parse_job_request,
    render_command,
    task_queue,
)

LINEAGE = {"job_id": "job-1", "run_id": "run.1", "agent": "lineage_plus", "parameters": {}}
DATAHEALTH = {
    "job_id": "job_2",
    "run_id": "r2",
    "agent": "datahealth",
    "parameters": {"file_name": "checks.yml"},
}
EXTERNAL = {
    "job_id": "J3",
    "run_id": "R3",
    "agent": "external_monitors",
    "parameters": {"connector": "snowflake"},
}


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


def with_params(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**base, "parameters": {**base["parameters"], **changes}}


def rejection(raw: Any) -> str:
    with pytest.raises(InvalidRequest) as info:
        parse_job_request(raw)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---- accepted requests ---------------------------------------------------------------------


@pytest.mark.parametrize("raw", [LINEAGE, DATAHEALTH, EXTERNAL], ids=lambda r: r["agent"])
def test_minimal_request_of_each_agent_is_accepted(raw):
    request = parse_job_request(raw)
    assert request.job_id == raw["job_id"]
    assert request.run_id == raw["run_id"]
    assert request.agent == raw["agent"]
    assert request.timeout_seconds is None
    assert request.requested_by is None


def test_lineage_parameters_default_to_all_connectors_and_no_flags():
    params = parse_job_request(LINEAGE).typed_parameters()
    assert params == LineagePlusParameters(
        connectors=[], connection_name=None, no_sync=False, skip_notifications=False
    )


def test_parameters_key_may_be_omitted_for_lineage():
    raw = {k: v for k, v in LINEAGE.items() if k != "parameters"}
    assert parse_job_request(raw).command() == ["lineage", "run"]


def test_full_lineage_request_is_accepted():
    raw = with_(
        LINEAGE,
        parameters={
            "connectors": ["snowflake", "dbt_core", "a-1"],
            "connection_name": "Prod.Conn_1",
            "no_sync": True,
            "skip_notifications": True,
        },
        timeout_seconds=60,
        requested_by="alice@example.com",
    )
    request = parse_job_request(raw)
    assert request.timeout_seconds == 60
    assert request.requested_by == "alice@example.com"
    params = request.typed_parameters()
    assert isinstance(params, LineagePlusParameters)
    assert params.connectors == ["snowflake", "dbt_core", "a-1"]
    assert params.no_sync is True


@pytest.mark.parametrize(
    "raw",
    [
        with_(LINEAGE, timeout_seconds=None, requested_by=None),
        with_params(LINEAGE, connection_name=None),
        with_params(DATAHEALTH, command=None),
        with_(EXTERNAL, timeout_seconds=None),
    ],
    ids=["top-level", "connection_name", "command", "external"],
)
def test_null_optional_keys_are_the_same_as_omitted(raw):
    request = parse_job_request(raw)
    stripped = {k: v for k, v in raw.items() if v is not None}
    stripped["parameters"] = {k: v for k, v in raw["parameters"].items() if v is not None}
    omitted = parse_job_request(stripped)
    assert request.typed_parameters() == omitted.typed_parameters()
    assert request.command() == omitted.command()
    assert (request.timeout_seconds, request.requested_by) == (None, None)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("job_id", "a" * 128),
        ("run_id", "0"),
        ("job_id", "A.b_c-d"),
        ("requested_by", "x" * 256),
        ("requested_by", ""),
        ("timeout_seconds", 1),
    ],
)
def test_boundary_values_are_accepted(key, value):
    assert getattr(parse_job_request(with_(LINEAGE, **{key: value})), key) == value


# ---- rejected requests ---------------------------------------------------------------------


@pytest.mark.parametrize("raw", [None, [], "{}", 42, ["job_id"]], ids=repr)
def test_non_object_input_is_rejected(raw):
    assert "JSON object" in rejection(raw)


@pytest.mark.parametrize("key", ["job_id", "run_id"])
@pytest.mark.parametrize(
    "value",
    ["has space", ".leading-dot", "a" * 129, "", "-x", "a/b", "a\n", "ünï", 7],
    ids=[
        "space",
        "leading-dot",
        "129-chars",
        "empty",
        "leading-hyphen",
        "slash",
        "nl",
        "uni",
        "int",
    ],
)
def test_bad_ids_are_rejected_naming_the_key(key, value):
    message = rejection(with_(LINEAGE, **{key: value}))
    assert message.startswith(f"{key}:")


def test_unknown_top_level_key_is_rejected():
    message = rejection(with_(LINEAGE, image="evil:latest"))
    assert message == "image: unknown key"


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (with_params(LINEAGE, entrypoint="sh"), "entrypoint"),
        (with_params(DATAHEALTH, connectors=["x"]), "connectors"),
        (with_params(EXTERNAL, file_name="x.yml"), "file_name"),
    ],
)
def test_unknown_parameter_key_is_rejected(raw, key):
    assert rejection(raw) == f"parameters.{key}: unknown key"


def test_unknown_agent_is_rejected():
    assert rejection(with_(LINEAGE, agent="spark")).startswith("agent:")


@pytest.mark.parametrize(
    "file_name",
    ["../etc/passwd", "/etc/passwd", "..", "a/b", "a..b", "x..", ".hidden", "a b", "a" * 256],
)
def test_bad_file_names_are_rejected(file_name):
    message = rejection(with_params(DATAHEALTH, file_name=file_name))
    assert message.startswith("parameters.file_name:")


def test_file_name_is_required_for_datahealth():
    assert rejection(with_(DATAHEALTH, parameters={})).startswith("parameters.file_name:")


@pytest.mark.parametrize("command", ["Run", "1run", "a;b", "a b", "-x", "a" * 65])
def test_bad_datahealth_commands_are_rejected(command):
    assert rejection(with_params(DATAHEALTH, command=command)).startswith("parameters.command:")


BAD_CONNECTORS = [
    "a;b",
    "$(id)",
    "`id`",
    "a b",
    "a|b",
    "Snowflake",
    "a&b",
    "a>b",
    "",
    "-a",
    "a" * 65,
]


@pytest.mark.parametrize("connector", BAD_CONNECTORS)
def test_bad_lineage_connectors_are_rejected(connector):
    message = rejection(with_params(LINEAGE, connectors=["ok", connector]))
    assert message.startswith("parameters.connectors.1:")


@pytest.mark.parametrize("connector", BAD_CONNECTORS)
def test_bad_external_monitor_connectors_are_rejected(connector):
    assert rejection(with_params(EXTERNAL, connector=connector)).startswith("parameters.connector:")


@pytest.mark.parametrize("name", ["bad name", "-x", ".x", "a;b", "a" * 129])
def test_bad_connection_names_are_rejected(name):
    message = rejection(with_params(LINEAGE, connection_name=name))
    assert message.startswith("parameters.connection_name:")


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (with_params(LINEAGE, no_sync="true"), "parameters.no_sync"),
        (with_params(LINEAGE, skip_notifications=1), "parameters.skip_notifications"),
        (with_params(LINEAGE, no_sync=None), "parameters.no_sync"),
        (with_params(LINEAGE, connectors="snowflake"), "parameters.connectors"),
        (with_params(LINEAGE, connectors=None), "parameters.connectors"),
        (with_params(EXTERNAL, connector=["snowflake"]), "parameters.connector"),
        (with_params(DATAHEALTH, file_name=5), "parameters.file_name"),
        (with_(LINEAGE, timeout_seconds="5"), "timeout_seconds"),
        (with_(LINEAGE, timeout_seconds=1.5), "timeout_seconds"),
        (with_(LINEAGE, timeout_seconds=True), "timeout_seconds"),
        (with_(LINEAGE, requested_by=5), "requested_by"),
        (with_(LINEAGE, parameters=None), "parameters"),
        (with_(LINEAGE, parameters=["snowflake"]), "parameters"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_wrong_types_are_rejected_strictly(raw, key):
    assert rejection(raw).startswith(f"{key}:")


@pytest.mark.parametrize("value", [0, -1])
def test_timeout_below_one_is_rejected(value):
    assert rejection(with_(LINEAGE, timeout_seconds=value)).startswith("timeout_seconds:")


def test_requested_by_of_257_characters_is_rejected():
    assert rejection(with_(LINEAGE, requested_by="x" * 257)).startswith("requested_by:")


@pytest.mark.parametrize("key", ["job_id", "run_id", "agent"])
def test_required_keys_are_required(key):
    raw = {k: v for k, v in LINEAGE.items() if k != key}
    assert rejection(raw).startswith(f"{key}:")


def test_several_problems_are_reported_on_one_line():
    message = rejection(with_(LINEAGE, job_id="bad id", run_id="../x"))
    assert "job_id:" in message
    assert "run_id:" in message


# ---- command lines -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameters", "argv"),
    [
        ({}, ["lineage", "run"]),
        ({"connectors": ["snowflake"]}, ["lineage", "run", "-c", "snowflake"]),
        (
            {"connectors": ["snowflake", "dbt"], "connection_name": "prod"},
            ["lineage", "run", "-c", "snowflake", "-c", "dbt", "-n", "prod"],
        ),
        ({"no_sync": True}, ["lineage", "run", "--no-sync"]),
        ({"skip_notifications": True}, ["lineage", "run", "--skip-notifications"]),
        ({"no_sync": False, "skip_notifications": False}, ["lineage", "run"]),
        (
            {
                "skip_notifications": True,
                "no_sync": True,
                "connection_name": "c.1",
                "connectors": ["b", "a"],
            },
            [
                "lineage",
                "run",
                "-c",
                "b",
                "-c",
                "a",
                "-n",
                "c.1",
                "--no-sync",
                "--skip-notifications",
            ],
        ),
    ],
)
def test_lineage_command(parameters, argv):
    assert parse_job_request(with_(LINEAGE, parameters=parameters)).command() == argv


@pytest.mark.parametrize(
    ("parameters", "argv"),
    [
        ({"file_name": "checks.yml"}, ["datahealth", "run", "--file-name", "checks.yml"]),
        (
            {"file_name": "a.b_c-1.yaml", "command": "run-all"},
            ["datahealth", "run", "--file-name", "a.b_c-1.yaml", "--command", "run-all"],
        ),
    ],
)
def test_datahealth_command(parameters, argv):
    assert parse_job_request(with_(DATAHEALTH, parameters=parameters)).command() == argv


def test_external_monitors_command():
    assert parse_job_request(EXTERNAL).command() == [
        "external-monitors",
        "run",
        "-c",
        "snowflake",
    ]


def test_render_command_takes_typed_parameters_directly():
    assert render_command("datahealth", DataHealthParameters(file_name="f.yml")) == [
        "datahealth",
        "run",
        "--file-name",
        "f.yml",
    ]
    assert render_command("external_monitors", ExternalMonitorsParameters(connector="x")) == [
        "external-monitors",
        "run",
        "-c",
        "x",
    ]


def test_render_command_rejects_an_unknown_parameter_type():
    with pytest.raises(TypeError):
        render_command("lineage_plus", object())  # type: ignore[arg-type]


# ---- names ---------------------------------------------------------------------------------


def test_names():
    assert task_queue("prod-01") == "agent-orchestrator.prod-01"
    assert job_workflow_id("job.7") == "agent-job-job.7"
    assert heartbeat_workflow_id("prod-01") == "agent-heartbeat-prod-01"
    assert container_name("job.7", "run_3") == "bigeye-job-job.7-run_3"


@pytest.mark.parametrize(
    "host_id",
    ["a", "7", "prod-agent-01", "A-b-C", "a" * 256, "a" + "-" * 254 + "b"],
    ids=["a", "7", "typical", "mixed-case", "256", "inner-hyphens"],
)
def test_valid_host_ids(host_id):
    assert is_valid_host_id(host_id)


@pytest.mark.parametrize(
    "host_id",
    ["", "a" * 257, "a_b", "a b", "-a", "a-", "-", "a.b", "a\n", "ä"],
    ids=[
        "empty",
        "257",
        "underscore",
        "space",
        "lead-hyphen",
        "trail-hyphen",
        "hyphen",
        "dot",
        "nl",
        "umlaut",
    ],
)
def test_invalid_host_ids(host_id):
    assert not is_valid_host_id(host_id)
