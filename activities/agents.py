"""Agent resolution: from a validated request and the host's agent set to a container spec.

Pure: callers load `bigeye_agent.yml` and pass the parsed `HostConfig`.
"""

from __future__ import annotations

import posixpath
from typing import Any, Literal

from pydantic import BaseModel

from activities.policy import CONFIG_MOUNT_POINT
from orchestrator.contract import (
    JOB_NETWORK,
    LABEL_AGENT,
    LABEL_HOST_ID,
    LABEL_JOB_ID,
    LABEL_MANAGED,
    LABEL_RUN_ID,
    LABEL_VERSION,
    LABEL_WORKFLOW_ID,
    JobRunRequest,
    container_name,
    job_workflow_id,
)
from orchestrator.hostconfig import AgentConfig, HostConfig, agent_config_dir

LOG_MAX_SIZE = "10m"
LOG_MAX_FILE = "3"


class JobPlan(BaseModel):
    """What the workflow needs to drive one run, decided once from the agent set."""

    request: JobRunRequest
    host_id: str
    workflow_id: str
    container_name: str
    image: str
    timeout_seconds: int
    stop_grace_seconds: int
    max_concurrent: int


class Resolution(BaseModel):
    outcome: Literal["ok", "not_installed", "invalid"]
    message: str | None = None
    plan: JobPlan | None = None


def resolve(request: JobRunRequest, host: HostConfig, host_id: str) -> Resolution:
    agent = host.agents.get(request.agent)
    if agent is None:
        installed = ", ".join(sorted(host.agents)) or "none"
        return Resolution(
            outcome="not_installed",
            message=f"agent {request.agent} is not installed on host {host_id} "
            f"(installed: {installed})",
        )
    limit = host.agent_timeout(request.agent)
    if request.timeout_seconds is not None and request.timeout_seconds > limit:
        return Resolution(
            outcome="invalid",
            message=f"timeout_seconds: {request.timeout_seconds} exceeds the agent's "
            f"timeout_seconds ({limit})",
        )
    return Resolution(
        outcome="ok",
        plan=JobPlan(
            request=request,
            host_id=host_id,
            workflow_id=job_workflow_id(request.job_id),
            container_name=container_name(request.job_id, request.run_id),
            image=agent.image,
            timeout_seconds=request.timeout_seconds or limit,
            stop_grace_seconds=agent.stop_grace_seconds,
            max_concurrent=agent.max_concurrent,
        ),
    )


def job_labels(plan: JobPlan, version: str) -> dict[str, str]:
    return {
        LABEL_MANAGED: "true",
        LABEL_HOST_ID: plan.host_id,
        LABEL_JOB_ID: plan.request.job_id,
        LABEL_RUN_ID: plan.request.run_id,
        LABEL_AGENT: plan.request.agent,
        LABEL_WORKFLOW_ID: plan.workflow_id,
        LABEL_VERSION: version,
    }


def config_bind_source(host_dir: str, agent: str, config: AgentConfig) -> str:
    return posixpath.normpath(posixpath.join(host_dir, agent_config_dir(agent, config)))


def create_body(
    plan: JobPlan, agent: AgentConfig, *, host_dir: str, version: str
) -> dict[str, Any]:
    """The Docker Engine API create body for this run: the policy allowlist, nothing more."""
    request = plan.request
    env = [f"{key}={value}" for key, value in sorted(agent.env.items())]
    env += [f"BIGEYE_JOB_ID={request.job_id}", f"BIGEYE_RUN_ID={request.run_id}"]
    memory = agent.memory_bytes
    source = config_bind_source(host_dir, request.agent, agent)
    return {
        "Image": agent.image,
        "Cmd": request.command(),
        "Env": env,
        "Labels": job_labels(plan, version),
        "HostConfig": {
            "Binds": [f"{source}:{CONFIG_MOUNT_POINT}:ro"],
            "NetworkMode": JOB_NETWORK,
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges:true"],
            "Memory": memory,
            "MemorySwap": memory,
            "NanoCpus": round(agent.cpus * 1_000_000_000),
            "PidsLimit": agent.pids_limit,
            "LogConfig": {
                "Type": "json-file",
                "Config": {"max-size": LOG_MAX_SIZE, "max-file": LOG_MAX_FILE},
            },
        },
    }
