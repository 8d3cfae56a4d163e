"""The container policy: an allowlist of what a job container may be.

`structural_violations` is the part both the orchestrator and the socket proxy enforce on every
create body (host id, host directory, keys, privileges, namespaces). The socket proxy adds
`label_set_violations` (exactly the orchestrator's own labels) and its checks against the agent
set (socketproxy/agentset.py).

Pure functions over the Docker Engine API create body: no I/O, no Docker client.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from typing import Any, Final

from orchestrator.contract import (
    CONTAINER_NAME_PATTERN,
    JOB_NETWORK,
    LABEL_AGENT,
    LABEL_HOST_ID,
    LABEL_JOB_ID,
    LABEL_MANAGED,
    LABEL_PREFIX,
    LABEL_RUN_ID,
    LABEL_VERSION,
    LABEL_WORKFLOW_ID,
    LABEL_WORKFLOW_RUN_ID,
)

CONFIG_MOUNT_POINT: Final = "/app/config"
TOP_LEVEL_KEYS: Final = frozenset({"Image", "Cmd", "Env", "Labels", "HostConfig"})
HOST_CONFIG_KEYS: Final = frozenset(
    {
        "Binds",
        "NetworkMode",
        "CapDrop",
        "SecurityOpt",
        "Memory",
        "MemorySwap",
        "NanoCpus",
        "PidsLimit",
        "LogConfig",
    }
)
REQUIRED_LABELS: Final = (
    LABEL_MANAGED,
    LABEL_HOST_ID,
    LABEL_JOB_ID,
    LABEL_RUN_ID,
    LABEL_AGENT,
    LABEL_WORKFLOW_ID,
    LABEL_WORKFLOW_RUN_ID,
    LABEL_VERSION,
)
LABEL_NAMESPACE: Final = f"{LABEL_PREFIX}."
LOG_OPTION_KEYS: Final = frozenset({"max-size", "max-file"})
_ENV_ITEM = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def bind_source_allowed(source: str, host_dir: str) -> bool:
    """A bind source must be a normalised absolute path strictly inside the host directory."""
    if not source.startswith("/") or posixpath.normpath(source) != source:
        return False
    root = posixpath.normpath(host_dir)
    return source.startswith(root.rstrip("/") + "/")


def label_set_violations(labels: Mapping[str, Any]) -> list[str]:
    """Labels must be exactly the orchestrator's own (`REQUIRED_LABELS`), nothing else.

    A label outside the `com.bigeye.orchestrator.` namespace could make a job container pass for
    something it is not: a service of another Compose project (`com.docker.compose.*`) or a route
    of a reverse proxy that reads labels (`traefik.*`).
    """
    problems: list[str] = []
    extra = sorted(key for key in labels if key not in REQUIRED_LABELS)
    for key in extra[:3]:
        shown = key if len(key) <= 80 else key[:77] + "..."
        if not key.startswith(LABEL_NAMESPACE):
            problems.append(f"label {shown!r} is not allowed: only {LABEL_NAMESPACE}* labels")
        else:
            problems.append(f"label {shown!r} is not one the orchestrator sets")
    if len(extra) > 3:
        problems.append(f"and {len(extra) - 3} more labels that are not allowed")
    problems += [f"label {key} is required" for key in REQUIRED_LABELS if key not in labels]
    return problems


def structural_violations(
    body: Any, *, host_id: str, host_dir: str, name: str | None = None
) -> list[str]:
    """Everything wrong with a create body, as short phrases; empty means allowed."""
    if not isinstance(body, Mapping):
        return ["body must be a JSON object"]
    problems: list[str] = []
    for key in sorted(set(body) - TOP_LEVEL_KEYS):
        problems.append(f"{key} is not allowed")
    for key in sorted(TOP_LEVEL_KEYS - set(body)):
        problems.append(f"{key} is required")

    if "Image" in body and (not isinstance(body["Image"], str) or not body["Image"]):
        problems.append("Image must be a non-empty string")
    if "Cmd" in body and (not _is_str_list(body["Cmd"]) or not body["Cmd"]):
        problems.append("Cmd must be a non-empty list of strings")
    if "Env" in body:
        env = body["Env"]
        if not _is_str_list(env) or not all(_ENV_ITEM.match(item) for item in env):
            problems.append("Env must be a list of NAME=value strings")

    labels = body.get("Labels")
    if "Labels" in body:
        if not isinstance(labels, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            problems.append("Labels must map strings to strings")
        else:
            for label in REQUIRED_LABELS:
                if label not in labels:
                    problems.append(f"label {label} is required")
            if labels.get(LABEL_MANAGED, "true") != "true":
                problems.append(f"label {LABEL_MANAGED} must be 'true'")
            if labels.get(LABEL_HOST_ID, host_id) != host_id:
                problems.append(f"label {LABEL_HOST_ID} must be this host's id")
    if name is not None and CONTAINER_NAME_PATTERN.fullmatch(name) is None:
        problems.append("container name must be bigeye-job-<job_id>-<run_id>")

    host_config = body.get("HostConfig")
    if "HostConfig" in body:
        if not isinstance(host_config, Mapping):
            problems.append("HostConfig must be an object")
        else:
            problems.extend(_host_config_violations(host_config, host_dir))
    return problems


def _host_config_violations(hc: Mapping[str, Any], host_dir: str) -> list[str]:
    problems = [f"HostConfig.{key} is not allowed" for key in sorted(set(hc) - HOST_CONFIG_KEYS)]
    problems += [f"HostConfig.{key} is required" for key in sorted(HOST_CONFIG_KEYS - set(hc))]
    binds: Any = hc.get("Binds")
    if "Binds" in hc:
        if not _is_str_list(binds) or len(binds) != 1:
            problems.append("HostConfig.Binds must hold exactly the agent's config directory")
        else:
            parts = binds[0].split(":")
            if len(parts) != 3 or parts[1] != CONFIG_MOUNT_POINT or parts[2] != "ro":
                problems.append(
                    f"HostConfig.Binds must be SOURCE:{CONFIG_MOUNT_POINT}:ro (read-only)"
                )
            elif not bind_source_allowed(parts[0], host_dir):
                problems.append("HostConfig.Binds source must be inside the host directory")
    if "NetworkMode" in hc and hc["NetworkMode"] != JOB_NETWORK:
        problems.append(f"HostConfig.NetworkMode must be {JOB_NETWORK}")
    if "CapDrop" in hc and hc["CapDrop"] != ["ALL"]:
        problems.append('HostConfig.CapDrop must be ["ALL"]')
    if "SecurityOpt" in hc and hc["SecurityOpt"] != ["no-new-privileges:true"]:
        problems.append('HostConfig.SecurityOpt must be ["no-new-privileges:true"]')
    memory: Any = hc.get("Memory")
    if "Memory" in hc and (not _is_int(memory) or memory <= 0):
        problems.append("HostConfig.Memory must be a positive integer")
    swap: Any = hc.get("MemorySwap")
    if "MemorySwap" in hc and (not _is_int(swap) or swap != memory):
        problems.append("HostConfig.MemorySwap must equal Memory")
    if "NanoCpus" in hc and (not _is_int(hc["NanoCpus"]) or hc["NanoCpus"] <= 0):
        problems.append("HostConfig.NanoCpus must be a positive integer")
    pids: Any = hc.get("PidsLimit")
    if "PidsLimit" in hc and (not _is_int(pids) or pids < 16):
        problems.append("HostConfig.PidsLimit must be an integer of at least 16")
    if "LogConfig" in hc:
        log_config = hc["LogConfig"]
        if (
            not isinstance(log_config, Mapping)
            or set(log_config) != {"Type", "Config"}
            or log_config.get("Type") != "json-file"
            or not isinstance(log_config.get("Config"), Mapping)
            or not set(log_config["Config"]) <= LOG_OPTION_KEYS
            or not all(isinstance(v, str) for v in log_config["Config"].values())
        ):
            problems.append("HostConfig.LogConfig must be json-file with max-size/max-file")
    return problems
