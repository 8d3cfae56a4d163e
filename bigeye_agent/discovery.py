"""The host's installed agent set, as an existing installation describes it.

Three places say which agents a host has: the `agents:` map (the orchestrator's agent set), the
per-agent sections an installation has always written (`lineage:`, `datahealth:`,
`external_monitors:` …) and the `agent_config/<agent>/` directories. Batch agents found there
become managed agents (with the image the host already uses, else Bigeye's published one, and
their existing config directory); persistent agents (Data Source, SDS, Cross-Source) are
installed but keep running on their own. Pure: the caller reads the file and lists the
directories; nothing here writes, and the legacy sections are never rewritten.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Final

from orchestrator.contract import AGENT_TYPES

AGENT_CONFIG_DIR: Final = "agent_config"
PERSISTENT_AGENTS: Final = ("data_source", "sds", "cross_source")
# What each agent has been called in bigeye_agent.yml sections and agent_config/ directories.
ALIASES: Final[dict[str, tuple[str, ...]]] = {
    "lineage_plus": ("lineage_plus", "lineage", "lineage-plus", "lineageplus"),
    "datahealth": ("datahealth", "data_health", "data-health"),
    "external_monitors": ("external_monitors", "external-monitors", "externalmonitors"),
    "data_source": ("data_source", "source", "data-source", "datasource"),
    "sds": ("sds",),
    "cross_source": ("cross_source", "crosssource", "cross-source"),
}
PUBLISHED_IMAGES: Final[dict[str, str]] = {
    "lineage_plus": "docker.io/bigeyedata/lineage-plus-connector:latest",
    "datahealth": "docker.io/bigeyedata/datahealth:latest",
    "external_monitors": "docker.io/bigeyedata/external-monitors:latest",
}
NAMES: Final[dict[str, str]] = {
    "lineage_plus": "Lineage Plus",
    "datahealth": "DataHealth",
    "external_monitors": "External Monitors",
    "data_source": "Data Source",
    "sds": "SDS",
    "cross_source": "Cross-Source",
}
_IMAGE_KEYS: Final = ("image", "docker_image")
_REPOSITORY_KEYS: Final = ("image_repository", "repository")
_TAG_KEYS: Final = ("image_tag", "tag", "version")


def canonical(name: str) -> str | None:
    """The agent type a section or directory name stands for, if any."""
    lowered = name.strip().lower()
    return next((agent for agent, names in ALIASES.items() if lowered in names), None)


@dataclass(frozen=True)
class Found:
    """One installed agent and why it is believed to be there."""

    agent: str
    managed: bool  # a batch agent, run by the orchestrator
    image: str | None  # managed agents only
    config_dir: str | None  # relative to the host directory; None: the default
    why: str
    in_agent_set: bool  # already under `agents:`

    @property
    def name(self) -> str:
        return NAMES[self.agent]

    def describe(self) -> str:
        if not self.managed:
            return (
                f"{self.agent} ({self.name}): installed, runs on its own (not managed): {self.why}"
            )
        where = self.config_dir or f"{AGENT_CONFIG_DIR}/{self.agent}"
        return (
            f"{self.agent} ({self.name}): managed, image {self.image}, config {where}: {self.why}"
        )


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _legacy_image(section: Mapping[str, Any], agent: str) -> str | None:
    for key in _IMAGE_KEYS:
        if image := _text(section.get(key)):
            return image
    repository = next((r for k in _REPOSITORY_KEYS if (r := _text(section.get(k)))), None)
    tag = next((str(t).strip() for k in _TAG_KEYS if (t := section.get(k)) not in (None, "")), None)
    if repository is None and tag is None:
        return None
    base = repository or PUBLISHED_IMAGES[agent].rsplit(":", 1)[0]
    return f"{base}:{tag}" if tag else base


def _relative_dir(value: Any) -> str | None:
    text = _text(value)
    if text is None:
        return None
    path = PurePosixPath(text)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return None  # not inside the host directory: the default is used instead
    return str(path)


def _enabled(section: Any) -> bool:
    return not (isinstance(section, Mapping) and section.get("enabled") is False)


def discover(data: Mapping[str, Any], config_dirs: Iterable[str]) -> list[Found]:
    """Every installed agent, in agent-type order.

    `data` is the whole parsed bigeye_agent.yml; `config_dirs` the names of the directories
    under agent_config/.
    """
    raw_agents = data.get("agents")
    agents_map: Mapping[str, Any] = raw_agents if isinstance(raw_agents, Mapping) else {}
    dirs: dict[str, str] = {}
    for name in sorted(config_dirs):
        agent = canonical(name)
        if agent is not None:
            dirs.setdefault(agent, name)
    sections: dict[str, tuple[str, Any]] = {}
    for key, value in data.items():
        agent = canonical(str(key)) if key != "agents" else None
        if agent is not None and _enabled(value):
            sections.setdefault(agent, (str(key), value))

    found: list[Found] = []
    for agent in (*AGENT_TYPES, *PERSISTENT_AGENTS):
        managed = agent in AGENT_TYPES
        if managed and agent in agents_map:
            entry = agents_map[agent] if isinstance(agents_map[agent], Mapping) else {}
            found.append(Found(agent, True, _text(entry.get("image")),
                               _relative_dir(entry.get("config_dir")),
                               "in the agent set (agents:)", True))  # fmt: skip
            continue
        section = sections.get(agent)
        directory = dirs.get(agent)
        if section is None and directory is None:
            continue
        body: Mapping[str, Any] = section[1] if section and isinstance(section[1], Mapping) else {}
        config_dir = _relative_dir(body.get("config_dir")) or (
            f"{AGENT_CONFIG_DIR}/{directory}" if directory else None
        )
        if config_dir == f"{AGENT_CONFIG_DIR}/{agent}":
            config_dir = None  # the default: left unwritten
        places = []
        if section is not None:
            places.append(f"the `{section[0]}:` section of bigeye_agent.yml")
        if directory is not None:
            places.append(f"{AGENT_CONFIG_DIR}/{directory}/")
        why = "found in " + " and ".join(places)
        image = _legacy_image(body, agent) if managed else None
        if managed:
            why += (
                "; image from that section" if image else "; no image named: Bigeye's published one"
            )
            image = image or PUBLISHED_IMAGES[agent]
        found.append(Found(agent, managed, image, config_dir, why, False))
    return found
