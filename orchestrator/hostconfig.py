"""`bigeye_agent.yml`: the one loader that the daemon and the CLI share.

The orchestrator owns only `docker_compose_enabled`, `orchestrator:`, `registry:` and `agents:`;
every other top-level key belongs to the host's other agents and is ignored. Errors are one line
naming the key and the problem.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
    field_validator,
)

from orchestrator.contract import AGENT_DEFAULT_TIMEOUT_SECONDS, AGENT_TYPES, HOST_ID_PATTERN

CONFIG_FILE_NAME = "bigeye_agent.yml"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


class ConfigError(ValueError):
    """A problem with bigeye_agent.yml; `str()` is one line naming the file, key and fix."""


def parse_size(value: str | int) -> int:
    """A Docker size (`512m`, `25g`, or bytes) in bytes."""
    if isinstance(value, bool):
        raise ValueError("must be a size like 512m or 2g")
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a size like 512m or 2g")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentConfig(_Model):
    image: Annotated[str, StringConstraints(min_length=1, pattern=r"^[^\s]+$")]
    config_dir: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: Annotated[StrictInt, Field(ge=1)] | None = None
    stop_grace_seconds: Annotated[StrictInt, Field(ge=0)] = 10
    memory: StrictStr | StrictInt = "2g"
    cpus: Annotated[StrictFloat | StrictInt, Field(gt=0)] = 1.0
    pids_limit: Annotated[StrictInt, Field(ge=16)] = 512
    max_concurrent: Annotated[StrictInt, Field(ge=1)] = 1

    @field_validator("memory", mode="before")
    @classmethod
    def _size_type(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueError("must be a size like 512m or 2g")
        return value

    @field_validator("memory")
    @classmethod
    def _size(cls, value: str | int) -> str | int:
        if parse_size(value) < 6 * 1024**2:
            raise ValueError("must be at least 6m (Docker's minimum)")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env_strings(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(item, str):
                    raise ValueError(f"value of {key} must be a string: quote it ('{item}')")
        return value

    @field_validator("config_dir")
    @classmethod
    def _inside(cls, value: str | None) -> str | None:
        if value is None:
            return value
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise ValueError(f"{value!r} must be a directory inside the host directory")
        if path.parts == ("agent_config",):
            raise ValueError(
                "agent_config itself holds the host's mTLS keys: use agent_config/<agent>"
            )
        return value

    @property
    def memory_bytes(self) -> int:
        return parse_size(self.memory)


class TemporalConfig(_Model):
    address: str | None = None
    namespace: str = "default"
    server_name: str | None = None


class OrchestratorConfig(_Model):
    host_id: Annotated[str, StringConstraints(pattern=HOST_ID_PATTERN)] | None = None
    instance_id: str | None = None
    temporal: TemporalConfig = Field(default_factory=TemporalConfig)
    image: str | None = None
    bigeye_url: str | None = None


class RegistryConfig(_Model):
    server: str = "docker.io"
    username: str | None = None
    password_file: str | None = None


class HostConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    docker_compose_enabled: bool = False
    orchestrator: OrchestratorConfig = Field(default_factory=OrchestratorConfig)
    registry: RegistryConfig | None = None
    agents: dict[str, AgentConfig] = Field(default_factory=dict)

    @field_validator("agents", mode="before")
    @classmethod
    def _known_agents(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, dict):
            for key in value:
                if key not in AGENT_TYPES:
                    raise ValueError(
                        f"unknown agent type {key!r} (expected one of {', '.join(AGENT_TYPES)})"
                    )
        return value

    def agent_timeout(self, agent: str) -> int:
        configured = self.agents[agent].timeout_seconds
        return configured if configured is not None else AGENT_DEFAULT_TIMEOUT_SECONDS[agent]


def agent_config_dir(agent: str, config: AgentConfig) -> str:
    return config.config_dir if config.config_dir is not None else f"agent_config/{agent}"


def _one_line(path: Path, exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{path}: {loc}: {msg}{suffix}"


def parse_host_config(text: str, path: Path) -> HostConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{path}: {problem}{where}: fix the YAML syntax") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the file must be a YAML mapping of keys to values")
    try:
        return HostConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_one_line(path, exc)) from None


def load_host_config(path: Path) -> HostConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: file not found: set BIGEYE_AGENT_CONFIG or run from the host directory"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_host_config(text, path)
