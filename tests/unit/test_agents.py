"""activities/agents.py: from a request and the host's agent set to a plan and a create body."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from activities.agents import JobPlan, Resolution, resolve
from orchestrator.contract import (
    LABEL_AGENT,
    LABEL_HOST_ID,
    LABEL_JOB_ID,
    LABEL_MANAGED,
    LABEL_RUN_ID,
    LABEL_VERSION,
    LABEL_WORKFLOW_ID,
    LABEL_WORKFLOW_RUN_ID,
    JobRunRequest,
    parse_job_request,
)
from orchestrator.hostconfig import AgentConfig, HostConfig
from orchestrator.policy import structural_violations

HOST_ID = "prod-agent-01"
HOST_DIR = "/srv/bigeye"

PARAMETERS = {
    "lineage_plus": {"connectors": ["snowflake"]},
    "datahealth": {"file_name": "checks.yml"},
    "external_monitors": {"connector": "snowflake"},
}


def host(**agents: dict[str, Any]) -> HostConfig:
    return HostConfig.model_validate({"agents": agents})


def request(agent: str, **extra: Any) -> JobRunRequest:
    raw = {"job_id": "job-1", "run_id": "run-9", "agent": agent, "parameters": PARAMETERS[agent]}
    return parse_job_request({**raw, **extra})


def resolve_for(agent: str, hc: HostConfig, **extra: Any) -> Resolution:
    return resolve(
        request(agent, **extra),
        hc,
        HOST_ID,
        host_dir=HOST_DIR,
        config_root=Path("/etc/bigeye"),
        version="9.9.9",
        workflow_id="agent-job-job-1",
        workflow_run_id="temporal-run-1",
    )


def plan_for(agent: str, config: dict[str, Any], **extra: Any) -> tuple[JobPlan, HostConfig]:
    hc = host(**{agent: config})
    resolution = resolve_for(agent, hc, **extra)
    assert resolution.outcome == "ok", resolution.message
    assert resolution.plan is not None
    return resolution.plan, hc


def body_for(agent: str, config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return plan_for(agent, config, **extra)[0].create_body


# ---- resolve -------------------------------------------------------------------------------


def test_resolve_ok_builds_the_plan():
    plan, _ = plan_for("datahealth", {"image": "reg/dh:2", "stop_grace_seconds": 30})
    assert plan.host_id == HOST_ID
    assert plan.workflow_id == "agent-job-job-1"
    assert plan.container_name == "bigeye-job-job-1-run-9"
    assert plan.image == "reg/dh:2"
    assert plan.stop_grace_seconds == 30
    assert plan.max_concurrent == 1
    assert plan.request.run_id == "run-9"


def test_resolve_not_installed_lists_the_installed_agents():
    resolution = resolve_for("lineage_plus", host(datahealth={"image": "x"}))
    assert resolution.outcome == "not_installed"
    assert resolution.plan is None
    assert "lineage_plus" in (resolution.message or "")
    assert "datahealth" in (resolution.message or "")
    assert HOST_ID in (resolution.message or "")


def test_resolve_not_installed_on_a_host_without_agents():
    resolution = resolve_for("datahealth", host())
    assert resolution.outcome == "not_installed"
    assert "none" in (resolution.message or "")


@pytest.mark.parametrize(
    ("agent", "expected"),
    [("lineage_plus", 21600), ("datahealth", 3600), ("external_monitors", 3600)],
)
def test_default_timeouts(agent, expected):
    plan, _ = plan_for(agent, {"image": "x"})
    assert plan.timeout_seconds == expected


def test_configured_agent_timeout_replaces_the_default():
    plan, _ = plan_for("lineage_plus", {"image": "x", "timeout_seconds": 120})
    assert plan.timeout_seconds == 120


@pytest.mark.parametrize("timeout", [1, 59, 3600])
def test_request_timeout_is_used_when_given(timeout):
    plan, _ = plan_for("datahealth", {"image": "x"}, timeout_seconds=timeout)
    assert plan.timeout_seconds == timeout


@pytest.mark.parametrize(
    ("agent", "config", "timeout"),
    [
        ("datahealth", {"image": "x"}, 3601),
        ("lineage_plus", {"image": "x"}, 21601),
        ("external_monitors", {"image": "x", "timeout_seconds": 10}, 11),
    ],
)
def test_request_timeout_above_the_agents_is_invalid(agent, config, timeout):
    resolution = resolve_for(agent, host(**{agent: config}), timeout_seconds=timeout)
    assert resolution.outcome == "invalid"
    assert resolution.plan is None
    assert (resolution.message or "").startswith("timeout_seconds:")
    assert str(timeout) in (resolution.message or "")


def test_lineage_request_timeout_above_3600_is_fine():
    plan, _ = plan_for("lineage_plus", {"image": "x"}, timeout_seconds=21600)
    assert plan.timeout_seconds == 21600


# ---- create body ---------------------------------------------------------------------------


def test_env_is_sorted_then_job_and_run_ids():
    body = body_for("datahealth", {"image": "x", "env": {"ZED": "1", "ALPHA": "yes", "MID": ""}})
    assert body["Env"] == [
        "ALPHA=yes",
        "MID=",
        "ZED=1",
        "BIGEYE_JOB_ID=job-1",
        "BIGEYE_RUN_ID=run-9",
    ]


def test_env_without_agent_env_has_only_the_ids():
    assert body_for("datahealth", {"image": "x"})["Env"] == [
        "BIGEYE_JOB_ID=job-1",
        "BIGEYE_RUN_ID=run-9",
    ]


@pytest.mark.parametrize(
    ("cpus", "nano"),
    [(1, 1_000_000_000), (0.5, 500_000_000), (4, 4_000_000_000), (0.1, 100_000_000)],
)
def test_nano_cpus_from_cpus(cpus, nano):
    body = body_for("datahealth", {"image": "x", "cpus": cpus})
    assert body["HostConfig"]["NanoCpus"] == nano
    assert isinstance(body["HostConfig"]["NanoCpus"], int)


@pytest.mark.parametrize(
    ("memory", "expected"),
    [("512m", 512 * 1024**2), ("25g", 25 * 1024**3), (None, 2 * 1024**3)],
)
def test_memory_and_swap_from_the_agent_size(memory, expected):
    config = {"image": "x"} if memory is None else {"image": "x", "memory": memory}
    hc = body_for("datahealth", config)["HostConfig"]
    assert hc["Memory"] == expected
    assert hc["MemorySwap"] == expected


def test_pids_limit_default_and_configured():
    assert body_for("datahealth", {"image": "x"})["HostConfig"]["PidsLimit"] == 512
    assert body_for("datahealth", {"image": "x", "pids_limit": 64})["HostConfig"]["PidsLimit"] == 64


@pytest.mark.parametrize("agent", ["lineage_plus", "datahealth", "external_monitors"])
def test_default_config_bind(agent):
    body = body_for(agent, {"image": "x"})
    assert body["HostConfig"]["Binds"] == [f"{HOST_DIR}/agent_config/{agent}:/app/config:ro"]


@pytest.mark.parametrize(
    ("config_dir", "source"),
    [
        ("configs/dh", f"{HOST_DIR}/configs/dh"),
        ("./configs//dh/", f"{HOST_DIR}/configs/dh"),
    ],
)
def test_custom_config_dir_bind(config_dir, source):
    body = body_for("datahealth", {"image": "x", "config_dir": config_dir})
    assert body["HostConfig"]["Binds"] == [f"{source}:/app/config:ro"]


def test_image_and_command_come_from_agent_set_and_request():
    body = body_for("lineage_plus", {"image": "docker.io/bigeyedata/lineage:1"})
    assert body["Image"] == "docker.io/bigeyedata/lineage:1"
    assert body["Cmd"] == ["lineage", "run", "-c", "snowflake"]


def test_labels_are_all_present():
    body = body_for("external_monitors", {"image": "x"})
    assert body["Labels"] == {
        LABEL_MANAGED: "true",
        LABEL_HOST_ID: HOST_ID,
        LABEL_JOB_ID: "job-1",
        LABEL_RUN_ID: "run-9",
        LABEL_AGENT: "external_monitors",
        LABEL_WORKFLOW_ID: "agent-job-job-1",
        LABEL_WORKFLOW_RUN_ID: "temporal-run-1",
        LABEL_VERSION: "9.9.9",
    }


def test_the_plan_carries_the_finished_body_and_the_registry_login():
    hc = HostConfig.model_validate(
        {
            "agents": {"datahealth": {"image": "registry.example.com/bigeye/dh:3"}},
            "registry": {"server": "registry.example.com", "username": "u",
                         "password_file": "agent_config/docker_token"},
        }
    )  # fmt: skip
    plan = resolve_for("datahealth", hc).plan
    assert plan is not None
    assert plan.create_body["Image"] == plan.image == "registry.example.com/bigeye/dh:3"
    assert plan.registry is not None
    assert plan.registry.password_file == "/etc/bigeye/agent_config/docker_token"
    other = HostConfig.model_validate({**hc.model_dump(), "agents": {"datahealth": {"image": "x"}}})
    assert resolve_for("datahealth", other).plan.registry is None  # not that registry's image


def test_an_agent_entry_that_breaks_the_policy_is_rejected_with_the_reason():
    # the loader refuses such an entry at start-up; resolution checks again, in case
    entry = AgentConfig.model_construct(image="x", env={"NOT A NAME": "1"})
    hc = HostConfig.model_construct(agents={"datahealth": entry})
    resolution = resolve_for("datahealth", hc)
    assert resolution.outcome == "rejected" and resolution.plan is None
    assert resolution.image == "x"
    assert resolution.message is not None and "agents.datahealth" in resolution.message
    assert "Env" in resolution.message


def test_hardening_fields():
    hc = body_for("datahealth", {"image": "x"})["HostConfig"]
    assert hc["NetworkMode"] == "bigeye-jobs"
    assert hc["CapDrop"] == ["ALL"]
    assert hc["SecurityOpt"] == ["no-new-privileges:true"]
    assert hc["LogConfig"]["Type"] == "json-file"
    assert set(hc["LogConfig"]["Config"]) == {"max-size", "max-file"}


@pytest.mark.parametrize("agent", ["lineage_plus", "datahealth", "external_monitors"])
def test_every_agent_body_passes_the_structural_policy(agent):
    config = {"image": "x", "env": {"A": "1"}, "memory": "25g", "cpus": 4, "pids_limit": 16}
    body = body_for(agent, config)
    assert structural_violations(body, host_id=HOST_ID, host_dir=HOST_DIR) == []
