"""What the proxy knows of the agent set, and the create checks that need it. Pure.

`AgentSet.from_host_config` turns `bigeye_agent.yml` (as `orchestrator.hostconfig` reads it)
into one `AgentRule` per installed agent: its image (as configured and normalised), its config
directory as the orchestrator binds it, and its limits. `create_violations` then holds a create
body that already passed `structural_violations` to that agent's entry.

The image, the bind source and the log options are computed by the orchestrator's own code
(`activities.agents`: `config_bind_source`, `LOG_MAX_SIZE`, `LOG_MAX_FILE`) so that the two
can never disagree on what a compliant body is. That module is pure (pydantic and
`orchestrator.*` only); the proxy imports nothing else of `activities`.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from activities.agents import LOG_MAX_FILE, LOG_MAX_SIZE, config_bind_source
from orchestrator.contract import (
    ID_PATTERN,
    LABEL_AGENT,
    LABEL_JOB_ID,
    LABEL_RUN_ID,
    container_name,
)
from orchestrator.hostconfig import HostConfig
from orchestrator.policy import CONFIG_MOUNT_POINT, label_set_violations
from socketproxy import references
from socketproxy.references import ImageRef

KEY_DIR: Final = "agent_config"
# Private keys and secrets in agent_config/ (design §7); a config directory holding one of
# them is never bound into a job container.
KEY_FILES: Final = ("mtls.key", "mtls_ca.key", "docker_token")
LOG_CONFIG: Final = {
    "Type": "json-file",
    "Config": {"max-size": LOG_MAX_SIZE, "max-file": LOG_MAX_FILE},
}
LOOPBACK_ENV: Final = "BIGEYE_PROXY_ALLOW_LOOPBACK_REGISTRY"
_ID = re.compile(ID_PATTERN)


@dataclass(frozen=True)
class AgentRule:
    """One installed agent as the proxy checks it."""

    name: str
    image: str  # as configured: a create's Image must be exactly this
    reference: ImageRef | None  # normalised, a bare name defaulted to :latest
    bind_source: str  # host path, as the orchestrator computes it
    memory: int
    nano_cpus: int
    pids_limit: int
    refused: str | None = None  # why this agent's image is refused altogether

    @property
    def bind(self) -> str:
        return f"{self.bind_source}:{CONFIG_MOUNT_POINT}:ro"


@dataclass(frozen=True)
class AgentSet:
    agents: Mapping[str, AgentRule] = field(default_factory=dict)

    @classmethod
    def from_host_config(
        cls, host: HostConfig, host_dir: str, *, allow_loopback_registry: bool = False
    ) -> AgentSet:
        rules: dict[str, AgentRule] = {}
        for name, entry in sorted(host.agents.items()):
            parsed = references.parse(entry.image)
            reference = parsed.defaulted() if parsed is not None else None
            refused = None
            if reference is None:
                refused = (
                    f"agents.{name}.image {entry.image[:200]!r} is not an image reference "
                    "the proxy can check"
                )
            elif references.loopback_registry(reference) and not allow_loopback_registry:
                refused = (
                    f"agents.{name}.image {entry.image[:200]} is on a registry on the engine "
                    f"host's loopback ({reference.domain}): refused (set {LOOPBACK_ENV}=1 for "
                    "the proxy to allow it)"
                )
            source = config_bind_source(host_dir, name, entry)
            if not _inside(source, host_dir) or source == posixpath.join(host_dir, KEY_DIR):
                refused = refused or (
                    f"agents.{name}: config directory {source} is not an agent's directory "
                    f"inside the host directory (never {KEY_DIR}/ itself)"
                )
            rules[name] = AgentRule(
                name=name,
                image=entry.image,
                reference=reference,
                bind_source=source,
                memory=entry.memory_bytes,
                nano_cpus=round(entry.cpus * 1_000_000_000),
                pids_limit=entry.pids_limit,
                refused=refused,
            )
        return cls(rules)

    @property
    def refusals(self) -> list[str]:
        return [rule.refused for rule in self.agents.values() if rule.refused is not None]

    def image_allowed(self, ref: ImageRef) -> AgentRule | None:
        """The agent whose image this is (normalised comparison), if any."""
        wanted = ref.defaulted()
        for rule in self.agents.values():
            if rule.reference == wanted:
                return rule
        return None

    def describe(self) -> str:
        return ", ".join(sorted(self.agents)) or "none"


def _inside(source: str, host_dir: str) -> bool:
    return source.startswith(host_dir.rstrip("/") + "/") and posixpath.normpath(source) == source


def create_violations(body: Mapping[str, Any], *, name: str, agents: AgentSet) -> list[str]:
    """What the agent set says of a create body that passed `structural_violations`."""
    labels: Mapping[str, str] = body["Labels"]
    problems = label_set_violations(labels)
    agent = labels.get(LABEL_AGENT, "")
    rule = agents.agents.get(agent)
    if rule is None:
        problems.append(
            f"label {LABEL_AGENT}={agent[:64]!r} is not an agent of this host "
            f"(agent set: {agents.describe()})"
        )
        return problems
    if rule.refused is not None:
        problems.append(rule.refused)
    if body["Image"] != rule.image:
        problems.append(f"Image must be the {agent} agent's image {rule.image}")
    job_id, run_id = labels.get(LABEL_JOB_ID, ""), labels.get(LABEL_RUN_ID, "")
    if (
        not _ID.fullmatch(job_id)
        or not _ID.fullmatch(run_id)
        or name != container_name(job_id, run_id)
    ):
        problems.append("container name must be bigeye-job-<job-id label>-<run-id label>")
    hc: Mapping[str, Any] = body["HostConfig"]
    if hc["Binds"] != [rule.bind]:
        problems.append(f"HostConfig.Binds must be exactly [{rule.bind!r}]")
    for key, limit, entry in (
        ("Memory", rule.memory, "memory"),
        ("NanoCpus", rule.nano_cpus, "cpus"),
        ("PidsLimit", rule.pids_limit, "pids_limit"),
    ):
        if hc[key] > limit:
            problems.append(f"HostConfig.{key} {hc[key]} is above the agent's {entry} ({limit})")
    if hc["LogConfig"] != LOG_CONFIG:
        problems.append(
            f"HostConfig.LogConfig must be json-file with max-size {LOG_MAX_SIZE} and "
            f"max-file {LOG_MAX_FILE}"
        )
    return problems
