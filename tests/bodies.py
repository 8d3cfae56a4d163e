"""The orchestrator's own create body for a run, as the policy and proxy tests start from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from activities.agents import JobPlan, resolve
from orchestrator.contract import parse_job_request
from orchestrator.hostconfig import HostConfig


def plan_for(
    host: HostConfig,
    request: dict[str, Any],
    *,
    host_id: str,
    host_dir: str,
    version: str = "1.2.3",
    workflow_run_id: str = "0b6a1b3c-run",
) -> JobPlan:
    resolution = resolve(
        parse_job_request(request),
        host,
        host_id,
        host_dir=host_dir,
        config_root=Path(host_dir),
        version=version,
        workflow_run_id=workflow_run_id,
    )
    assert resolution.plan is not None, resolution.message
    return resolution.plan


def compliant_body(
    *, host_id: str, host_dir: str, image: str = "reg/dh:1", version: str = "1.2.3"
) -> dict[str, Any]:
    """A datahealth run's create body: job-1/run-1, the agent's defaults."""
    host = HostConfig.model_validate({"agents": {"datahealth": {"image": image}}})
    request = {
        "job_id": "job-1",
        "run_id": "run-1",
        "agent": "datahealth",
        "parameters": {"file_name": "checks.yml"},
    }
    return plan_for(host, request, host_id=host_id, host_dir=host_dir, version=version).create_body
