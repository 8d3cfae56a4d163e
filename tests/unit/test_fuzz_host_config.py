"""Property tests of `bigeye_agent.yml` loading (design §8): accepted exactly, or refused in a line.

Hypothesis writes `bigeye_agent.yml` texts of five families (about 2,000 per run):

* **valid by construction**: every agent key of §8 in its valid range (or left to its
  default), `orchestrator:` and `registry:` blocks, and other agents' top-level keys, which are
  ignored. Always accepted, with every value exactly as written (memory in bytes, cpus, the
  config_dir), each config directory strictly inside the host directory, and a container
  that the socket proxy's policy (`orchestrator.policy.structural_violations`) allows;
* **one fault away from valid**: a bad value for one agent key, an unknown key or agent type,
  a `config_dir` escaping the host directory, a bad block. Always refused with a `ConfigError`
  naming the key in one line that starts with the file's path;
* **broken YAML**: a line that cannot parse inserted between two top-level keys. Refused, with
  the line and column PyYAML reports;
* **mutated and random text**: anything; a HostConfig or a one-line ConfigError, never another
  exception; when PyYAML reports a position, the message carries it;
* **bytes on disk** read by `load_host_config`: non-UTF-8, UTF-16, CRLF, a BOM.

The §8 rules are written out here, not imported, so the tests check the design. Runs are
derandomized without an example database: CI sees the same examples on every run. The end
of the file pins inputs that once escaped as tracebacks or long messages (line breaks in key
names, impossible dates, explicit `!!` tags, deep nesting, 400-digit sizes, `cpus: .inf`).
"""

from __future__ import annotations

import posixpath
import re
import string
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Any, Final

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.contract import JOB_NETWORK, LABEL_HOST_ID, LABEL_MANAGED, printable_key
from orchestrator.hostconfig import (
    AgentConfig,
    ConfigError,
    HostConfig,
    agent_config_dir,
    load_host_config,
    parse_host_config,
    printable_value,
)
from orchestrator.policy import CONFIG_MOUNT_POINT, REQUIRED_LABELS, structural_violations

# ---- the agent set, from design §8 ---------------------------------------------------------

HOST_DIR: Final = "/srv/bigeye"
PATH: Final = Path(HOST_DIR) / "bigeye_agent.yml"
HOST_ID: Final = "prod-agent-01"
AGENTS: Final = ("lineage_plus", "datahealth", "external_monitors")
OWNED_KEYS: Final = ("docker_compose_enabled", "orchestrator", "registry", "agents")
AGENT_KEYS: Final = (
    "image",
    "config_dir",
    "env",
    "timeout_seconds",
    "stop_grace_seconds",
    "memory",
    "cpus",
    "pids_limit",
    "max_concurrent",
)
DEFAULTS: Final[dict[str, Any]] = {
    "env": {},
    "stop_grace_seconds": 10,
    "memory_bytes": 2 * 1024**3,
    "cpus": 1.0,
    "pids_limit": 512,
    "max_concurrent": 1,
}
DEFAULT_TIMEOUT: Final = {"lineage_plus": 21600, "datahealth": 3600, "external_monitors": 3600}
UNITS: Final = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
MIN_MEMORY: Final = 6 * 1024**2  # Docker's minimum

AGENT_LINE: Final = "agents:\n  datahealth: {image: x, %s}\n"  # one key of one agent
MAX_MESSAGE: Final = 500  # the path, a key path, one problem and its fix: one screen line or two
LOCATION: Final = re.compile(r" at line (\d+), column (\d+)")

FUZZ: Final = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ---- valid files ---------------------------------------------------------------------------

ALNUM: Final = string.ascii_letters + string.digits
NAME_CHARS: Final = ALNUM + "_.-"

images = st.one_of(
    st.sampled_from(
        [
            "docker.io/bigeyedata/lineage-plus-connector:latest",
            "bigeyedata/datahealth:1.2.3",
            "registry.example.com:5000/team/agent@sha256:" + "ab" * 32,
            "bigeye-demo-agent:dev",
        ]
    ),
    st.from_regex(
        r"[a-z0-9]{1,12}([./-][a-z0-9]{1,8}){0,3}(:[A-Za-z0-9_.-]{1,12})?", fullmatch=True
    ),
)
segments = st.text(NAME_CHARS, min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))


def shown(key: str) -> str:
    """A key path as a message shows it: its last key escaped when it is not printable (a key
    may hold dots itself: only the blocks' names before it are a path)."""
    parts = key.split(".")
    depth = 2 if parts[0] == "agents" and len(parts) > 2 else 1 if len(parts) > 1 else 0
    if parts[0] not in ("agents", "orchestrator", "registry"):
        depth = 0
    prefix = ".".join(parts[:depth])
    rest = ".".join(parts[depth:])
    return f"{prefix}.{printable_key(rest)}" if prefix else printable_key(rest)


@st.composite
def config_dirs(draw: st.DrawFn) -> str:
    """A relative directory that stays inside the host directory, spelled in many ways."""
    path = "/".join(draw(st.lists(segments, min_size=1, max_size=4)))
    if draw(st.booleans()):
        path = "./" + path
    if draw(st.booleans()):
        path = path.replace("/", draw(st.sampled_from(["//", "/./"])), 1)
    if draw(st.booleans()):
        path += "/"
    if PurePosixPath(path).parts == ("agent_config",):
        path += "/lineage"  # agent_config itself is refused: it holds the host's keys
    return path


env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,30}", fullmatch=True)
# Any text (quoted by the dumper): line breaks, NUL, look-alikes, 'yes', '0755', '1e3' ...
env_values = st.one_of(st.text(max_size=30), st.sampled_from(["yes", "0755", "1e3", "null", "~"]))


@st.composite
def memories(draw: st.DrawFn) -> tuple[Any, int]:
    """A Docker size of at least 6m as YAML will hold it, and its value in bytes."""
    if draw(st.booleans()):
        value = draw(st.integers(MIN_MEMORY, 2**45))
        return value, value
    unit = draw(st.sampled_from(sorted(UNITS)))
    least = -(-MIN_MEMORY // UNITS[unit])  # the integer part alone is at least 6m
    number = str(draw(st.integers(least, max(least, 2**45 // UNITS[unit]))))
    if draw(st.booleans()):
        number += "." + draw(st.sampled_from("0123456789"))
    suffix = draw(st.sampled_from(["", "b"])) if unit not in ("", "b") else ""
    text = number + draw(st.sampled_from([" ", ""])) + unit + suffix
    text = draw(st.sampled_from([text, text.upper(), f" {text} "]))
    return text, int(Fraction(number) * UNITS[unit])


cpus = st.one_of(st.floats(0.01, 1024, allow_nan=False, allow_infinity=False), st.integers(1, 1024))


@st.composite
def agent_entries(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """An agent's YAML mapping and the values it must load as (None: the §8 default)."""
    entry: dict[str, Any] = {"image": draw(images)}
    expected: dict[str, Any] = {"image": entry["image"]}
    optional: dict[str, st.SearchStrategy[Any]] = {
        "config_dir": st.none() | config_dirs(),
        "env": st.dictionaries(env_names, env_values, max_size=3),
        "timeout_seconds": st.none() | st.integers(1, 10**7),
        "stop_grace_seconds": st.integers(0, 3600),
        "cpus": cpus,
        "pids_limit": st.integers(16, 2**22),
        "max_concurrent": st.integers(1, 64),
    }
    # a list, not a set: a set of strings iterates in PYTHONHASHSEED order, not reproducibly
    for key in draw(st.lists(st.sampled_from([*optional, "memory"]), unique=True)):
        if key == "memory":
            entry[key], expected["memory_bytes"] = draw(memories())
        else:
            entry[key] = expected[key] = draw(optional[key])
    return entry, expected


host_ids = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,30}[A-Za-z0-9])?", fullmatch=True)
plain_text = st.text(max_size=30)
orchestrator_blocks = st.fixed_dictionaries(
    {},
    optional={
        "host_id": st.none() | host_ids,
        "instance_id": st.none() | st.uuids().map(str),
        "temporal": st.fixed_dictionaries(
            {},
            optional={
                "address": st.none() | st.just("app-workflows.bigeye.com:443") | plain_text,
                "namespace": plain_text,
                "server_name": st.none() | plain_text,
            },
        ),
        "image": st.none() | images,
        "bigeye_url": st.none() | plain_text,
    },
)
registry_blocks = st.none() | st.fixed_dictionaries(
    {},
    optional={
        "server": st.just("docker.io") | plain_text,
        "username": st.none() | plain_text,
        "password_file": st.none() | st.just("agent_config/docker_token"),
    },
)
# Key names may hold line breaks: messages escape them.
key_text = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=30)
other_keys = st.one_of(
    st.sampled_from(
        ["company_uuid", "workflows", "source_db", "sds", "cross_source", "log_level", "x-env"]
    ),
    key_text,
).filter(lambda key: key not in OWNED_KEYS)
other_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**18), 10**18),
        st.floats(allow_nan=False),
        plain_text,
        st.dates(),
    ),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(key_text, children, max_size=3)
    ),
    max_leaves=4,
)


@st.composite
def valid_files(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A §8 document and, per installed agent, the values it must load as."""
    doc: dict[str, Any] = draw(st.dictionaries(other_keys, other_values, max_size=2))
    expected: dict[str, dict[str, Any]] = {}
    agents: dict[str, Any] = {}
    for agent in draw(st.lists(st.sampled_from(AGENTS), unique=True)):
        agents[agent], expected[agent] = draw(agent_entries())
    doc.update(
        draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "docker_compose_enabled": st.booleans(),
                    "orchestrator": orchestrator_blocks,
                    "registry": registry_blocks,
                },
            )
        )
    )
    leave_empty: bool = draw(st.booleans())
    if agents or leave_empty:
        doc["agents"] = agents or None  # `agents:` with nothing under it: none installed
    return doc, expected


@st.composite
def yaml_texts(draw: st.DrawFn, doc: Any, *, block: bool = False) -> str:
    """`doc` dumped in one of PyYAML's styles; `block`: top-level keys start their lines."""
    styles = [False] if block else [False, None, True]
    text = yaml.dump(
        doc,
        Dumper=yaml.CSafeDumper,
        default_flow_style=draw(st.sampled_from(styles)),
        allow_unicode=draw(st.booleans()),
        sort_keys=False,
        indent=draw(st.sampled_from([2, 4])),
        width=draw(st.sampled_from([40, 80, 1000])),
    )
    # the generator writes what it means (repr: nan is not equal to itself)
    assert repr(yaml.load(text, Loader=yaml.CSafeLoader)) == repr(doc)
    return draw(st.sampled_from(["", "# bigeye_agent.yml\n", "---\n"])) + text


# ---- checks --------------------------------------------------------------------------------


def bind_source(agent: str, config: AgentConfig) -> str:
    """The config directory as Docker will mount it (§4: under the host directory)."""
    return posixpath.normpath(posixpath.join(HOST_DIR, agent_config_dir(agent, config)))


def check_inside_host_dir(host: HostConfig) -> None:
    """Every agent's config directory is strictly inside the host directory, never its keys."""
    for agent, config in host.agents.items():
        source = bind_source(agent, config)
        assert source.startswith(HOST_DIR + "/"), (agent, config.config_dir, source)
        assert source != f"{HOST_DIR}/agent_config", (agent, config.config_dir)


def container_violations(agent: str, config: AgentConfig) -> list[str]:
    """What the socket proxy's policy says of the container §4 builds from this agent."""
    memory = config.memory_bytes
    labels = {label: "x" for label in REQUIRED_LABELS}
    labels |= {LABEL_MANAGED: "true", LABEL_HOST_ID: HOST_ID}
    body = {
        "Image": config.image,
        "Cmd": ["agent", "run"],
        "Env": [f"{key}={value}" for key, value in sorted(config.env.items())]
        + ["BIGEYE_JOB_ID=j", "BIGEYE_RUN_ID=r"],
        "Labels": labels,
        "HostConfig": {
            "Binds": [f"{bind_source(agent, config)}:{CONFIG_MOUNT_POINT}:ro"],
            "NetworkMode": JOB_NETWORK,
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges:true"],
            "Memory": memory,
            "MemorySwap": memory,
            "NanoCpus": round(config.cpus * 1_000_000_000),
            "PidsLimit": config.pids_limit,
            "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}},
        },
    }
    return structural_violations(body, host_id=HOST_ID, host_dir=HOST_DIR)


def config_error(text: str, path: Path = PATH) -> str:
    """The refusal's message; any exception other than ConfigError fails the test."""
    with pytest.raises(ConfigError) as info:
        parse_host_config(text, path)
    return str(info.value)


def check_message(message: str, path: Path = PATH) -> None:
    """One non-empty line that starts with the file's path."""
    assert message.splitlines() == [message], message
    assert message.startswith(f"{path}: ") and len(message) > len(f"{path}: "), message


def outcome(text: str) -> HostConfig | str:
    """The loaded config, or the refusal's message (checked to be one line)."""
    try:
        host = parse_host_config(text, PATH)
    except ConfigError as exc:
        check_message(str(exc))
        return str(exc)
    check_inside_host_dir(host)
    return host


# ---- valid files ---------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_a_valid_file_is_accepted_with_every_value_exactly(data: st.DataObject) -> None:
    """§8 files load with each value as written or defaulted, inside the host dir and policy."""
    doc, expected = data.draw(valid_files())
    host = parse_host_config(data.draw(yaml_texts(doc)), PATH)
    assert set(host.agents) == set(expected)
    for agent, want in expected.items():
        config = host.agents[agent]
        assert config.image == want["image"]
        assert config.config_dir == want.get("config_dir")
        assert agent_config_dir(agent, config) == (
            want.get("config_dir") or f"agent_config/{agent}"
        )
        assert config.timeout_seconds == want.get("timeout_seconds")
        assert host.agent_timeout(agent) == (want.get("timeout_seconds") or DEFAULT_TIMEOUT[agent])
        for key in ("env", "stop_grace_seconds", "cpus", "pids_limit", "max_concurrent"):
            assert getattr(config, key) == want.get(key, DEFAULTS[key]), key
        assert config.memory_bytes == want.get("memory_bytes", DEFAULTS["memory_bytes"])
        assert container_violations(agent, config) == []
    check_inside_host_dir(host)
    orchestrator = doc.get("orchestrator", {})
    assert host.orchestrator.host_id == orchestrator.get("host_id")
    assert host.orchestrator.temporal.namespace == orchestrator.get("temporal", {}).get(
        "namespace", "default"
    )
    assert host.docker_compose_enabled is doc.get("docker_compose_enabled", False)
    registry = doc.get("registry")
    assert (host.registry is None) is (registry is None)
    if registry is not None:
        assert host.registry is not None
        assert host.registry.server == registry.get("server", "docker.io")
        assert host.registry.password_file == registry.get("password_file")


# ---- one fault -----------------------------------------------------------------------------

small = st.one_of(
    st.lists(st.integers(0, 9), max_size=2),
    st.dictionaries(st.sampled_from("ab"), st.integers(0, 9), max_size=1),
)
non_mappings = st.one_of(
    st.text(max_size=5), st.integers(), st.booleans(), st.lists(st.integers(0, 9), max_size=2)
)
not_strings = st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False), small)
not_ints = st.one_of(
    st.booleans(), st.floats(allow_nan=False), st.text(string.digits, min_size=1, max_size=4), small
)
WHITESPACE: Final = " \t\n\r\x0b\x0c\x85\xa0\u2028\u3000"
ESCAPING_DIRS: Final = (
    "../x",
    "..",
    "../",
    "/etc",
    "/",
    "/srv/bigeye/agent_config/lineage_plus",
    "agent_config",
    "agent_config/",
    "./agent_config",
    "agent_config/.",
    "agent_config//",
    "a/../../b",
    "a/..",
    "x/../agent_config",
    "",
    ".",
    "./",
)


@st.composite
def escaping_dirs(draw: st.DrawFn) -> str:
    """A config_dir that leaves the host directory, names nothing, or is agent_config itself."""
    inside = draw(config_dirs()).rstrip("/")
    return draw(
        st.sampled_from(ESCAPING_DIRS)
        | st.just("/" + inside)
        | st.just(inside + "/..")
        | st.just("../" + inside)
        | st.builds(lambda n: inside + "/.." * n, st.integers(2, 6))
    )


def below(least: int) -> st.SearchStrategy[int]:
    """Integers under `least`, often just under it (the boundary a typo would move)."""
    return st.one_of(st.integers(least - 8, least - 1), st.integers(max_value=least - 1))


def too_small_memories() -> st.SearchStrategy[Any]:
    return st.one_of(
        below(MIN_MEMORY),
        st.sampled_from(["5m", "5.9m", "1k", "6291455", "6291455b", "0g", "0.005g", "0"]),
    )


BAD_AGENT_VALUES: Final[dict[str, st.SearchStrategy[Any]]] = {
    "image": st.one_of(
        st.sampled_from(["", " ", "a b", "img\t", "x\n", "\ta"]),
        st.builds(lambda i, c: i + c + i, images, st.sampled_from(WHITESPACE)),
        st.none(),
        not_strings,
    ),
    "config_dir": escaping_dirs() | not_strings,
    "env": st.one_of(
        st.lists(st.text(max_size=5), max_size=2),
        st.text(max_size=5),
        st.integers(),
        st.booleans(),
        st.dictionaries(env_names, st.none() | not_strings | st.dates(), min_size=1, max_size=1),
        st.dictionaries(st.integers(), env_values, min_size=1, max_size=1),
    ),
    "timeout_seconds": below(1) | not_ints,
    "stop_grace_seconds": below(0) | not_ints | st.none(),
    "memory": st.one_of(
        st.none(),
        st.booleans(),
        st.floats(allow_nan=False),
        small,
        too_small_memories(),
        st.sampled_from(["", "2 gigs", "1e9", "-1g", "g", "2gg", "0x10", "2g2", "2p", "1,5g"]),
    ),
    "cpus": st.one_of(
        st.sampled_from(
            [
                0,
                0.0,
                -1,
                -0.5,
                float("nan"),
                float("inf"),
                1e-10,
                0.009,
                1025,
                "2",
                "1.5",
                True,
                False,
                None,
            ]
        ),
        st.floats(max_value=0),
        small,
    ),
    "pids_limit": below(16) | not_ints | st.none(),
    "max_concurrent": below(1) | not_ints | st.none(),
}
TYPOS: Final = ("mem", "cpu", "pids", "timeout", "configdir", "config-dir", "environment", "Image")


@pytest.mark.parametrize("fault", [*AGENT_KEYS, "unknown_key", "no_image", "not_a_mapping"])
@settings(FUZZ, max_examples=25)
@given(data=st.data())
def test_one_bad_agent_value_is_refused_in_one_line_naming_it(
    fault: str, data: st.DataObject
) -> None:
    """Each §8 rule, broken alone in one agent, is refused naming agents.<agent>.<key>."""
    doc, _ = data.draw(valid_files())
    agent = data.draw(st.sampled_from(AGENTS))
    entry: Any
    entry, _ = data.draw(agent_entries())
    where = f"agents.{agent}.{fault}"
    if fault == "unknown_key":
        key = data.draw((st.sampled_from(TYPOS) | key_text).filter(lambda k: k not in AGENT_KEYS))
        entry[key] = data.draw(other_values)
        where = f"agents.{agent}.{key}"
    elif fault == "no_image":
        del entry["image"]
        where = f"agents.{agent}.image"
    elif fault == "not_a_mapping":
        entry = data.draw(st.one_of(st.none(), non_mappings))
        where = f"agents.{agent}"
    else:
        entry[fault] = data.draw(BAD_AGENT_VALUES[fault])
    doc["agents"] = {**(doc.get("agents") or {}), agent: entry}
    message = config_error(data.draw(yaml_texts(doc)))
    check_message(message)
    assert shown(where) in message, (where, message)
    assert len(message) <= MAX_MESSAGE, message


@settings(FUZZ, max_examples=200)
@given(data=st.data())
def test_one_bad_block_is_refused_in_one_line_naming_it(data: st.DataObject) -> None:
    """Unknown agent types, bad agents/orchestrator/registry blocks, a non-mapping file."""
    doc, _ = data.draw(valid_files())
    fault = data.draw(
        st.sampled_from(
            [
                "agent_type",
                "agents",
                "orchestrator",
                "orchestrator_key",
                "host_id",
                "temporal",
                "registry",
                "registry_key",
                "compose",
                "file",
            ]
        )
    )
    where = fault
    if fault == "agent_type":
        name = data.draw(
            st.sampled_from(["lineage", "LINEAGE_PLUS", "data_health", "lineage_plus ", "sds"])
            | key_text.filter(lambda k: k not in AGENTS)
        )
        doc["agents"] = {**(doc.get("agents") or {}), name: {"image": "x"}}
        where = f"agents: unknown agent type {printable_value(name)}"  # shortened as shown
    elif fault == "agents":
        doc["agents"] = data.draw(non_mappings)
    elif fault in ("orchestrator", "temporal", "registry"):
        value = data.draw(
            st.one_of(st.text(max_size=5), st.integers(), st.lists(st.integers(), max_size=2))
        )
        if fault == "temporal":
            doc["orchestrator"] = {"temporal": value}
            where = "orchestrator.temporal"
        else:
            doc[fault] = value
    elif fault in ("orchestrator_key", "registry_key"):
        block = fault.removesuffix("_key")
        key = data.draw(key_text.filter(lambda k: k not in ("host_id", "server", "username")))
        doc[block] = {key: "x"}
        where = f"{block}.{key}"
    elif fault == "host_id":
        doc["orchestrator"] = {
            "host_id": data.draw(
                st.sampled_from(["-a", "a-", "a_b", "a.b", "a b", "", "x" * 257, "h\n"])
                | not_strings
            )
        }
        where = "orchestrator.host_id"
    elif fault == "compose":
        doc["docker_compose_enabled"] = data.draw(
            st.sampled_from(["maybe", 2, 2.5, None, [], {}, "enabled"])
        )
        where = "docker_compose_enabled"
    else:
        doc = data.draw(
            st.one_of(
                st.lists(st.integers(), min_size=1, max_size=3),
                st.integers(),
                st.text(min_size=1, max_size=10).filter(lambda t: not t.isspace()),
                st.booleans(),
            )
        )
        where = "must be a YAML mapping"
    message = config_error(data.draw(yaml_texts(doc)))
    check_message(message)
    assert shown(where) in message, (where, message)
    assert len(message) <= MAX_MESSAGE, message


BOUNDARIES: Final = [
    ("memory", "6m", True),
    ("memory", MIN_MEMORY, True),
    ("memory", "6144k", True),
    ("memory", "'6291456'", True),
    ("memory", "5.99m", False),
    ("memory", MIN_MEMORY - 1, False),
    ("memory", "6143k", False),
    ("memory", "'6291455'", False),
    ("cpus", 0.01, True),
    ("cpus", 0, False),
    ("cpus", -0.01, False),
    ("pids_limit", 16, True),
    ("pids_limit", 15, False),
    ("max_concurrent", 1, True),
    ("max_concurrent", 0, False),
    ("stop_grace_seconds", 0, True),
    ("stop_grace_seconds", -1, False),
    ("timeout_seconds", 1, True),
    ("timeout_seconds", 0, False),
]


@pytest.mark.parametrize(("key", "value", "accepted"), BOUNDARIES)
def test_each_limit_of_section_8_is_exact(key: str, value: Any, accepted: bool) -> None:
    """The last accepted and first refused value of each §8 range, written as YAML."""
    result = outcome(AGENT_LINE % f"{key}: {value}")
    if accepted:
        assert isinstance(result, HostConfig), result
    else:
        assert isinstance(result, str) and f"agents.datahealth.{key}" in result, result


@pytest.mark.parametrize("config_dir", ESCAPING_DIRS)
def test_every_escaping_config_dir_is_refused(config_dir: str) -> None:
    """Outside the host directory, the directory itself, or agent_config (the mTLS keys)."""
    message = config_error(AGENT_LINE % f"config_dir: {config_dir!r}")
    check_message(message)
    assert "agents.datahealth.config_dir" in message, message


# ---- broken YAML ---------------------------------------------------------------------------

# Each breaks any block mapping it is inserted into, wherever it goes between top-level keys.
BROKEN_LINES: Final = (
    "]",
    "}",
    "zz_broken: [1]]",
    "zz_broken: {a: 1}}",
    "zz_broken: a: b",
    "zz_broken: 'a' b",
    "\tzz_broken: 1",
    "zz_broken: @at",
    "zz_broken: `tick",
    "zz_broken: *undefined_alias",
    "zz_broken: !!python/object/apply:os.system [ls]",
    "? [a]\n: unhashable",
    "zz_one: &dup 1\nzz_two: &dup 2",
)


def top_level_starts(text: str) -> list[int]:
    """0-based numbers of the lines where a top-level key starts, and the end of the text."""
    node = yaml.compose(text, Loader=yaml.CSafeLoader)
    starts = [key.start_mark.line for key, _ in node.value] if node is not None else []
    return [*starts, len(text.splitlines())]


@settings(FUZZ, max_examples=200)
@given(data=st.data())
def test_broken_yaml_is_refused_with_its_line_and_column(data: st.DataObject) -> None:
    """A line that cannot parse is refused, located at or just after where it was put."""
    doc, _ = data.draw(valid_files())
    text = data.draw(yaml_texts({"docker_compose_enabled": True, **doc}, block=True))
    lines = text.splitlines()
    at = data.draw(st.sampled_from(top_level_starts(text)))
    broken = data.draw(st.sampled_from(BROKEN_LINES))
    message = config_error("\n".join([*lines[:at], broken, *lines[at:]]) + "\n")
    check_message(message)
    assert message.endswith(": fix the YAML syntax"), message
    location = LOCATION.search(message)
    assert location is not None, message
    line = int(location.group(1))
    assert at + 1 <= line <= at + 1 + broken.count("\n") + 1, (line, at, message)
    assert len(message) <= MAX_MESSAGE, message


YAML_CHARS: Final = "[]{}:,-#&*!|>'\"%@`?\t\n \\"


@st.composite
def mutated_texts(draw: st.DrawFn) -> str:
    """A valid file with characters inserted, deleted or replaced, or an indentation changed."""
    doc, _ = draw(valid_files())
    text = draw(yaml_texts(doc))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        how = draw(st.sampled_from(["insert", "delete", "replace", "indent"]))
        char = draw(st.sampled_from(YAML_CHARS) | st.characters())
        if how == "insert":
            text = text[:at] + char + text[at:]
        elif how == "delete":
            text = text[:at] + text[at + 1 :]
        elif how == "replace":
            text = text[:at] + char + text[at + 1 :]
        else:
            start = text.rfind("\n", 0, at) + 1
            text = text[:start] + draw(st.sampled_from([" ", "\t", "   "])) + text[start:]
    return text


PYYAML_CRASHES: Final = (ValueError, KeyError, AttributeError, IndexError, RecursionError)


def pyyaml_verdict(text: str) -> BaseException | None:
    """What yaml.safe_load (the module's loader) raises on `text`, if anything."""
    try:
        yaml.safe_load(text)
    except (yaml.YAMLError, *PYYAML_CRASHES) as exc:
        return exc
    return None


@settings(FUZZ, max_examples=250)
@given(text=mutated_texts() | st.text(max_size=200) | st.text(YAML_CHARS + "ab1", max_size=200))
def test_any_text_loads_or_is_refused_in_one_line(text: str) -> None:
    """Mutated and random texts: a HostConfig or one line; PyYAML's position when it gives one."""
    verdict = pyyaml_verdict(text)
    result = outcome(text)
    if isinstance(verdict, yaml.MarkedYAMLError) and verdict.problem_mark is not None:
        assert isinstance(result, str), text
        mark = verdict.problem_mark
        assert f"line {mark.line + 1}, column {mark.column + 1}" in result, result


# ---- files on disk -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def host_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("host")


@st.composite
def file_contents(draw: st.DrawFn) -> bytes:
    """Bytes as an editor may leave them: UTF-8 (BOM, CRLF), UTF-16, Latin-1, or noise."""
    doc, _ = draw(valid_files())
    text = draw(yaml_texts(doc))
    how = draw(st.sampled_from(["utf-8", "bom", "crlf", "utf-16", "latin-1", "bad-byte", "noise"]))
    if how == "bom":
        return b"\xef\xbb\xbf" + text.encode()
    if how == "crlf":
        return text.replace("\n", "\r\n").encode()
    if how == "utf-16":
        return text.encode("utf-16")
    if how == "latin-1":
        return ("# r\u00e9sum\u00e9\n" + text).encode("latin-1", errors="replace")
    if how == "bad-byte":
        raw = text.encode()
        at = draw(st.integers(0, len(raw)))
        return (
            raw[:at]
            + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"]))
            + raw[at:]
        )
    if how == "noise":
        return draw(st.binary(max_size=200))
    return text.encode()


@settings(FUZZ, max_examples=100, suppress_health_check=list(HealthCheck))
@given(content=file_contents())
def test_load_host_config_reads_any_bytes_or_refuses_in_one_line(
    host_dir: Path, content: bytes
) -> None:
    """A file's bytes load like its text (newlines translated) or are refused in one line."""
    path = host_dir / "bigeye_agent.yml"
    path.write_bytes(content)
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        with pytest.raises(ConfigError) as info:
            load_host_config(path)
        check_message(str(info.value), path)
        assert "cannot read" in str(info.value) and "utf-8" in str(info.value)
        return
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # what read_text does
    try:
        loaded: HostConfig | str = load_host_config(path)
    except ConfigError as exc:
        loaded = str(exc)
        check_message(loaded, path)
    try:
        parsed: HostConfig | str = parse_host_config(text, path)
    except ConfigError as exc:
        parsed = str(exc)
    assert loaded == parsed


@pytest.fixture
def special_files(tmp_path: Path) -> Iterator[dict[str, Path]]:
    (tmp_path / "directory").mkdir()
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "latin-1").write_bytes(b"agents:\n  datahealth: {image: caf\xe9}\n")
    yield {
        "directory": tmp_path / "directory",
        "missing": tmp_path / "missing.yml",
        "dangling": tmp_path / "dangling",
        "loop": tmp_path / "loop",
        "latin-1": tmp_path / "latin-1",
    }


@pytest.mark.parametrize("kind", ["directory", "missing", "dangling", "loop", "latin-1"])
def test_a_path_that_is_not_a_readable_file_is_refused_in_one_line(
    special_files: dict[str, Path], kind: str
) -> None:
    """A directory, no file, a dangling or looping symlink, non-UTF-8 bytes: one line."""
    path = special_files[kind]
    with pytest.raises(ConfigError) as info:
        load_host_config(path)
    check_message(str(info.value), path)
    assert len(str(info.value)) <= MAX_MESSAGE


# ---- YAML features that must keep working --------------------------------------------------


def test_anchors_and_merge_keys_are_resolved() -> None:
    """Shared settings through an anchor and `<<:` merge keys load like the expanded file."""
    text = """\
x-defaults: &defaults {memory: 4g, cpus: 2, env: {TZ: UTC}}
agents:
  lineage_plus: {<<: *defaults, image: a}
  datahealth:
    <<: *defaults
    image: b
    cpus: 0.5
"""
    host = outcome(text)
    assert isinstance(host, HostConfig)
    assert host.agents["lineage_plus"].memory_bytes == 4 * 1024**3
    assert host.agents["lineage_plus"].env == {"TZ": "UTC"}
    assert host.agents["datahealth"].cpus == 0.5


def alias_bomb(levels: int) -> str:
    """`levels` anchors, each a list of nine aliases of the one before: 9**levels leaves."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_under_another_agents_key_is_ignored_quickly() -> None:
    """Aliases stay shared references: a billion-leaf bomb in an ignored key costs nothing."""
    host = outcome(alias_bomb(9) + "agents:\n  datahealth: {image: x}\n")
    assert isinstance(host, HostConfig) and list(host.agents) == ["datahealth"]


@pytest.mark.parametrize("key", ["memory", "cpus", "image", "config_dir", "pids_limit"])
def test_an_alias_bomb_as_an_agent_value_is_refused_in_one_short_line(key: str) -> None:
    message = config_error(alias_bomb(9) + f"agents:\n  datahealth: {{image: x, {key}: *a9}}\n")
    check_message(message)
    assert f"agents.datahealth.{key}" in message and len(message) <= MAX_MESSAGE


# ---- inputs that once escaped as tracebacks or long messages ---------------------------


def test_a_size_too_large_for_a_float_is_refused() -> None:
    message = config_error(AGENT_LINE % f"memory: {'9' * 400}g")
    assert "agents.datahealth.memory" in message


@pytest.mark.parametrize(
    "text",
    [
        "x: " + "[" * 1000 + "]" * 1000 + "\n",
        "x: " + "{a: " * 1000 + "1" + "}" * 1000 + "\n",
        "x:\n" + "".join("  " * i + "-\n" for i in range(1000)),
    ],
    ids=["flow-lists", "flow-mappings", "block-lists"],
)
def test_very_deep_nesting_is_refused_in_one_line(text: str) -> None:
    check_message(config_error(text))


@pytest.mark.parametrize(
    "text",
    [
        "created: 2001-02-30\n",
        "created: 2001-13-01\n",
        "x: " + "1" * 5000 + "\n",
        "x: !!int abc\n",
        "x: !!int ''\n",
        "x: !!float abc\n",
        "x: !!bool abc\n",
        "x: !!timestamp abc\n",
        'x: "\\U00110000"\n',
    ],
    ids=[
        "impossible-date",
        "month-13",
        "5000-digit-int",
        "int-tag",
        "empty-int-tag",
        "float-tag",
        "bool-tag",
        "timestamp-tag",
        "escape-beyond-unicode",
    ],
)
def test_a_scalar_pyyaml_cannot_construct_is_refused_in_one_line(text: str) -> None:
    check_message(config_error(text))


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\ud800"], ids=repr)
def test_a_control_character_is_refused_naming_it_and_where(char: str) -> None:
    message = config_error(f"agents:\n  datahealth: {{image: x{char}}}\n")
    check_message(message)
    assert re.search(r"line \d+|position \d+", message), message


@pytest.mark.parametrize(
    "text",
    [
        'agents:\n  datahealth: {image: x, "bad\\nkey": 1}\n',
        'agents:\n  datahealth: {image: x, env: {"A\\nB": 1}}\n',
        'orchestrator: {"bad\\rkey": 1}\n',
        'registry: {"bad\\u2028key": 1}\n',
    ],
    ids=["agent-key", "env-key", "orchestrator-key", "registry-key"],
)
def test_a_key_with_a_line_break_is_refused_in_one_line(text: str) -> None:
    check_message(config_error(text))


def test_an_alias_bomb_as_an_env_value_is_refused_in_one_short_line() -> None:
    message = config_error(alias_bomb(5) + "agents:\n  datahealth: {image: x, env: {A: *a5}}\n")
    check_message(message)
    assert len(message) <= MAX_MESSAGE, len(message)


@pytest.mark.parametrize("value", [".inf", "1.0e-10"])
def test_cpus_that_docker_cannot_take_are_refused_at_start_up(value: str) -> None:
    result = outcome(AGENT_LINE % f"cpus: {value}")
    if isinstance(result, str):
        assert "agents.datahealth.cpus" in result
    else:
        assert container_violations("datahealth", result.agents["datahealth"]) == []


@pytest.mark.parametrize("name", ["A B", "1A", "", "A-B"])
def test_env_names_the_policy_refuses_are_refused_at_start_up(name: str) -> None:
    result = outcome(AGENT_LINE % f"env: {{'{name}': v}}")
    if isinstance(result, str):
        assert "agents.datahealth.env" in result
    else:
        assert container_violations("datahealth", result.agents["datahealth"]) == []
