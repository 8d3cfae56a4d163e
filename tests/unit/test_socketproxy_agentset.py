"""The proxy and the agent set: images (references, pulls, inspects, loopback registries),
API versions, and create bodies held to their agent's entry. No Docker."""

from __future__ import annotations

import copy
import json
import urllib.parse
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from activities.agents import LOG_MAX_FILE, LOG_MAX_SIZE, config_bind_source
from orchestrator.contract import LABEL_AGENT
from orchestrator.hostconfig import HostConfig
from orchestrator.policy import REQUIRED_LABELS, label_set_violations
from socketproxy import references
from socketproxy.agentset import LOG_CONFIG, AgentSet
from socketproxy.references import ImageRef
from socketproxy.rules import (
    MAX_API_VERSION,
    MIN_API_VERSION,
    Decision,
    Deny,
    Forward,
    Policy,
    ProxyRequest,
    decide,
)
from tests.bodies import plan_for

HOST_ID = "prod-agent-01"
HOST_DIR = "/srv/host"
JSON_CT = ("Content-Type", "application/json")
DIGEST = "sha256:" + "e" * 64
IMAGES = {
    "lineage_plus": "docker.io/bigeyedata/lineage-plus:1.2",
    "datahealth": "bigeye-demo-agent:dev",
    "external_monitors": f"reg.example.com:5000/bigeye/em@{DIGEST}",
}
REQUESTS = {
    "lineage_plus": {"connectors": ["snowflake"]},
    "datahealth": {"file_name": "checks.yml"},
    "external_monitors": {"connector": "dbt"},
}


def host_config(images: dict[str, str] = IMAGES, **extra: dict[str, Any]) -> HostConfig:
    agents = {name: {"image": image, **extra.get(name, {})} for name, image in images.items()}
    return HostConfig.model_validate({"agents": agents})


def policy_for(
    host: HostConfig, *, loopback: bool = False, version: tuple[int, int] = (1, 41)
) -> Policy:
    agents = AgentSet.from_host_config(host, HOST_DIR, allow_loopback_registry=loopback)
    return Policy(HOST_ID, HOST_DIR, agents, version)


POLICY = policy_for(host_config())


def call(method: str, target: str, body: Any = b"", policy: Policy = POLICY) -> Decision:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    return decide(ProxyRequest(method, target, [JSON_CT], raw), policy)


def allowed(decision: Decision) -> Forward:
    assert isinstance(decision, Forward), decision
    return decision


def denied(decision: Decision, why: str = "") -> str:
    assert isinstance(decision, Deny), decision
    assert decision.status == 403, decision
    assert why in decision.reason, decision.reason
    return decision.reason


def body_of(agent: str, host: HostConfig | None = None, run_id: str = "run-1") -> dict[str, Any]:
    request = {"job_id": "job-1", "run_id": run_id, "agent": agent, "parameters": REQUESTS[agent]}
    plan = plan_for(host or host_config(), request, host_id=HOST_ID, host_dir=HOST_DIR)
    return plan.create_body


def create(body: dict[str, Any], policy: Policy = POLICY, run_id: str = "run-1") -> Decision:
    return call("POST", f"/v1.41/containers/create?name=bigeye-job-job-1-{run_id}", body, policy)


# ---- image references ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("alpine", "docker.io/library/alpine"),
        ("alpine:3", "docker.io/library/alpine:3"),
        ("library/alpine:3", "docker.io/library/alpine:3"),
        ("docker.io/alpine:3", "docker.io/library/alpine:3"),
        ("index.docker.io/library/alpine:3", "docker.io/library/alpine:3"),
        ("bigeyedata/lp:1.2", "docker.io/bigeyedata/lp:1.2"),
        ("localhost/a", "localhost/a"),
        ("localhost:5000/a/b:c", "localhost:5000/a/b:c"),
        ("reg.example.com/a/b__c.d-e:v1.0_x", "reg.example.com/a/b__c.d-e:v1.0_x"),
        ("Reg.Example.com/a:1", "Reg.Example.com/a:1"),
        (f"reg:5000/a@{DIGEST}", f"reg:5000/a@{DIGEST}"),
        (f"reg:5000/a:1@{DIGEST}", f"reg:5000/a:1@{DIGEST}"),
        ("[::1]:5000/a:1", "[::1]:5000/a:1"),
    ],
)
def test_references_are_normalised_as_the_engine_does(text, normal):
    ref = references.parse(text)
    assert ref is not None and str(ref) == normal
    assert references.parse(normal) == ref


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Alpine",
        "UPPER/a",  # a registry for newer engines, a bad repository for older ones
        "a/B",
        "a:",
        "a@sha256:abc",
        "a@md5:" + "0" * 32,
        "a/../b",
        "a//b",
        "-a",
        "a-",
        "a:-1",
        ":1",
        "a b",
        "e" * 64,  # the engine reads it as an image id
        "a" * 300,
        "reg:99999999/a",
        "reg.example.com/",
    ],
)
def test_references_the_engine_might_read_otherwise_are_refused(text):
    assert references.parse(text) is None


_COMPONENT = st.from_regex(r"[a-z0-9]{1,5}(?:[._-][a-z0-9]{1,5}){0,2}", fullmatch=True)
_TAGS = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}", fullmatch=True)
_DOMAINS = st.sampled_from(["", "docker.io/", "reg.example.com/", "localhost:5000/", "r:1/"])


@settings(max_examples=300, deadline=None)
@given(
    domain=_DOMAINS,
    path=st.lists(_COMPONENT, min_size=1, max_size=3),
    tag=st.none() | _TAGS,
    digest=st.none() | st.just(DIGEST),
)
def test_normalising_twice_changes_nothing(domain, path, tag, digest):
    # Without a domain, a first component with a dot is a registry's name (as the engine reads it).
    assume(domain or len(path) == 1 or "." not in path[0])
    text = domain + "/".join(path) + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    ref = references.parse(text)
    assert ref is not None, text
    assert references.parse(str(ref)) == ref
    assert ref.tag == tag and ref.digest == digest


@pytest.mark.parametrize(
    ("domain", "loopback"),
    [
        ("127.0.0.1:5000", True),
        ("127.0.0.1", True),
        ("127.1.2.3:5000", True),
        ("127.1:5000", True),  # the C library reads 127.1 as 127.0.0.1
        ("2130706433:5000", True),  # and a plain number as an address
        ("0x7f.1:5000", True),
        ("0.0.0.0:5000", True),
        ("0:5000", True),
        ("localhost", True),
        ("localhost:5000", True),
        ("LOCALHOST:5000", True),
        ("registry.localhost:5000", True),
        ("[::1]:5000", True),
        ("[::]:5000", True),
        ("[::ffff:127.0.0.1]:5000", True),
        ("reg.example.com", False),
        ("10.0.0.5:5000", False),
        ("128.0.0.1:5000", False),
        ("[2001:db8::1]:5000", False),
        ("docker.io", False),
    ],
)
def test_loopback_registries(domain, loopback):
    ref = references.parse(f"{domain}/bigeye/agent:1")
    assert ref is not None
    assert references.loopback_registry(ref) is loopback


# ---- pulls ----------------------------------------------------------------------------------


def pull(from_image: str, tag: str | None = None, policy: Policy = POLICY) -> Decision:
    query = {"fromImage": from_image} | ({"tag": tag} if tag is not None else {})
    return call("POST", "/v1.41/images/create?" + urllib.parse.urlencode(query), policy=policy)


@pytest.mark.parametrize(
    ("from_image", "tag", "sent"),
    [
        ("docker.io/bigeyedata/lineage-plus", "1.2", "docker.io/bigeyedata/lineage-plus:1.2"),
        ("bigeyedata/lineage-plus", "1.2", "docker.io/bigeyedata/lineage-plus:1.2"),
        ("docker.io/bigeyedata/lineage-plus:1.2", None, "docker.io/bigeyedata/lineage-plus:1.2"),
        ("index.docker.io/bigeyedata/lineage-plus:1.2", None, IMAGES["lineage_plus"]),
        # the engine: a tag parameter replaces the reference's tag
        ("docker.io/bigeyedata/lineage-plus:9", "1.2", "docker.io/bigeyedata/lineage-plus:1.2"),
        ("bigeye-demo-agent", "dev", "docker.io/library/bigeye-demo-agent:dev"),
        ("bigeye-demo-agent:dev", None, "docker.io/library/bigeye-demo-agent:dev"),
        (IMAGES["external_monitors"], None, IMAGES["external_monitors"]),
        ("reg.example.com:5000/bigeye/em", DIGEST, f"reg.example.com:5000/bigeye/em@{DIGEST}"),
    ],
)  # fmt: skip
def test_pulls_of_the_agents_images(from_image, tag, sent):
    forward = allowed(pull(from_image, tag))
    fields = dict(forward.query)
    rebuilt = fields["fromImage"] + (f":{fields['tag']}" if "tag" in fields else "")
    assert rebuilt == sent
    assert forward.upstream_target().startswith("/v1.41/images/create?fromImage=")


@pytest.mark.parametrize(
    ("from_image", "tag", "why"),
    [
        ("alpine", "latest", "not the image of an agent"),
        ("docker.io/bigeyedata/lineage-plus", "1.3", "not the image of an agent"),
        ("docker.io/bigeyedata/lineage-plus", "latest", "not the image of an agent"),
        ("docker.io/bigeyedata/lineage-plus:1.2", "1.3", "not the image of an agent"),
        ("docker.io/bigeyedata/lineage-plus", None, "every tag"),
        ("docker.io/bigeyedata/lineage-plus:", None, "not an image reference"),
        ("docker.io/bigeyedata/lineage-plus", DIGEST, "not the image of an agent"),
        ("reg.example.com:5000/bigeye/em", "latest", "not the image of an agent"),
        ("reg.example.com:5000/bigeye/em", "sha256:" + "f" * 64, "not the image of an agent"),
        ("reg.example.com:5000/bigeye/em:1", None, "not the image of an agent"),
        ("reg.example.com:5000/bigeye/em", None, "every tag"),
        ("bigeyedata/agent-docker-socket-proxy", "dev", "not the image of an agent"),
        ("127.0.0.1:5000/bigeye/x", "1", "not the image of an agent"),
        ("e" * 64, None, "not an image reference"),
        ("BIGEYE-demo-agent", "dev", "not an image reference"),
    ],
)
def test_pulls_of_anything_else_are_denied(from_image, tag, why):
    denied(pull(from_image, tag), why)


@pytest.mark.parametrize(
    "image",
    [
        "127.0.0.1:5000/bigeye/agent:1",
        "localhost:5000/bigeye/agent:1",
        "[::1]:5000/bigeye/agent:1",
        "0.0.0.0:5000/bigeye/agent:1",
        "127.1:5000/bigeye/agent:1",
    ],
)
def test_an_agent_on_a_loopback_registry_is_refused_unless_allowed(image):
    host = host_config({"datahealth": image})
    strict, loose = policy_for(host), policy_for(host, loopback=True)
    assert strict.agents.refusals and "loopback" in strict.agents.refusals[0]
    assert "BIGEYE_PROXY_ALLOW_LOOPBACK_REGISTRY=1" in strict.agents.refusals[0]
    assert not loose.agents.refusals
    ref = references.parse(image)
    assert ref is not None
    name, tag = ref.name, ref.tag
    for policy, ok in ((strict, False), (loose, True)):
        decisions = [pull(name, tag, policy=policy), create(body_of("datahealth", host), policy)]
        inspect = call("GET", f"/v1.41/images/{image}/json", policy=policy)
        if "[" in image:
            denied(inspect, "characters outside")  # brackets never reach a path
        else:
            decisions.append(inspect)
        for decision in decisions:
            if ok:
                allowed(decision)
            else:
                denied(decision, "loopback")


def test_an_empty_agent_set_denies_every_image_and_create():
    empty = Policy(HOST_ID, HOST_DIR, AgentSet(), (1, 41))
    denied(pull("bigeye-demo-agent", "dev", policy=empty), "agent set: none")
    denied(call("GET", "/images/bigeye-demo-agent:dev/json", policy=empty), "agent set: none")
    denied(create(body_of("datahealth"), empty), "not an agent of this host (agent set: none)")
    allowed(call("GET", "/_ping", policy=empty))
    allowed(call("GET", "/v1.41/containers/json?all=1", policy=empty))


# ---- image inspects -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "sent"),
    [
        ("bigeye-demo-agent:dev", "docker.io/library/bigeye-demo-agent:dev"),
        ("docker.io/library/bigeye-demo-agent:dev", "docker.io/library/bigeye-demo-agent:dev"),
        ("docker.io/bigeyedata/lineage-plus:1.2", "docker.io/bigeyedata/lineage-plus:1.2"),
        ("bigeyedata/lineage-plus:1.2", "docker.io/bigeyedata/lineage-plus:1.2"),
        (f"reg.example.com:5000/bigeye/em@{DIGEST}", f"reg.example.com:5000/bigeye/em@{DIGEST}"),
    ],
)
def test_inspects_of_the_agents_images_are_sent_named_in_full(name, sent):
    forward = allowed(call("GET", f"/v1.41/images/{name}/json"))
    assert forward.upstream_target() == f"/v1.41/images/{sent}/json"


@pytest.mark.parametrize(
    "name",
    [
        "bigeye-demo-agent",  # :latest, not :dev
        "bigeye-demo-agent:latest",
        "bigeyedata/agent-docker-socket-proxy:dev",
        "bigeyedata/agent-orchestrator:dev",
        "alpine:3",
        "sha256:" + "a" * 64,  # an image id: any local image
        "a" * 64,
        "abc123",  # an id prefix for an engine without abc123:latest
        "reg.example.com:5000/bigeye/em",
        "reg.example.com:5000/bigeye/em:latest",
        f"reg.example.com:5000/other@{DIGEST}",
    ],
)
def test_inspects_of_other_images_are_denied(name):
    # An inspect shows the image's Env: a credential baked into a local image, for example.
    denied(call("GET", f"/v1.41/images/{name}/json"))


def test_an_image_inspect_takes_no_parameters():
    denied(call("GET", "/images/bigeye-demo-agent:dev/json?manifests=1"), "not allowed")


# ---- API versions ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.24", "1.25", "1.30", "1.39", "1.40"])
def test_client_versions_below_the_minimum_are_denied(version):
    for path in ("/_ping", "/version", "/containers/json", "/images/bigeye-demo-agent:dev/json"):
        denied(call("GET", f"/v{version}{path}"), "API version below v1.41")
    target = f"/v{version}/containers/create?name=bigeye-job-job-1-run-1"
    denied(call("POST", target, body_of("datahealth")), "API version")


@pytest.mark.parametrize("fixed", [(1, 41), (1, 43), MAX_API_VERSION])
@pytest.mark.parametrize("client", ["", "/v1.41", "/v1.43", "/v1.45", "/v1.50"])
def test_requests_are_forwarded_under_the_proxys_version_never_the_clients(fixed, client):
    policy = policy_for(host_config(), version=fixed)
    prefix = f"/v{fixed[0]}.{fixed[1]}"
    forward = allowed(
        call(
            "POST",
            f"{client}/containers/create?name=bigeye-job-job-1-run-1",
            body_of("datahealth"),
            policy,
        )
    )
    assert forward.upstream_target() == f"{prefix}/containers/create?name=bigeye-job-job-1-run-1"
    assert allowed(call("GET", f"{client}/_ping", policy=policy)).upstream_target() == (
        f"{prefix}/_ping"
    )


def test_the_version_bounds():
    assert MIN_API_VERSION == (1, 41)  # Docker Engine 20.10, the oldest the stack supports
    assert MIN_API_VERSION <= MAX_API_VERSION


# ---- create bodies and the agent's entry ----------------------------------------------------


@pytest.mark.parametrize("agent", list(IMAGES))
def test_each_agents_own_body_is_allowed(agent):
    host = host_config(
        external_monitors={"config_dir": "configs/em", "memory": "512m", "cpus": 0.5}
    )
    body = body_of(agent, host)
    forward = allowed(create(body, policy_for(host)))
    entry = host.agents[agent]
    assert forward.bind_source == config_bind_source(HOST_DIR, agent, entry)
    assert body["HostConfig"]["LogConfig"] == LOG_CONFIG


def test_the_log_options_are_the_orchestrators():
    assert LOG_CONFIG == {
        "Type": "json-file",
        "Config": {"max-size": LOG_MAX_SIZE, "max-file": LOG_MAX_FILE},
    }


@pytest.mark.parametrize(
    ("key", "above"),
    [
        ("Memory", {"memory": "2g"}),
        ("NanoCpus", {"cpus": 1.5}),
        ("PidsLimit", {"pids_limit": 256}),
    ],
)
def test_limits_are_at_most_the_agents_entry(key, above):
    """A body planned before the operator raised a limit still passes; more never does."""
    entry = {"memory": "1g", "cpus": 1, "pids_limit": 128}
    now = policy_for(host_config(datahealth=entry))
    allowed(create(body_of("datahealth", host_config(datahealth=entry)), now))
    smaller = {"memory": "256m", "cpus": 0.25, "pids_limit": 64}
    allowed(create(body_of("datahealth", host_config(datahealth=smaller)), now))
    more = body_of("datahealth", host_config(datahealth={**entry, **above}))
    assert denied(create(more, now), f"HostConfig.{key}").count("above") == 1


@settings(max_examples=200, deadline=None)
@given(
    memory=st.integers(6 * 1024**2, 2**40),
    nano=st.integers(1, 64 * 10**9),
    pids=st.integers(16, 2**22),
)
def test_any_limit_above_the_entry_is_denied_and_none_below(memory, nano, pids):
    body = body_of("datahealth")  # the defaults: 2g, 1 cpu, 512 pids
    hc = body["HostConfig"]
    hc.update(Memory=memory, MemorySwap=memory, NanoCpus=nano, PidsLimit=pids)
    decision = create(body)
    within = memory <= 2 * 1024**3 and nano <= 10**9 and pids <= 512
    assert isinstance(decision, Forward) is within, decision


def test_the_bind_is_exactly_the_agents_config_directory():
    host = host_config(datahealth={"config_dir": "agents/dh/conf"})
    body = body_of("datahealth", host)
    assert body["HostConfig"]["Binds"] == [f"{HOST_DIR}/agents/dh/conf:/app/config:ro"]
    allowed(create(body, policy_for(host)))
    # The default directory is not this agent's any more.
    denied(create(body_of("datahealth"), policy_for(host)), "HostConfig.Binds must be exactly")


def test_the_image_is_the_one_of_the_agent_named_by_the_label():
    body = body_of("lineage_plus")
    body["Labels"][LABEL_AGENT] = "datahealth"
    why = denied(create(body))
    assert "Image must be the datahealth agent's image bigeye-demo-agent:dev" in why


def test_the_name_matches_the_job_and_run_labels():
    body = body_of("datahealth", run_id="run-2")
    denied(create(body, run_id="run-1"), "container name must be")
    allowed(create(body, run_id="run-2"))


@pytest.mark.parametrize(
    "labels",
    [
        {"com.docker.compose.project": "bigeye-agent"},
        {"com.docker.compose.service": "docker-socket-proxy"},
        {"traefik.enable": "true"},
        {"traefik.http.routers.evil.rule": "PathPrefix(`/`)"},
        {"com.bigeye.orchestrator.managed-by": "x"},
        {"com.bigeye.orchestratorx": "x"},
        {"org.opencontainers.image.title": "x"},
        {"a": "1", "b": "2", "c": "3", "d": "4"},
    ],
)
def test_labels_are_exactly_the_orchestrators(labels):
    body = body_of("datahealth")
    body["Labels"].update(labels)
    why = denied(create(body), "label")
    assert len(why) < 1200
    problems = label_set_violations(body["Labels"])
    assert problems and all(
        "not allowed" in p or "not one the orchestrator sets" in p for p in problems
    )


def test_label_set_violations_of_the_orchestrators_own_labels():
    body = body_of("datahealth")
    assert set(body["Labels"]) == set(REQUIRED_LABELS)
    assert label_set_violations(body["Labels"]) == []
    missing = {k: v for k, v in body["Labels"].items() if k != LABEL_AGENT}
    assert label_set_violations(missing) == [f"label {LABEL_AGENT} is required"]


def test_an_agent_whose_config_directory_is_agent_config_itself_is_refused():
    # hostconfig refuses agent_config itself; "agent_config/." normalises to it.
    host = host_config()
    entry = host.agents["datahealth"].model_copy(update={"config_dir": "agent_config/."})
    host.agents["datahealth"] = entry
    agents = AgentSet.from_host_config(host, HOST_DIR)
    assert any("never agent_config/ itself" in r for r in agents.refusals)
    body = copy.deepcopy(body_of("datahealth"))
    body["HostConfig"]["Binds"] = [f"{HOST_DIR}/agent_config:/app/config:ro"]
    denied(create(body, Policy(HOST_ID, HOST_DIR, agents, (1, 41))))


def test_agent_set_equality_sees_every_change():
    base = AgentSet.from_host_config(host_config(), HOST_DIR)
    assert base == AgentSet.from_host_config(host_config(), HOST_DIR)
    for change in (
        {"datahealth": {"memory": "3g"}},
        {"datahealth": {"cpus": 2}},
        {"datahealth": {"pids_limit": 100}},
        {"datahealth": {"config_dir": "x"}},
    ):
        assert AgentSet.from_host_config(host_config(**change), HOST_DIR) != base
    other = dict(IMAGES, datahealth="bigeye-demo-agent:next")
    assert AgentSet.from_host_config(host_config(other), HOST_DIR) != base


def test_image_ref_defaults_a_bare_name_to_latest():
    assert ImageRef("docker.io", "library/a").defaulted() == ImageRef(
        "docker.io", "library/a", "latest"
    )
