"""Property tests of `parse_job_request` (design §3): every input is accepted or refused cleanly.

Hypothesis generates three families of inputs, 4,500 requests per run (valid: 1,000; one fault:
1,000 top-level and 500 in the parameters of each agent; anything: 1,000):

* **valid by construction** (the §3 grammar, optional keys given, given as null, or omitted):
  always accepted, rendered as the §3 command line of safe tokens, and unchanged by a
  round trip through `model_dump(mode="json")` and through JSON text;
* **one fault away from valid** (a hostile value, a missing or unknown key, another agent's
  parameters, a value that is not an object): always refused with an `InvalidRequest` whose
  message is one short line naming the key at fault;
* **anything** (JSON values, Python-only values, valid and hostile keys mixed): either accepted
  (and then safe as above) or refused with one line; never any other exception.

The patterns are copied from design §3 rather than imported, so the tests check the contract
and not the module against itself. Every run is derandomized and uses no example database, so
CI sees the same examples on every run.

Bound on a refusal's length: `MAX_REFUSAL` = 500 characters for a request with one fault whose
keys and lists are small (at most 64 characters, at most 3 elements). The message is a log line
and the `InvalidJobRequest` failure message shown by Temporal and Bigeye: 500 characters hold a
key path, pydantic's longest message for this model (about 100 characters, pattern included) and
a few more problems, and still read on one screen line or two. Inputs with many faults get a
looser bound that only forbids amplification (a fixed allowance per node of the input).
Refusals show at most three problems and count the rest, and escape keys that could break the
line, so key names are generated from any characters and lists may hold many bad values.
"""

from __future__ import annotations

import json
import re
import string
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.contract import InvalidRequest, JobRunRequest, parse_job_request, printable_key

# ---- the contract, from design §3 ----------------------------------------------------------

ID_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
CONNECTOR_PATTERN: Final = r"[a-z0-9][a-z0-9_-]{0,63}"
FILE_NAME_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}"
COMMAND_PATTERN: Final = r"[a-z][a-z0-9-]{0,63}"

AGENTS: Final = ("lineage_plus", "datahealth", "external_monitors")
AGENT_COMMAND: Final = {
    "lineage_plus": ["lineage", "run"],
    "datahealth": ["datahealth", "run"],
    "external_monitors": ["external-monitors", "run"],
}
TOP_LEVEL_KEYS: Final = (
    "job_id",
    "run_id",
    "agent",
    "parameters",
    "timeout_seconds",
    "requested_by",
)
PARAMETER_KEYS: Final = {
    "lineage_plus": ("connectors", "connection_name", "no_sync", "skip_notifications"),
    "datahealth": ("file_name", "command"),
    "external_monitors": ("connector",),
}
ALL_PARAMETER_KEYS: Final = tuple(sorted({k for keys in PARAMETER_KEYS.values() for k in keys}))
# The only tokens of a command line that may start with '-': the §3 options.
OPTIONS: Final = frozenset(
    {"-c", "-n", "--no-sync", "--skip-notifications", "--file-name", "--command"}
)
# Every other token: no whitespace, no shell metacharacter, no leading '-' (not an option).
SAFE_VALUE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

MAX_REFUSAL: Final = 500

EXAMPLES: Final = 1000
FUZZ: Final = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# ---- valid requests ------------------------------------------------------------------------

ALNUM: Final = string.ascii_letters + string.digits
ID_CHARS: Final = ALNUM + "_.-"
CONNECTOR_FIRST: Final = string.ascii_lowercase + string.digits
CONNECTOR_CHARS: Final = CONNECTOR_FIRST + "_-"
COMMAND_CHARS: Final = string.ascii_lowercase + string.digits + "-"


def words(first: str, rest: str, max_rest: int) -> st.SearchStrategy[str]:
    """Strings of one `first` character and up to `max_rest` of `rest`, often at the limit."""
    tail = st.one_of(
        st.text(rest, max_size=8),
        st.text(rest, max_size=max_rest),
        st.text(rest, min_size=max_rest, max_size=max_rest),
    )
    return st.builds(str.__add__, st.sampled_from(first), tail)


def without_parent_reference(name: str) -> str:
    """The same length and alphabet, with every '..' broken up."""
    while ".." in name:
        name = name.replace("..", "._")
    return name


ids = words(ALNUM, ID_CHARS, 127)
connectors = words(CONNECTOR_FIRST, CONNECTOR_CHARS, 63)
file_names = words(ALNUM, ID_CHARS, 254).map(without_parent_reference)
commands = words(string.ascii_lowercase, COMMAND_CHARS, 63)
requested_by = st.one_of(st.text(max_size=256), st.text(min_size=256, max_size=256))

VALID_PARAMETERS: Final[dict[str, st.SearchStrategy[dict[str, Any]]]] = {
    "lineage_plus": st.fixed_dictionaries(
        {},
        optional={
            "connectors": st.lists(connectors, max_size=5),
            "connection_name": st.none() | ids,
            "no_sync": st.booleans(),
            "skip_notifications": st.booleans(),
        },
    ),
    "datahealth": st.fixed_dictionaries(
        {"file_name": file_names}, optional={"command": st.none() | commands}
    ),
    "external_monitors": st.fixed_dictionaries({"connector": connectors}),
}


@st.composite
def valid_requests(draw: st.DrawFn, agent: str | None = None) -> dict[str, Any]:
    """A request that follows §3; null-valued optional keys are sometimes given, sometimes not."""
    agent = agent or draw(st.sampled_from(AGENTS))
    raw: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {"job_id": ids, "run_id": ids, "agent": st.just(agent)},
            optional={
                # The upper bound is the host's agent timeout, checked when the run is planned.
                "timeout_seconds": st.none() | st.integers(1, 2**64),
                "requested_by": st.none() | requested_by,
            },
        )
    )
    # lineage_plus needs no parameter, so its `parameters` may be left out altogether.
    if agent != "lineage_plus" or draw(st.booleans()):
        raw["parameters"] = draw(VALID_PARAMETERS[agent])
    return raw


def expected_command(raw: dict[str, Any]) -> list[str]:
    """The command line of design §3's table, computed from the raw request."""
    params = raw.get("parameters", {})
    if raw["agent"] == "lineage_plus":
        argv = ["lineage", "run"]
        for connector in params.get("connectors", []):
            argv += ["-c", connector]
        if params.get("connection_name") is not None:
            argv += ["-n", params["connection_name"]]
        if params.get("no_sync"):
            argv.append("--no-sync")
        if params.get("skip_notifications"):
            argv.append("--skip-notifications")
        return argv
    if raw["agent"] == "datahealth":
        argv = ["datahealth", "run", "--file-name", params["file_name"]]
        if params.get("command") is not None:
            argv += ["--command", params["command"]]
        return argv
    return ["external-monitors", "run", "-c", params["connector"]]


# ---- hostile values ------------------------------------------------------------------------

# Whitespace, line breaks, NUL, shell and path metacharacters, and look-alikes of allowed
# characters (Cyrillic a, Greek omicron, fullwidth A and hyphen, dotless i, Kelvin sign,
# long s, Arabic-Indic three, mathematical zero, zero-width space, no-break space, BOM).
HOSTILE_CHARS: Final = (
    " \t\n\r\x00\x0b\x0c;|&$`()<>*?'\"\\/~#!{}[]=%+,:@^"
    "\u0430\u03bf\uff21\uff0d\u0131\u212a\u017f\u0663\U0001d7ce\u200b\u00a0\ufeff\u2028"
)
HOSTILE_STRINGS: Final = (
    "",
    "-",
    "-rf",
    "--help",
    "--file-name=/etc/passwd",
    ".",
    "..",
    ".hidden",
    "_x",
    "../etc/passwd",
    "a/../../b",
    "/etc/passwd",
    "a/b",
    "a b",
    "a\nb",
    "a\n",
    "\na",
    "a\x00",
    "$(reboot)",
    "`id`",
    "a;rm -rf /",
    "a|b",
    "a&&b",
    "a>b",
    "${IFS}",
    "*",
    "~",
    "a\\b",
    "\ufb01le",  # the 'fi' ligature
    "\uff21\uff22\uff23",
    "\u0430bc",
    "a\u200bb",
    "x" * 300,
)


def bad_strings(
    pattern: str, first: str, rest: str, max_rest: int, *, allow_dotdot: bool = True
) -> st.SearchStrategy[str]:
    """Strings that do not match `pattern` (or contain '..' unless `allow_dotdot`)."""
    valid = words(first, rest, min(max_rest, 12))
    candidates = st.one_of(
        st.sampled_from(HOSTILE_STRINGS),
        st.builds(
            lambda word, char, at: word[:at] + char + word[at:],
            valid,
            st.sampled_from(HOSTILE_CHARS),
            st.integers(0, 13),
        ),
        st.builds(str.__add__, st.sampled_from("-._ /\n"), valid),
        st.builds(str.__add__, valid, st.just("\n")),
        st.builds(str.__add__, st.sampled_from(first), st.just(rest[0] * (max_rest + 1))),
    )
    if not allow_dotdot:
        # names the pattern allows but the '..' rule refuses: as likely as all the rest
        dotted = st.builds(lambda a, b: f"{a}..{b}", valid, st.text(rest, max_size=4))
        candidates = st.one_of(dotted, candidates)
        return candidates.filter(lambda s: re.fullmatch(pattern, s) is None or ".." in s)
    return candidates.filter(lambda s: re.fullmatch(pattern, s) is None)


bad_ids = bad_strings(ID_PATTERN, ALNUM, ID_CHARS, 127)
bad_connectors = bad_strings(CONNECTOR_PATTERN, CONNECTOR_FIRST, CONNECTOR_CHARS, 63)
bad_file_names = bad_strings(FILE_NAME_PATTERN, ALNUM, ID_CHARS, 254, allow_dotdot=False)
bad_commands = bad_strings(COMMAND_PATTERN, string.ascii_lowercase, COMMAND_CHARS, 63)

small_json = st.one_of(
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
# Values that are not strings; `None` only where the key is not nullable.
not_strings = st.one_of(st.booleans(), st.integers(), st.floats(), small_json)
not_strings_or_null = st.none() | not_strings
# Strict: true is not 1, 1 is not true, "1" is neither, 1.0 is not an int.
not_ints = st.one_of(
    st.booleans(), st.floats(), st.text(string.digits, min_size=1, max_size=3), small_json
)
not_bools = st.one_of(
    st.none(), st.integers(), st.floats(), st.sampled_from(["true", "false", "1", ""]), small_json
)

# Key names: anything, line breaks and lone surrogates included (refusals escape them).
key_text = st.text(max_size=64)
TYPOS: Final = (
    "jobId",
    "job-id",
    "Job_ID",
    "timeout",
    "params",
    "agent_type",
    "__proto__",
    "$where",
)


def unknown_keys(known: tuple[str, ...]) -> st.SearchStrategy[str]:
    return (st.sampled_from(TYPOS) | key_text).filter(lambda key: key not in known)


def bad_values_of(agent: str, key: str) -> st.SearchStrategy[Any]:
    """A value of parameter `key` of `agent` that §3 refuses."""
    if key == "connectors":
        bad_item = bad_connectors | not_strings_or_null
        bad_list = st.builds(
            lambda items, bad, at: [*items[:at], *bad, *items[at:]],
            st.lists(connectors, max_size=2),
            st.lists(bad_item, min_size=1, max_size=8),
            st.integers(0, 2),
        )
        not_list = st.one_of(
            st.none(),
            connectors,
            st.booleans(),
            st.integers(),
            st.dictionaries(connectors, connectors, max_size=1),
        )
        return bad_list | not_list
    if key == "connection_name":
        return bad_ids | not_strings
    if key in ("no_sync", "skip_notifications"):
        return not_bools
    if key == "file_name":
        return bad_file_names | not_strings_or_null
    if key == "command":
        return bad_commands | not_strings
    assert key == "connector", (agent, key)
    return bad_connectors | not_strings_or_null


Fault = tuple[Any, tuple[str, ...]]  # the faulty input, and key paths its refusal may name


@st.composite
def top_level_faults(draw: st.DrawFn) -> Fault:
    """A valid request with one fault outside `parameters`, or no JSON object at all."""
    raw: dict[str, Any] = draw(valid_requests())
    fault = draw(
        st.sampled_from(
            ["id", "missing", "agent", "parameters", "timeout", "requested_by", "unknown", "value"]
        )
    )
    if fault == "id":
        key = draw(st.sampled_from(["job_id", "run_id"]))
        raw[key] = draw(bad_ids | not_strings_or_null)
        return raw, (key,)
    if fault == "missing":
        key = draw(st.sampled_from(["job_id", "run_id", "agent"]))
        del raw[key]
        return raw, (key,)
    if fault == "agent":
        raw["agent"] = draw(
            st.sampled_from(["Lineage_plus", "lineage-plus", "lineage_plus ", "datahealth\n"])
            | st.text(max_size=20).filter(lambda a: a not in AGENTS)
            | not_strings_or_null
        )
        return raw, ("agent",)
    if fault == "parameters":
        raw["parameters"] = draw(
            st.one_of(
                st.none(),
                st.text(max_size=10),
                st.booleans(),
                st.integers(),
                st.lists(st.integers(), max_size=2),
            )
        )
        return raw, ("parameters",)
    if fault == "timeout":
        raw["timeout_seconds"] = draw(
            st.integers(max_value=0)
            | st.sampled_from([0, -1, -(2**70), 1.0, 3600.0, float("nan"), float("inf"), "1"])
            | not_ints
        )
        return raw, ("timeout_seconds",)
    if fault == "requested_by":
        raw["requested_by"] = draw(
            st.text(min_size=257, max_size=257) | st.text(min_size=257, max_size=600) | not_strings
        )
        return raw, ("requested_by",)
    if fault == "unknown":
        key = draw(unknown_keys(TOP_LEVEL_KEYS))
        raw[key] = draw(st.none() | st.integers() | st.text(max_size=10) | small_json)
        # an empty key has an empty location, which the message calls `request`
        return raw, (key or "request",)
    value = draw(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(),
            st.text(max_size=20),
            st.just([raw]),
            st.just(json.dumps(raw)),  # a request encoded twice
        )
    )
    return value, ("request",)


@st.composite
def parameter_faults(draw: st.DrawFn, agent: str) -> Fault:
    """A valid request of `agent` with one fault inside `parameters`."""
    raw: dict[str, Any] = draw(valid_requests(agent))
    params = dict(raw.get("parameters", {}))
    fault = draw(st.sampled_from(["value", "value", "unknown", "other_agent", "missing"]))
    if fault == "unknown":
        key = draw(unknown_keys(PARAMETER_KEYS[agent]))
        params[key] = draw(st.none() | st.booleans() | st.text(max_size=10))
        raw["parameters"] = params
        return raw, (f"parameters.{key}" if key else "parameters.",)
    if fault == "other_agent":
        other = draw(st.sampled_from([a for a in AGENTS if a != agent]))
        raw["parameters"] = draw(VALID_PARAMETERS[other])
        return raw, ("parameters",)
    if fault == "missing" and agent != "lineage_plus":
        key = "file_name" if agent == "datahealth" else "connector"
        del params[key]
        raw["parameters"] = params
        return raw, (f"parameters.{key}",)
    key = draw(st.sampled_from(PARAMETER_KEYS[agent]))
    params[key] = draw(bad_values_of(agent, key))
    raw["parameters"] = params
    return raw, (f"parameters.{key}",)


# ---- anything ------------------------------------------------------------------------------

chaos_keys = st.one_of(
    st.sampled_from(TOP_LEVEL_KEYS + ALL_PARAMETER_KEYS),
    key_text,
    st.just("\ud800lone-surrogate"),
    st.integers(-1, 1),  # Python-only: JSON keys are strings
    st.none(),
)
chaos_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63, -(2**63) - 1, 10**100]),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(HOSTILE_STRINGS),
    st.just("\ud800"),  # a lone surrogate: JSON may carry one as "\\ud800"
    st.binary(max_size=4),  # Python-only from here
    st.frozensets(st.integers(), max_size=2),
)
chaos_values = st.recursive(
    chaos_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(chaos_keys, children, max_size=4),
    ),
    max_leaves=12,
)
CHANGES: Final = ("keep", "keep", "keep", "keep", "keep", "keep", "anything", "drop")


def mutated(draw: st.DrawFn, mapping: dict[Any, Any]) -> dict[Any, Any]:
    """Each value kept (mostly), replaced by anything, or dropped; unknown keys sometimes added."""
    result: dict[Any, Any] = {}
    for key, value in mapping.items():
        change = draw(st.sampled_from(CHANGES))
        if change != "drop":
            result[key] = value if change == "keep" else draw(chaos_values)
    extra = draw(st.one_of(st.just({}), st.dictionaries(chaos_keys, chaos_values, max_size=2)))
    return {**extra, **result}


@st.composite
def chaos_objects(draw: st.DrawFn) -> dict[Any, Any]:
    """A valid request with any of its keys, top-level or parameters, changed at random."""
    raw = draw(valid_requests())
    if isinstance(raw.get("parameters"), dict):
        raw["parameters"] = mutated(draw, raw["parameters"])
    return mutated(draw, raw)


anything = st.one_of(chaos_objects(), chaos_objects(), chaos_objects(), chaos_values)


# ---- checks --------------------------------------------------------------------------------


def check_accepted(request: JobRunRequest) -> list[str]:
    """An accepted request renders a safe argv and survives model_dump and JSON unchanged."""
    assert isinstance(request, JobRunRequest)
    argv = request.command()
    assert isinstance(argv, list) and all(isinstance(token, str) for token in argv)
    assert argv[:2] == AGENT_COMMAND[request.agent]
    for token in argv[2:]:
        assert token in OPTIONS or SAFE_VALUE.fullmatch(token), (token, argv)
    if request.agent == "datahealth":
        file_name = argv[argv.index("--file-name") + 1]
        assert ".." not in file_name and "/" not in file_name
    dumped = request.model_dump(mode="json")
    assert parse_job_request(dumped) == request
    assert parse_job_request(json.loads(json.dumps(dumped))) == request
    return argv


def refusal(raw: Any) -> str:
    """The refusal's message; any exception other than InvalidRequest fails the test."""
    with pytest.raises(InvalidRequest) as info:
        parse_job_request(raw)
    return str(info.value)


def check_refusal_message(message: str, raw: Any, *, deep: bool = False) -> None:
    """One non-empty line, encodable for a log or a Temporal failure, not the input's repr."""
    assert message
    assert message.splitlines() == [message], message
    message.encode("utf-8")  # a lone surrogate in a key must not make the message unprintable
    if not deep and isinstance(raw, dict | list) and len(repr(raw)) > 40:
        assert repr(raw) not in message


def names_a_key(message: str, raw: Any) -> bool:
    """The message starts with a key of the contract, `request`, or a key the input holds."""
    names = {*TOP_LEVEL_KEYS, "request"}
    if isinstance(raw, dict):
        names |= {printable_key(key) for key in raw}
    return any(message.startswith(name) for name in names)


def shown(key: str) -> str:
    """A key path as a refusal shows it: the key escaped when it is not printable (a key may
    hold dots itself: only the `parameters.` prefix is a path)."""
    prefix = "parameters." if key.startswith("parameters.") else ""
    return prefix + printable_key(key.removeprefix(prefix))


def nodes(value: Any) -> int:
    """Keys, elements and characters of keys in `value`: the size a message may grow with."""
    if isinstance(value, dict):
        return sum(1 + len(str(key)) + nodes(item) for key, item in value.items())
    if isinstance(value, list | tuple | frozenset):
        return sum(1 + nodes(item) for item in value)
    return 1


# ---- properties ----------------------------------------------------------------------------


@FUZZ
@given(raw=valid_requests())
def test_valid_requests_are_accepted_rendered_safely_and_round_trip(raw: dict[str, Any]) -> None:
    """Every request built from the §3 grammar is accepted as given and renders its command."""
    request = parse_job_request(raw)
    assert check_accepted(request) == expected_command(raw)
    assert (request.job_id, request.run_id, request.agent) == (
        raw["job_id"],
        raw["run_id"],
        raw["agent"],
    )
    assert request.timeout_seconds == raw.get("timeout_seconds")
    assert request.requested_by == raw.get("requested_by")
    assert parse_job_request(json.loads(json.dumps(raw))) == request


def check_one_fault(case: Fault) -> None:
    """One fault is always refused, naming the faulty key in one line of MAX_REFUSAL chars."""
    raw, keys = case
    message = refusal(raw)
    check_refusal_message(message, raw)
    assert any(shown(key) in message for key in keys), (keys, message)
    assert len(message) <= MAX_REFUSAL, message


@FUZZ
@given(case=top_level_faults())
def test_a_request_with_one_top_level_fault_is_refused_naming_the_key(case: Fault) -> None:
    """Bad ids, agents, timeouts, requesters, unknown or missing keys, non-objects: refused."""
    check_one_fault(case)


@pytest.mark.parametrize("agent", AGENTS)
@settings(FUZZ, max_examples=EXAMPLES // 2)
@given(data=st.data())
def test_a_request_with_one_parameter_fault_is_refused_naming_the_key(
    agent: str, data: st.DataObject
) -> None:
    """Bad, unknown, missing or another agent's parameters: refused (1,500 requests in all)."""
    check_one_fault(data.draw(parameter_faults(agent)))


@FUZZ
@given(raw=anything)
def test_anything_is_accepted_safely_or_refused_in_one_line(raw: Any) -> None:
    """No input makes parse_job_request raise anything but InvalidRequest."""
    try:
        request = parse_job_request(raw)
    except InvalidRequest as exc:
        message = str(exc)
        check_refusal_message(message, raw)
        assert names_a_key(message, raw), message
        assert len(message) <= MAX_REFUSAL + 100 * nodes(raw), message
    else:
        check_accepted(request)


# ---- inputs too big for the generators -----------------------------------------------------


def nested(depth: int, leaf: Any, *, as_dict: bool = False) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"k": value} if as_dict else [value]
    return value


BASE: Final = {"job_id": "job-1", "run_id": "run-1", "agent": "lineage_plus"}


@pytest.mark.parametrize("as_dict", [False, True], ids=["lists", "dicts"])
@pytest.mark.parametrize("where", ["job_id", "parameters", "connectors", "unknown", "top"])
def test_very_deep_nesting_is_refused_without_recursion_error(where: str, as_dict: bool) -> None:
    """100,000 levels of nesting anywhere: InvalidRequest, not RecursionError."""
    deep = nested(100_000, "x", as_dict=as_dict)
    raw: Any = {
        "job_id": {**BASE, "job_id": deep},
        "parameters": {**BASE, "parameters": {"connection_name": deep}},
        "connectors": {**BASE, "parameters": {"connectors": deep}},
        "unknown": {**BASE, "extra": deep},
        "top": deep,
    }[where]
    message = refusal(raw)
    check_refusal_message(message, raw, deep=True)  # repr(raw) itself would recurse too deep
    assert len(message) <= MAX_REFUSAL


def test_a_huge_request_is_refused_in_one_line() -> None:
    """Megabyte-sized values are refused; the message does not repeat them."""
    raw = {
        **BASE,
        "job_id": "j" * 1_000_000,
        "requested_by": "r" * 1_000_000,
        "timeout_seconds": -(10**4000),
    }
    message = refusal(raw)
    check_refusal_message(message, raw)
    assert len(message) <= MAX_REFUSAL


# ---- once bugs: a line break in a key, many bad values in a small request -----------------


@pytest.mark.parametrize(
    "raw",
    [
        {**BASE, "bad\nkey": 1},
        {**BASE, "bad\rkey": 1},
        {**BASE, "parameters": {"bad\nkey": 1}},
        {**BASE, "parameters": {"bad\u2028key": 1}},
    ],
    ids=["top-newline", "top-cr", "parameters-newline", "parameters-u2028"],
)
def test_an_unknown_key_with_a_line_break_is_refused_in_one_line(raw: dict[str, Any]) -> None:
    message = refusal(raw)
    assert message.splitlines() == [message], message


def test_a_small_request_with_many_bad_values_gets_a_short_refusal() -> None:
    raw = {**BASE, "parameters": {"connectors": [""] * 8}}
    assert len(json.dumps(raw)) < 130  # not a huge input
    message = refusal(raw)
    check_refusal_message(message, raw)
    assert len(message) <= MAX_REFUSAL, (len(message), message)
