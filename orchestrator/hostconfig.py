"""`bigeye_agent.yml`: the one loader that the daemon and the CLI share.

The orchestrator owns only `docker_compose_enabled`, `orchestrator:`, `registry:` and `agents:`;
every other top-level key belongs to the host's other agents and is ignored. Errors are one line
naming the key and the problem.
"""

from __future__ import annotations

import math
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

from orchestrator.contract import (
    AGENT_DEFAULT_TIMEOUT_SECONDS,
    AGENT_TYPES,
    HOST_ID_PATTERN,
    printable_key,
)

CONFIG_FILE_NAME = "bigeye_agent.yml"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)b?\s*$", re.IGNORECASE | re.ASCII)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_BYTES = 2**63 - 1  # Docker's sizes are signed 64-bit
MAX_TIMEOUT_SECONDS = 365 * 24 * 3600
MAX_STOP_GRACE_SECONDS = 3600
MAX_CPUS = 1024
MIN_CPUS = 0.01  # Docker's smallest NanoCpus step that means anything
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


class ConfigError(ValueError):
    """A problem with bigeye_agent.yml; `str()` is one line naming the file, key and fix."""


def parse_size(value: str | int) -> int:
    """A Docker size (`512m`, `25g`, or bytes) in bytes."""
    if isinstance(value, bool):
        raise ValueError("must be a size like 512m or 2g")
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value)) if len(str(value)) <= 64 else None
    if not match:
        raise ValueError(f"{printable_value(value)} is not a size like 512m or 2g")
    size = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not math.isfinite(size) or size > MAX_BYTES:
        raise ValueError(f"{printable_value(value)} is more than Docker accepts")
    return int(size)


def printable_value(value: object) -> str:
    """A value as a message may show it: short, on one line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentConfig(_Model):
    image: Annotated[str, StringConstraints(min_length=1, pattern=r"^[^\s]+$")]
    config_dir: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: Annotated[StrictInt, Field(ge=1, le=MAX_TIMEOUT_SECONDS)] | None = None
    stop_grace_seconds: Annotated[StrictInt, Field(ge=0, le=MAX_STOP_GRACE_SECONDS)] = 10
    memory: StrictStr | StrictInt = "2g"
    cpus: Annotated[StrictFloat | StrictInt, Field(ge=MIN_CPUS, le=MAX_CPUS)] = 1.0
    pids_limit: Annotated[StrictInt, Field(ge=16, le=2**22)] = 512
    max_concurrent: Annotated[StrictInt, Field(ge=1, le=1024)] = 1

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
                if not isinstance(key, str) or not _ENV_NAME.match(key):
                    raise ValueError(
                        f"{printable_key(key)} is not a variable name: use letters, digits "
                        "and _, not starting with a digit"
                    )
                if not isinstance(item, str):
                    raise ValueError(
                        f"the value of {key} must be a string: quote it in the file "
                        "('0755', 'yes', '1.0' stay as written)"
                    )
        return value

    @field_validator("config_dir")
    @classmethod
    def _inside(cls, value: str | None) -> str | None:
        if value is None:
            return value
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise ValueError(
                f"{printable_value(value)} must be a directory inside the host directory"
            )
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
                        f"unknown agent type {printable_value(key)} (expected one of "
                        f"{', '.join(AGENT_TYPES)})"
                    )
        return value

    def agent_timeout(self, agent: str) -> int:
        configured = self.agents[agent].timeout_seconds
        return configured if configured is not None else AGENT_DEFAULT_TIMEOUT_SECONDS[agent]


def agent_config_dir(agent: str, config: AgentConfig) -> str:
    return config.config_dir if config.config_dir is not None else f"agent_config/{agent}"


_LINE_BREAKS = re.compile(r"\s*[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]\s*")


def _one_line(path: Path, exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = ".".join(printable_key(p) for p in first["loc"])
    # one line, without collapsing the spaces inside a quoted key ('  ' is not ' ')
    msg = " ".join(_LINE_BREAKS.split(str(first["msg"]).removeprefix("Value error, "))).strip()
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{path}: {loc}: {msg}{suffix}"


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader; a value it cannot build is reported where it is in the file."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, LookupError, AttributeError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value ({type(exc).__name__})", node.start_mark
            ) from None


def _where(mark: Any) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def read_yaml(text: str, path: Path) -> Any:
    """The document's data, or one line naming what is wrong and where."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        return loader.get_single_data()
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise ConfigError(
            f"{path}: the character {exc.character!r} is not allowed in YAML, at line {line}, "
            f"column {column}: remove it"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = " ".join(str(getattr(exc, "problem", None) or "not valid YAML").split())
        raise ConfigError(f"{path}: {problem}{_where(mark)}: fix the YAML syntax") from None
    except RecursionError:
        mark = loader.get_mark() if loader is not None else None
        raise ConfigError(f"{path}: values are nested too deeply{_where(mark)}") from None
    except (ValueError, TypeError, LookupError, AttributeError, OverflowError) as exc:
        mark = loader.get_mark() if loader is not None else None
        raise ConfigError(
            f"{path}: cannot read the file{_where(mark)} ({type(exc).__name__}): fix the value "
            "there"
        ) from None
    finally:
        if loader is not None:
            loader.dispose()


def parse_host_config(text: str, path: Path) -> HostConfig:
    data = read_yaml(text, path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the file must be a YAML mapping of keys to values")
    try:
        return HostConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_one_line(path, exc)) from None
    except RecursionError:
        raise ConfigError(f"{path}: values are nested too deeply") from None


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
