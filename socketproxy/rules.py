"""The allowlist: one HTTP request in, one decision out. Pure — no I/O, no Docker client.

`decide` admits exactly the Docker Engine API calls of design §6 and answers every other
request with a `Deny`. An admitted request becomes a `Forward`, which holds everything the
server sends upstream — method, API version, path, query, body and headers are all rebuilt from
what was checked, nothing of the client's request is passed on verbatim except `X-Registry-Auth`
on a pull. A `Forward` with a `target` still needs the target container's labels checked
(`target_violation`) against an inspect the server makes itself; the server then forwards to
the container's full id, never to the name the client gave. A `Forward` with a `bind_source`
still needs that directory checked on disk (the server does it through its read-only mount).

The `Policy` holds what the proxy knows: its host id and directory, the agent set read from
`bigeye_agent.yml`, and the one API version every request is forwarded under.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from orchestrator.contract import (
    CONTAINER_NAME_PATTERN,
    JOB_NETWORK,
    LABEL_AGENT,
    LABEL_HOST_ID,
    LABEL_MANAGED,
)
from orchestrator.policy import structural_violations
from socketproxy import jsonstrict, references
from socketproxy.agentset import AgentSet, create_violations

MAX_BODY_BYTES: Final = 1024 * 1024
# The API versions the proxy forwards under: from Docker 20.10 (the oldest engine the stack
# supports) to the newest whose reference the admitted calls and fields were checked against.
# A client asking for an older version is refused; every request goes upstream under one
# version fixed at start-up (the engine's own, capped at MAX_API_VERSION).
MIN_API_VERSION: Final = (1, 41)
MAX_API_VERSION: Final = (1, 45)
MAX_REGISTRY_AUTH_BYTES: Final = 16 * 1024
# Container list filters: the label filter only (the proxy adds this host's two labels). Any
# other filter (before, since, id, name, ancestor, volume, network, ...) answers questions about
# containers that are not this host's.
LIST_FILTERS: Final = frozenset({"label"})
# A network inspect lists every container attached to the network, this host's or not.
NETWORK_INSPECT_HIDDEN: Final = ("Containers", "Services", "Peers")

METHOD_OVERRIDE_HEADERS: Final = frozenset(
    {"x-http-method-override", "x-http-method", "x-method-override"}
)
KILL_SIGNALS: Final = frozenset({"SIGTERM", "SIGKILL", "TERM", "KILL", "15", "9"})
WAIT_CONDITIONS: Final = frozenset({"not-running", "next-exit", "removed"})
EMPTY_BODY_CONTENT_TYPES: Final = frozenset({"text/plain", "application/octet-stream"})
NETWORK_KEYS: Final = frozenset({"Name", "Driver", "CheckDuplicate", "Labels"})

_VERSION = re.compile(r"/v([0-9]{1,3})\.([0-9]{1,3})(/.*)")
_PATH_CHARS = re.compile(r"[A-Za-z0-9._~:@/-]*")
_QUERY_CHARS = re.compile(r"[A-Za-z0-9._~%&=+:/@,-]*")
_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
CONTAINER_ID = re.compile(r"[0-9a-f]{64}")
# Docker image references: [domain[:port]/]path[:tag][@digest], or an image id.
_IMAGE_REF = re.compile(r"[A-Za-z0-9\[][A-Za-z0-9._:/@\[\]-]{0,511}")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")
_BOOL = re.compile(r"0|1|true|false")
_SECONDS = re.compile(r"[0-9]{1,6}")
_LIMIT = re.compile(r"-?[0-9]{1,6}")
_TAIL = re.compile(r"all|[0-9]{1,9}")
_TIME = re.compile(r"[0-9A-Za-z:.+-]{1,64}")
_REGISTRY_AUTH = re.compile(r"[A-Za-z0-9+/=_-]*")
_CONTENT_TYPE_JSON = re.compile(r"application/json(?:\s*;\s*charset=\"?utf-8\"?)?", re.I)

Query = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Policy:
    """What the proxy knows: its host's id, the host directory, the agent set, the API version."""

    host_id: str
    host_dir: str
    agents: AgentSet = field(default_factory=AgentSet)
    api_version: tuple[int, int] = MIN_API_VERSION

    @property
    def version_prefix(self) -> str:
        return f"/v{self.api_version[0]}.{self.api_version[1]}"


@dataclass(frozen=True)
class ProxyRequest:
    method: str
    target: str  # the raw request target: path and query exactly as received
    headers: Sequence[tuple[str, str]]  # every header line, in order
    body: bytes | None  # None: larger than MAX_BODY_BYTES (not read to the end)


@dataclass(frozen=True)
class Deny:
    reason: str
    status: int = 403  # 400 for a malformed body or query: what cannot be read is not judged


@dataclass(frozen=True)
class Forward:
    route: str
    method: str
    version: str  # the proxy's own, e.g. "/v1.41": never the client's
    path: str  # the path after the version; for a target, the part after the container ref
    query: Query = ()
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()
    target: str | None = None  # a container ref whose labels must be checked first
    target_suffix: str = ""
    bind_source: str | None = None  # a host directory that must exist (checked by the server)
    hide_keys: tuple[str, ...] = ()  # top-level keys removed from a JSON answer

    def upstream_target(self, container_id: str | None = None) -> str:
        """The request target sent to the engine; a checked container is named by its id."""
        if self.target is not None:
            if container_id is None:
                raise ValueError(f"{self.route} needs the checked container's id")
            path = f"/containers/{container_id}{self.target_suffix}"
        else:
            path = self.path
        target = self.version + path
        if self.query:
            target += "?" + "&".join(f"{_quote(key)}={_quote(value)}" for key, value in self.query)
        return target


Decision = Forward | Deny


@dataclass(frozen=True)
class _Parsed:
    method: str
    version: str
    path: str
    query: dict[str, str]
    body: bytes
    content_type: str | None
    registry_auth: str | None = field(default=None)


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


# ---- the request line and headers --------------------------------------------------------


def _header_problem(headers: Sequence[tuple[str, str]]) -> str | None:
    names = [name.lower() for name, _ in headers]
    for name in names:
        if name in METHOD_OVERRIDE_HEADERS:
            return f"method override header {name} is not allowed"
    for name in ("content-type", "content-length", "transfer-encoding", "x-registry-auth"):
        if names.count(name) > 1:
            return f"header {name} is repeated"
    for name, value in headers:
        lname = name.lower()
        if lname == "upgrade":
            return "connection upgrades (attach/exec hijacking) are not allowed"
        if lname == "connection" and "upgrade" in value.lower():
            return "connection upgrades (attach/exec hijacking) are not allowed"
        if lname == "content-encoding" and value.strip().lower() not in ("", "identity"):
            return "encoded request bodies are not allowed"
        if lname == "transfer-encoding" and value.strip().lower() != "chunked":
            return f"transfer encoding {value!r} is not allowed"
        if lname == "expect" and value.strip().lower() != "100-continue":
            return f"Expect: {value} is not allowed"
    return None


def _split_target(target: str) -> tuple[str, str, str] | Deny:
    """(version prefix, path, raw query); nothing is normalised, anything unusual denied."""
    if not target.startswith("/"):
        return Deny("request target must be an absolute path")
    path, sep, raw_query = target.partition("?")
    if sep and not raw_query:
        return Deny("empty query string")
    if "%" in path:
        return Deny("percent-encoding in the path is not allowed")
    if _PATH_CHARS.fullmatch(path) is None:
        return Deny("path has characters outside [A-Za-z0-9._~:@/-]")
    if "//" in path:
        return Deny("empty path segment (//) is not allowed")
    if any(segment in (".", "..") for segment in path.split("/")):
        return Deny("dot segments (. and ..) are not allowed in the path")
    version = ""
    match = _VERSION.fullmatch(path)
    if match is not None:
        if (int(match[1]), int(match[2])) < MIN_API_VERSION:
            return Deny(
                f"API version below v{MIN_API_VERSION[0]}.{MIN_API_VERSION[1]} is not allowed "
                "(the proxy forwards every request under its own version)"
            )
        version = f"/v{int(match[1])}.{int(match[2])}"
        if path[: len(version) + 1] != version + "/":
            return Deny("API version must be written without leading zeros")
        path = match[3]
    elif path.startswith("/v") and path[2:3].isdigit():
        return Deny("malformed API version prefix")
    return version, path, raw_query


def _decode_component(text: str) -> str | None:
    if _ESCAPE.search(text):
        return None
    raw = urllib.parse.unquote_to_bytes(text.replace("+", " "))
    try:
        decoded = raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        return None
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in decoded):
        return None
    return decoded


def _parse_query(raw: str) -> dict[str, str] | Deny:
    """Go's `url.ParseQuery`, minus everything it would read differently or leniently."""
    if not raw:
        return {}
    if _QUERY_CHARS.fullmatch(raw) is None:
        return Deny("query string has characters outside [A-Za-z0-9._~%&=+:/@,-]")
    params: dict[str, str] = {}
    for pair in raw.split("&"):
        if not pair:
            return Deny("empty query parameter")
        if "=" not in pair:
            return Deny(f"query parameter without a value: {pair[:64]!r}")
        raw_key, raw_value = pair.split("=", 1)
        key = _decode_component(raw_key)
        value = _decode_component(raw_value)
        if key is None or value is None:
            return Deny("malformed percent-encoding in the query string")
        if key in params:
            return Deny(f"query parameter {key!r} is repeated")
        params[key] = value
    return params


# ---- the routes ----------------------------------------------------------------------------

Validator = Callable[[str], bool]


def _pattern(regex: re.Pattern[str]) -> Validator:
    return lambda value: regex.fullmatch(value) is not None


def _one_of(values: frozenset[str]) -> Validator:
    return lambda value: value in values


_BOOL_PARAM: Final = _pattern(_BOOL)


def _params(
    req: _Parsed, allowed: Mapping[str, Validator], required: Sequence[str] = ()
) -> Deny | None:
    for key, value in req.query.items():
        check = allowed.get(key)
        if check is None:
            return Deny(f"query parameter {key!r} is not allowed here")
        if not check(value):
            return Deny(f"query parameter {key}={value[:64]!r} is not allowed")
    for key in required:
        if key not in req.query:
            return Deny(f"query parameter {key!r} is required")
    return None


def _no_body(req: _Parsed) -> Deny | None:
    if req.body:
        return Deny("a request body is not allowed here")
    return None


def _simple(req: _Parsed, route: str, allowed: Mapping[str, Validator] | None = None) -> Decision:
    problem = _params(req, allowed or {}) or _no_body(req)
    if problem is not None:
        return problem
    return Forward(route, req.method, req.version, req.path, tuple(req.query.items()))


def _json_body(req: _Parsed) -> dict[str, Any] | Deny:
    if req.body is None or not req.body:
        return Deny("a JSON body is required")
    if req.content_type is None:
        return Deny("Content-Type application/json is required with a body")
    try:
        return jsonstrict.loads_object(req.body)
    except jsonstrict.JSONRejected as exc:
        return Deny(f"body rejected: {exc}", 400)


def _agent_image(ref: references.ImageRef, policy: Policy, what: str) -> Deny | None:
    rule = policy.agents.image_allowed(ref)
    if rule is None:
        return Deny(
            f"{what} {str(ref)[:200]} is not the image of an agent of this host "
            f"(agent set: {policy.agents.describe()})"
        )
    if rule.refused is not None:
        return Deny(rule.refused)
    return None


def _image_create(req: _Parsed, policy: Policy) -> Decision:
    problem = _params(
        req,
        {"fromImage": _pattern(_IMAGE_REF), "tag": _pattern(_TAG)},
        required=("fromImage",),
    ) or _no_body(req)
    if problem is not None:
        return problem
    ref = references.pull_reference(req.query["fromImage"], req.query.get("tag"))
    if isinstance(ref, str):
        return Deny(ref)
    problem = _agent_image(ref, policy, "pull of")
    if problem is not None:
        return problem
    # The reference is sent as the proxy read it: the engine pulls exactly what was checked.
    if ref.digest is not None:
        query: Query = (("fromImage", str(ref)),)
    else:
        query = (("fromImage", ref.name), ("tag", ref.tag or "latest"))
    headers: tuple[tuple[str, str], ...] = ()
    if req.registry_auth is not None:
        headers = (("X-Registry-Auth", req.registry_auth),)
    return Forward("image.pull", req.method, req.version, req.path, query, None, headers)


def _image_inspect(req: _Parsed, policy: Policy) -> Decision:
    text = req.path[len("/images/") : -len("/json")]
    ref = references.parse(text) if _IMAGE_REF.fullmatch(text) else None
    if ref is None:
        return Deny("not an image reference the proxy can check (image ids are not inspected)")
    problem = _agent_image(ref, policy, "image")
    if problem is not None:
        return problem
    problem = _params(req, {}) or _no_body(req)
    if problem is not None:
        return problem
    # Named in full (domain, path and tag): the engine never falls back to an id prefix.
    path = f"/images/{ref.defaulted()}/json"
    return Forward("image.inspect", req.method, req.version, path)


def _network_create(req: _Parsed) -> Decision:
    problem = _params(req, {})
    if problem is not None:
        return problem
    body = _json_body(req)
    if isinstance(body, Deny):
        return body
    extra = sorted(set(body) - NETWORK_KEYS)
    if extra:
        return Deny(f"network create: {', '.join(extra)} not allowed")
    if body.get("Name") != JOB_NETWORK:
        return Deny(f"network create: only {JOB_NETWORK} may be created")
    if body.get("Driver") != "bridge":
        return Deny("network create: Driver must be bridge")
    if body.get("CheckDuplicate", True) is not True:
        return Deny("network create: CheckDuplicate must be true")
    if body.get("Labels") != {LABEL_MANAGED: "true"}:
        return Deny(f"network create: Labels must be exactly {{{LABEL_MANAGED}: true}}")
    # CheckDuplicate is forced on: without it a 20.10 engine creates a second bigeye-jobs.
    canonical = {
        "Name": JOB_NETWORK,
        "Driver": "bridge",
        "CheckDuplicate": True,
        "Labels": {LABEL_MANAGED: "true"},
    }
    return Forward(
        "network.create", req.method, req.version, req.path, (), jsonstrict.canonical(canonical)
    )


def _own_label_filters(raw: str | None, host_id: str) -> str | Deny:
    """`filters` with this host's managed labels added (label filters are ANDed)."""
    filters: dict[str, Any] = {}
    if raw is not None:
        try:
            filters = jsonstrict.loads_object(raw.encode())
        except jsonstrict.JSONRejected as exc:
            return Deny(f"filters rejected: {exc}", 400)
    merged: dict[str, dict[str, bool]] = {}
    for key, value in filters.items():
        if key not in LIST_FILTERS:
            return Deny(
                f"filter {key[:64]!r} is not allowed: a list is filtered by label only "
                "(this host's containers)"
            )
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            merged[key] = dict.fromkeys(value, True)
        elif isinstance(value, dict) and all(item is True for item in value.values()):
            merged[key] = dict.fromkeys(value, True)
        else:
            return Deny(f"filters.{key} must be a list of strings")
    labels = merged.setdefault("label", {})
    labels[f"{LABEL_MANAGED}=true"] = True
    labels[f"{LABEL_HOST_ID}={host_id}"] = True
    return jsonstrict.canonical(merged).decode()


def _container_list(req: _Parsed, policy: Policy) -> Decision:
    problem = _params(
        req,
        {
            "all": _BOOL_PARAM,
            "size": _BOOL_PARAM,
            "limit": _pattern(_LIMIT),
            "filters": lambda value: len(value) <= 8192,
        },
    ) or _no_body(req)
    if problem is not None:
        return problem
    filters = _own_label_filters(req.query.get("filters"), policy.host_id)
    if isinstance(filters, Deny):
        return filters
    query = {**req.query, "filters": filters}
    return Forward("container.list", req.method, req.version, req.path, tuple(query.items()))


def _container_create(req: _Parsed, policy: Policy) -> Decision:
    problem = _params(req, {"name": lambda value: True}, required=("name",))
    if problem is not None:
        return problem
    body = _json_body(req)
    if isinstance(body, Deny):
        return body
    name = req.query["name"]
    problems = structural_violations(
        body, host_id=policy.host_id, host_dir=policy.host_dir, name=name
    )
    if not problems:
        problems = create_violations(body, name=name, agents=policy.agents)
    if problems:
        return Deny("container create: " + "; ".join(problems))
    agent = policy.agents.agents[body["Labels"][LABEL_AGENT]]
    return Forward(
        "container.create",
        req.method,
        req.version,
        req.path,
        (("name", name),),
        jsonstrict.canonical(body),
        bind_source=agent.bind_source,
    )


# (method, suffix after /containers/{ref}) → (route, allowed query parameters)
_CONTAINER_ACTIONS: Final[dict[tuple[str, str], tuple[str, dict[str, Validator]]]] = {
    ("GET", "/json"): ("container.inspect", {"size": _BOOL_PARAM}),
    ("POST", "/start"): ("container.start", {}),
    ("POST", "/stop"): ("container.stop", {"t": _pattern(_SECONDS)}),
    ("POST", "/kill"): ("container.kill", {"signal": _one_of(KILL_SIGNALS)}),
    ("POST", "/wait"): ("container.wait", {"condition": _one_of(WAIT_CONDITIONS)}),
    (
        "GET",
        "/logs",
    ): (
        "container.logs",
        {
            "stdout": _BOOL_PARAM,
            "stderr": _BOOL_PARAM,
            "follow": _BOOL_PARAM,
            "timestamps": _BOOL_PARAM,
            "since": _pattern(_TIME),
            "until": _pattern(_TIME),
            "tail": _pattern(_TAIL),
        },
    ),
    ("DELETE", ""): ("container.remove", {"force": _BOOL_PARAM, "v": _BOOL_PARAM}),
}


def _container_action(req: _Parsed) -> Decision:
    rest = req.path[len("/containers/") :]
    ref, slash, action = rest.partition("/")
    suffix = slash + action
    known = _CONTAINER_ACTIONS.get((req.method, suffix))
    if known is None:
        return Deny(f"{req.method} {req.path[:120]} is not an allowed Docker API call")
    # The orchestrator names a container by its full id or its job name, nothing else: no id
    # prefixes, and no other names (whose existence a 404 would otherwise reveal).
    if CONTAINER_ID.fullmatch(ref) is None and CONTAINER_NAME_PATTERN.fullmatch(ref) is None:
        return Deny("a container is named by its full id or its job name (bigeye-job-...)")
    route, allowed = known
    problem = _params(req, allowed) or _no_body(req)
    if problem is not None:
        return problem
    return Forward(
        route,
        req.method,
        req.version,
        req.path,
        tuple(req.query.items()),
        target=ref,
        target_suffix=suffix,
    )


def _route(req: _Parsed, policy: Policy) -> Decision:
    method, path = req.method, req.path
    if path == "/_ping" and method in ("GET", "HEAD"):
        return _simple(req, "ping")
    if path == "/version" and method == "GET":
        return _simple(req, "version")
    if path == "/images/create" and method == "POST":
        return _image_create(req, policy)
    if (
        path.startswith("/images/")
        and path.endswith("/json")
        and len(path) > len("/images//json")
        and method == "GET"
    ):
        return _image_inspect(req, policy)
    if path == f"/networks/{JOB_NETWORK}" and method == "GET":
        inspect = _simple(req, "network.inspect")
        if isinstance(inspect, Deny):
            return inspect
        return replace(inspect, hide_keys=NETWORK_INSPECT_HIDDEN)
    if path == "/networks/create" and method == "POST":
        return _network_create(req)
    if path == "/containers/json" and method == "GET":
        return _container_list(req, policy)
    if path == "/containers/create" and method == "POST":
        return _container_create(req, policy)
    if path.startswith("/containers/") and path != "/containers/":
        return _container_action(req)
    return Deny(f"{method} {path} is not an allowed Docker API call")


def decide(request: ProxyRequest, policy: Policy) -> Decision:
    """Allow (as the exact request to send upstream) or deny one client request."""
    method = request.method
    if method not in ("GET", "HEAD", "POST", "DELETE"):
        return Deny(f"method {method[:16]!r} is not allowed")
    problem = _header_problem(request.headers)
    if problem is not None:
        return Deny(problem)
    split = _split_target(request.target)
    if isinstance(split, Deny):
        return split
    _, path, raw_query = split
    query = _parse_query(raw_query)
    if isinstance(query, Deny):
        return query
    if request.body is None:
        return Deny(f"request body larger than {MAX_BODY_BYTES} bytes")

    content_type = None
    registry_auth = None
    for name, value in request.headers:
        if name.lower() == "content-type":
            content_type = value.strip()
        elif name.lower() == "x-registry-auth":
            registry_auth = value.strip()
    if content_type is not None and _CONTENT_TYPE_JSON.fullmatch(content_type) is None:
        # An empty POST from the Docker CLI says text/plain, from aiohttp octet-stream: with
        # no body they carry nothing (and are not forwarded). Form types are never accepted.
        if request.body or content_type.lower() not in EMPTY_BODY_CONTENT_TYPES:
            return Deny("Content-Type must be application/json")
    if registry_auth is not None and (
        len(registry_auth) > MAX_REGISTRY_AUTH_BYTES
        or _REGISTRY_AUTH.fullmatch(registry_auth) is None
    ):
        return Deny("X-Registry-Auth must be base64")

    parsed = _Parsed(
        method, policy.version_prefix, path, query, request.body, content_type, registry_auth
    )
    return _route(parsed, policy)


def target_violation(info: Mapping[str, Any], policy: Policy) -> str | None:
    """Why the proxy must not act on this inspected container; None when it is ours."""
    config = info.get("Config")
    labels = config.get("Labels") if isinstance(config, Mapping) else None
    if not isinstance(labels, Mapping) or labels.get(LABEL_MANAGED) != "true":
        return "the container is not managed by the orchestrator"
    if labels.get(LABEL_HOST_ID) != policy.host_id:
        return "the container belongs to another host id"
    container_id = info.get("Id")
    if not isinstance(container_id, str) or CONTAINER_ID.fullmatch(container_id) is None:
        return "the engine's inspect has no container id"
    return None
