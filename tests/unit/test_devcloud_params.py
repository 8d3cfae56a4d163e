"""`bigeye-cloud-dev run`: --param parsing, run ids, the request and its execution timeout."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from devcloud import cli, runs
from orchestrator.contract import ID_PATTERN, parse_job_request


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("file_name=x.yml", ("file_name", "x.yml")),
        ("no_sync=true", ("no_sync", True)),
        ("timeout=30", ("timeout", 30)),
        ("ratio=1.5", ("ratio", 1.5)),
        ("command=null", ("command", None)),
        ('connectors=["a","b"]', ("connectors", ["a", "b"])),
        ('obj={"k": 1}', ("obj", {"k": 1})),
        ('quoted="true"', ("quoted", "true")),
        ("empty=", ("empty", "")),
        ("eq=a=b", ("eq", "a=b")),
        ("spaces=hello world", ("spaces", "hello world")),
    ],
)
def test_parse_param_takes_json_else_string(spec, expected):
    assert runs.parse_param(spec) == expected


@pytest.mark.parametrize("spec", ["novalue", "=x", ""])
def test_parse_param_rejects_a_spec_without_key(spec):
    with pytest.raises(ValueError):
        runs.parse_param(spec)


def test_string_for_a_list_parameter_becomes_one_item_list():
    assert runs.build_parameters("lineage_plus", ["connectors=snowflake"]) == {
        "connectors": ["snowflake"]
    }


def test_json_list_for_a_list_parameter_is_kept():
    assert runs.build_parameters("lineage_plus", ['connectors=["a","b"]']) == {
        "connectors": ["a", "b"]
    }


def test_repeated_list_parameter_accumulates():
    params = runs.build_parameters(
        "lineage_plus", ["connectors=snowflake", 'connectors=["dbt"]', "no_sync=true"]
    )
    assert params == {"connectors": ["snowflake", "dbt"], "no_sync": True}


def test_scalar_parameters_are_not_wrapped_and_later_wins():
    params = runs.build_parameters("datahealth", ["file_name=a.yml", "file_name=b.yml"])
    assert params == {"file_name": "b.yml"}
    assert runs.build_parameters("external_monitors", ["connector=dbt"]) == {"connector": "dbt"}


def test_unknown_agent_or_key_is_passed_through_for_the_workflow_to_reject():
    assert runs.build_parameters("nope", ["connectors=x"]) == {"connectors": "x"}
    assert runs.build_parameters("lineage_plus", ["bogus=x"]) == {"bogus": "x"}


def test_non_string_for_a_list_parameter_is_left_alone():
    assert runs.build_parameters("lineage_plus", ["connectors=5"]) == {"connectors": 5}


def test_is_list_parameter():
    assert runs.is_list_parameter("lineage_plus", "connectors")
    assert not runs.is_list_parameter("lineage_plus", "connection_name")
    assert not runs.is_list_parameter("datahealth", "file_name")
    assert not runs.is_list_parameter("unknown", "connectors")


def test_run_id_shape():
    now = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    run_id = runs.new_run_id(now)
    assert re.fullmatch(r"r20250304050607[0-9a-f]{6}", run_id)
    assert re.fullmatch(ID_PATTERN, run_id)


def test_run_ids_are_utc_and_unique():
    assert re.fullmatch(r"r\d{14}[0-9a-f]{6}", runs.new_run_id())
    assert len({runs.new_run_id() for _ in range(200)}) == 200
    local = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC).astimezone()
    assert runs.new_run_id(local).startswith("r20250304050607")


def test_request_is_plain_json_that_the_contract_accepts():
    request = runs.build_request(
        job_id="h1-datahealth",
        run_id=runs.new_run_id(),
        agent="datahealth",
        parameters=runs.build_parameters("datahealth", ["file_name=x.yml"]),
    )
    assert "timeout_seconds" not in request
    assert request["requested_by"] == "bigeye-cloud-dev"
    parsed = parse_job_request(request)
    assert parsed.command() == ["datahealth", "run", "--file-name", "x.yml"]


def test_request_carries_timeout_when_given():
    request = runs.build_request(
        job_id="j", run_id="r1", agent="lineage_plus", parameters={}, timeout_seconds=60
    )
    assert request["timeout_seconds"] == 60


def test_execution_timeout_is_queue_wait_plus_run_timeout_plus_margin():
    assert runs.execution_timeout("datahealth", None) == timedelta(seconds=3600 + 3600 + 300)
    assert runs.execution_timeout("lineage_plus", None) == timedelta(seconds=3600 + 21600 + 300)
    assert runs.execution_timeout("datahealth", 60, 10) == timedelta(seconds=10 + 60 + 300)
    # a bad timeout is the workflow's to reject; the execution timeout stays sane
    assert runs.execution_timeout("datahealth", -5) == timedelta(seconds=3600 + 3600 + 300)


def test_cli_parses_run_with_state_dir_after_the_command():
    args = cli.build_parser().parse_args(
        ["run", "--host", "h1", "--agent", "lineage_plus", "--param", "connectors=a",
         "--state-dir", "/tmp/x", "--wait"]
    )  # fmt: skip
    assert str(args.state_dir) == "/tmp/x"
    assert args.param == ["connectors=a"] and args.wait and args.job is None
    assert args.queue_wait_seconds == runs.QUEUE_WAIT_SECONDS


def test_cli_state_dir_defaults_to_dot_devcloud():
    args = cli.build_parser().parse_args(["cancel", "--run", "r1"])
    assert str(cli._state_dir(args)) == ".devcloud"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["run", "--host", "h1"],
        ["run", "--host", "h1", "--agent", "datahealth", "--param", "novalue"],
        ["run", "--host", "h1", "--agent", "datahealth", "--timeout-seconds", "abc"],
        ["cancel"],
        ["bogus"],
    ],
)
def test_usage_errors_exit_2(argv):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2


def test_run_without_server_exits_1(tmp_path, capsys):
    code = cli.main(["run", "--host", "h1", "--agent", "datahealth", "--state-dir", str(tmp_path)])
    assert code == 1
    assert "not running" in capsys.readouterr().err


def test_cancel_without_server_exits_1(tmp_path, capsys):
    assert cli.main(["cancel", "--run", "r1", "--state-dir", str(tmp_path)]) == 1
    assert "not running" in capsys.readouterr().err
