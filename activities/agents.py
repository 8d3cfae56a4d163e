"""Agent resolution: from a validated request and the host's agent set to the run's one plan.

The plan is decided once, when the run starts: it carries the finished, policy-checked create
body (image included), so the image pulled, created and reported is the same even when
`bigeye-agent sync` changes the agent set while the run waits.

Pure: callers load `bigeye_agent.yml` and pass the parsed `HostConfig`.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from orchestrator.contract import (
    JOB_NETWORK,
    LABEL_AGENT,
    LABEL_HOST_ID,
    LABEL_JOB_ID,
    LABEL_MANAGED,
    LABEL_RUN_ID,
    LABEL_VERSION,
    LABEL_WORKFLOW_ID,
    LABEL_WORKFLOW_RUN_ID,
    JobRunRequest,
    container_name,
    job_workflow_id,
)
from orchestrator.hostconfig import AgentConfig, HostConfig, agent_config_dir
from orchestrator.policy import CONFIG_MOUNT_POINT, structural_violations

LOG_MAX_SIZE = "10m"
LOG_MAX_FILE = "3"


class RegistryLogin(BaseModel):
    """Where the pull's credentials are: the password is read at pull time, never planned."""

    server: str
    username: str
    password_file: str  # as the orchestrator sees it


class JobPlan(BaseModel):
    """Everything a run needs, decided once from the agent set."""

    request: JobRunRequest
    host_id: str
    workflow_id: str
    workflow_run_id: str
    container_name: str
    image: str
    registry: RegistryLogin | None = None
    create_body: dict[str, Any]
    timeout_seconds: int
    stop_grace_seconds: int
    max_concurrent: int
    dispatched_at: str | None = None  # the run's first workflow task (for its latency)


class Resolution(BaseModel):
    outcome: Literal["ok", "not_installed", "invalid", "rejected"]
    message: str | None = None
    image: str | None = None
    plan: JobPlan | None = None


def resolve(
    request: JobRunRequest,
    host: HostConfig,
    host_id: str,
    *,
    host_dir: str,
    config_root: Path,
    version: str,
    workflow_id: str | None = None,
    workflow_run_id: str = "",
    dispatched_at: str | None = None,
) -> Resolution:
    """The run's plan, or why there is none.

    `host_dir` is the host directory as the Docker engine sees it (bind sources);
    `config_root` is the same directory as this process sees it (the registry password).
    """
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
    name = container_name(request.job_id, request.run_id)
    labels = job_labels(
        request,
        host_id=host_id,
        workflow_id=workflow_id or job_workflow_id(request.job_id),
        workflow_run_id=workflow_run_id,
        version=version,
    )
    body = create_body(request, agent, labels=labels, host_dir=host_dir)
    problems = structural_violations(body, host_id=host_id, host_dir=host_dir, name=name)
    if problems:
        return Resolution(
            outcome="rejected",
            image=agent.image,
            message=f"agents.{request.agent} in bigeye_agent.yml breaks the container policy: "
            + "; ".join(problems),
        )
    return Resolution(
        outcome="ok",
        image=agent.image,
        plan=JobPlan(
            request=request,
            host_id=host_id,
            workflow_id=labels[LABEL_WORKFLOW_ID],
            workflow_run_id=workflow_run_id,
            container_name=name,
            image=agent.image,
            registry=registry_login(agent.image, host, config_root),
            create_body=body,
            timeout_seconds=request.timeout_seconds or limit,
            stop_grace_seconds=agent.stop_grace_seconds,
            max_concurrent=agent.max_concurrent,
            dispatched_at=dispatched_at,
        ),
    )


def registry_login(image: str, host: HostConfig, config_root: Path) -> RegistryLogin | None:
    """The `registry:` section's login, for images on that registry only."""
    registry = host.registry
    if registry is None or registry.username is None or registry.password_file is None:
        return None
    if not image.startswith(registry.server.rstrip("/") + "/"):
        return None
    return RegistryLogin(
        server=registry.server,
        username=registry.username,
        password_file=str(config_root / registry.password_file),
    )


def job_labels(
    request: JobRunRequest,
    *,
    host_id: str,
    workflow_id: str,
    workflow_run_id: str,
    version: str,
) -> dict[str, str]:
    return {
        LABEL_MANAGED: "true",
        LABEL_HOST_ID: host_id,
        LABEL_JOB_ID: request.job_id,
        LABEL_RUN_ID: request.run_id,
        LABEL_AGENT: request.agent,
        LABEL_WORKFLOW_ID: workflow_id,
        LABEL_WORKFLOW_RUN_ID: workflow_run_id,
        LABEL_VERSION: version,
    }


def config_bind_source(host_dir: str, agent: str, config: AgentConfig) -> str:
    return posixpath.normpath(posixpath.join(host_dir, agent_config_dir(agent, config)))


def create_body(
    request: JobRunRequest, agent: AgentConfig, *, labels: dict[str, str], host_dir: str
) -> dict[str, Any]:
    """The Docker Engine API create body for this run: the policy allowlist, nothing more."""
    env = [f"{key}={value}" for key, value in sorted(agent.env.items())]
    env += [f"BIGEYE_JOB_ID={request.job_id}", f"BIGEYE_RUN_ID={request.run_id}"]
    memory = agent.memory_bytes
    source = config_bind_source(host_dir, request.agent, agent)
    return {
        "Image": agent.image,
        "Cmd": request.command(),
        "Env": env,
        "Labels": labels,
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
