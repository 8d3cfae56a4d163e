"""socketproxy/rules.py: the proxy's allowlist, request by request, without Docker.

The policy knows an agent set of three agents (as `bigeye_agent.yml` would give it) and the API
version the proxy fixed at start-up (1.41 here, the engine of Docker 20.10)."""

from __future__ import annotations

import copy
import json
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator.contract import (
    INTERNAL_NETWORK,
    LABEL_AGENT,
    LABEL_HOST_ID,
    LABEL_JOB_ID,
    LABEL_MANAGED,
)
from orchestrator.hostconfig import HostConfig
from socketproxy.agentset import AgentSet
from socketproxy.jsonstrict import loads_object
from socketproxy.rules import (
    MAX_BODY_BYTES,
    Decision,
    Deny,
    Forward,
    Policy,
    ProxyRequest,
    decide,
    target_violation,
)
from tests import bodies

HOST_ID = "prod-agent-01"
HOST_DIR = "/srv/host"
DH_IMAGE = "reg/dh:1"  # tests/bodies.py's datahealth image
LP_IMAGE = "docker.io/bigeyedata/lineage-plus:1.2"
EM_DIGEST = "sha256:" + "e" * 64
EM_IMAGE = f"reg.example.com:5000/bigeye/em@{EM_DIGEST}"
AGENT_SET = {
    "datahealth": {"image": DH_IMAGE},
    "lineage_plus": {"image": LP_IMAGE, "memory": "4g", "cpus": 2, "pids_limit": 1024},
    "external_monitors": {"image": EM_IMAGE, "config_dir": "configs/em"},
}
AGENTS = AgentSet.from_host_config(HostConfig.model_validate({"agents": AGENT_SET}), HOST_DIR)
POLICY = Policy(host_id=HOST_ID, host_dir=HOST_DIR, agents=AGENTS, api_version=(1, 41))
NAME = "bigeye-job-job-1-run-1"
CREATE = f"/v1.41/containers/create?name={NAME}"
JSON_CT = ("Content-Type", "application/json")


def compliant_body() -> dict[str, Any]:
    """The orchestrator's own create body for a run (datahealth, job-1/run-1)."""
    return bodies.compliant_body(host_id=HOST_ID, host_dir=HOST_DIR)


def call(
    method: str,
    target: str,
    body: bytes | dict[str, Any] | None = b"",
    headers: list[tuple[str, str]] | None = None,
    policy: Policy = POLICY,
) -> Decision:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    return decide(
        ProxyRequest(method, target, [JSON_CT] if headers is None else headers, raw), policy
    )


def allowed(decision: Decision) -> Forward:
    assert isinstance(decision, Forward), decision
    return decision


def refused(decision: Decision) -> Deny:
    """Denied as a policy violation (403) or as a body the proxy will not read (400)."""
    assert isinstance(decision, Deny), decision
    assert decision.status in (400, 403), decision
    return decision


def denied(decision: Decision, why: str = "", status: int = 403) -> str:
    assert isinstance(decision, Deny), decision
    assert decision.status == status, decision
    assert why in decision.reason, decision.reason
    return decision.reason


# ---- what is admitted ----------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "/v1.41", "/v1.44", "/v1.45", "/v1.99"])
@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/_ping"),
        ("HEAD", "/_ping"),
        ("GET", "/version"),
        ("GET", "/networks/bigeye-jobs"),
        ("GET", f"/images/{LP_IMAGE}/json"),
        ("GET", f"/images/{EM_IMAGE}/json"),
        ("GET", f"/images/{DH_IMAGE}/json"),
        ("GET", "/containers/json"),
        ("GET", "/containers/bigeye-job-j-r123/json"),
        ("POST", "/containers/bigeye-job-j-r123/start"),
        ("POST", "/containers/bigeye-job-j-r/stop"),
        ("POST", "/containers/bigeye-job-j-r123/kill"),
        ("POST", "/containers/bigeye-job-j-r123/wait"),
        ("GET", "/containers/bigeye-job-j-r123/logs"),
        ("DELETE", "/containers/bigeye-job-j-r123"),
    ],
)
def test_allowed_calls(prefix, method, path):
    forward = allowed(call(method, prefix + path))
    assert forward.method == method
    # Whatever the client asked for, the request goes upstream under the proxy's version.
    assert forward.version == "/v1.41"
    assert forward.upstream_target("a" * 64).startswith("/v1.41/")


def test_bodiless_calls_pass_without_content_type_too():
    allowed(call("GET", "/_ping", headers=[]))
    allowed(call("POST", "/containers/bigeye-job-j-r/start", headers=[]))
    # What the Docker CLI and aiohttp send with an empty POST: harmless, and not forwarded.
    allowed(
        call("POST", "/containers/bigeye-job-j-r/start", headers=[("Content-Type", "text/plain")])
    )
    octet = ("Content-Type", "application/octet-stream")
    allowed(call("POST", "/containers/bigeye-job-j-r/stop", headers=[octet]))
    for form in ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        denied(call("POST", "/containers/bigeye-job-j-r/start", headers=[("Content-Type", form)]))
    denied(call("POST", CREATE, compliant_body(), headers=[octet]), "Content-Type")
    denied(call("POST", CREATE, compliant_body(), headers=[("Content-Type", "text/plain")]))


def test_the_orchestrators_own_calls_with_their_parameters():
    allowed(call("POST", "/v1.41/containers/bigeye-job-j-r/stop?t=10"))
    allowed(call("DELETE", "/v1.41/containers/bigeye-job-j-r?force=true&v=true"))
    logs = "stdout=true&stderr=true&follow=true&timestamps=true&since=1700000000.123456789"
    allowed(call("GET", f"/v1.41/containers/bigeye-job-j-r/logs?{logs}&tail=50"))
    allowed(
        call("GET", "/v1.41/containers/bigeye-job-j-r/logs?tail=all&until=2024-01-01T00:00:00Z")
    )
    allowed(call("GET", "/v1.41/containers/bigeye-job-j-r/json?size=false"))
    allowed(call("POST", "/v1.41/containers/bigeye-job-j-r/wait?condition=not-running"))
    for signal in ("SIGTERM", "SIGKILL", "TERM", "KILL", "15", "9"):
        allowed(call("POST", f"/v1.41/containers/bigeye-job-j-r/kill?signal={signal}"))
    pull = allowed(
        call(
            "POST",
            "/v1.41/images/create?fromImage=docker.io%2Fbigeyedata%2Flineage-plus&tag=1.2",
            headers=[JSON_CT, ("X-Registry-Auth", "eyJ1c2VybmFtZSI6ImEifQ==")],
        )
    )
    assert pull.headers == (("X-Registry-Auth", "eyJ1c2VybmFtZSI6ImEifQ=="),)
    assert pull.upstream_target() == (
        "/v1.41/images/create?fromImage=docker.io%2Fbigeyedata%2Flineage-plus&tag=1.2"
    )
    digest = allowed(call("POST", f"/v1.41/images/create?fromImage={EM_IMAGE}"))
    assert digest.query == (("fromImage", EM_IMAGE),)
    allowed(call("POST", "/images/create?fromImage=reg%2Fdh&tag=1"))


def test_a_container_action_is_forwarded_to_the_checked_id_not_the_name():
    forward = allowed(call("POST", "/v1.41/containers/bigeye-job-j-r/stop?t=5"))
    assert forward.target == "bigeye-job-j-r"
    assert forward.upstream_target("f" * 64) == f"/v1.41/containers/{'f' * 64}/stop?t=5"
    with pytest.raises(ValueError):
        forward.upstream_target()
    remove = allowed(call("DELETE", "/containers/bigeye-job-j-r?force=1"))
    assert remove.upstream_target("a" * 64) == f"/v1.41/containers/{'a' * 64}?force=1"


@pytest.mark.parametrize(
    "ref", ["0123456789abcdef" * 4, "bigeye-job-j-r", "bigeye-job-a..b-c.d_e", "bigeye-job-x-y-z"]
)
def test_containers_are_named_by_full_id_or_job_name(ref):
    assert allowed(call("GET", f"/containers/{ref}/json")).target == ref


@pytest.mark.parametrize(
    "ref",
    [
        "0123456789ab",  # an id prefix
        "0123456789ABCDEF" * 4,
        "docker-socket-proxy",
        "bigeye-agent-docker-socket-proxy-1",
        "bigeye-job-",
        "bigeye-job-a",
        "xbigeye-job-a-b",
        "json",
        "prune",
    ],
)
def test_other_container_refs_are_denied_before_any_lookup(ref):
    for method, suffix in [("GET", "/json"), ("POST", "/stop"), ("DELETE", "")]:
        denied(call(method, f"/containers/{ref}{suffix}"), "full id or its job name")


def test_list_is_narrowed_to_this_hosts_managed_containers():
    plain = allowed(call("GET", "/v1.41/containers/json?all=true"))
    query = dict(plain.query)
    assert query["all"] == "true"
    assert json.loads(query["filters"]) == {
        "label": {f"{LABEL_MANAGED}=true": True, f"{LABEL_HOST_ID}={HOST_ID}": True}
    }
    theirs = {"label": [f"{LABEL_MANAGED}=true", "x=1"]}
    target = "/containers/json?filters=" + urllib.parse.quote(json.dumps(theirs))
    merged = json.loads(dict(allowed(call("GET", target)).query)["filters"])
    assert merged == {
        "label": {f"{LABEL_MANAGED}=true": True, "x=1": True, f"{LABEL_HOST_ID}={HOST_ID}": True},
    }
    # Someone else's host id can only narrow the list to nothing.
    other = {"label": [f"{LABEL_HOST_ID}=other"]}
    target = "/containers/json?filters=" + urllib.parse.quote(json.dumps(other))
    labels = json.loads(dict(allowed(call("GET", target)).query)["filters"])["label"]
    assert f"{LABEL_HOST_ID}={HOST_ID}" in labels and f"{LABEL_HOST_ID}=other" in labels


@pytest.mark.parametrize(
    "filters",
    [
        '{"label": "a"}',
        '{"label": {"a": false}}',
        '{"label": [1]}',
    ],
)
def test_list_filters_that_could_be_read_differently_are_denied(filters):
    denied(call("GET", "/containers/json?filters=" + urllib.parse.quote(filters)))


@pytest.mark.parametrize(
    "filters",
    [
        "[]",
        "{",
        '{"label": [' + "9" * 5000 + "]}",
        '{"label": ["a"], "label": ["b"]}',
        '{"label": ["a"], "Label": ["b"]}',
    ],
)
def test_list_filters_that_are_not_json_are_bad_requests(filters):
    denied(call("GET", "/containers/json?filters=" + urllib.parse.quote(filters)), status=400)


@pytest.mark.parametrize(
    "key",
    [
        "before",
        "since",
        "id",
        "name",
        "ancestor",
        "volume",
        "network",
        "status",
        "exited",
        "health",
        "publish",
        "expose",
        "is-task",
        "isolation",
    ],
)
def test_list_filters_other_than_label_are_denied(key):
    # `before`/`since`/`id`/`name` tell whether a container exists that is not this host's.
    filters = {key: ["bigeye-agent-docker-socket-proxy-1"], "label": [f"{LABEL_MANAGED}=true"]}
    target = "/v1.41/containers/json?all=1&filters=" + urllib.parse.quote(json.dumps(filters))
    denied(call("GET", target), "label only")


def test_network_create_of_the_job_network():
    body = {
        "Name": "bigeye-jobs",
        "Driver": "bridge",
        "CheckDuplicate": True,
        "Labels": {LABEL_MANAGED: "true"},
    }
    forward = allowed(call("POST", "/v1.41/networks/create", body))
    assert loads_object(forward.body or b"") == body
    without = {k: v for k, v in body.items() if k != "CheckDuplicate"}
    forced = allowed(call("POST", "/networks/create", without))
    assert loads_object(forced.body or b"")["CheckDuplicate"] is True
    # aiodocker sends it with sorted keys: key order does not matter.
    allowed(call("POST", "/networks/create", json.dumps(body, sort_keys=True).encode()))


@pytest.mark.parametrize(
    "change",
    [
        {"Name": "other"},
        {"Name": "host"},
        {"Name": INTERNAL_NETWORK},
        {"Driver": "macvlan"},
        {"Driver": "host"},
        {"CheckDuplicate": False},
        {"Internal": True},
        {"Attachable": True},
        {"IPAM": {"Driver": "default"}},
        {"Options": {"com.docker.network.bridge.name": "docker0"}},
        {"ConfigOnly": True},
        {"ConfigFrom": {"Network": "x"}},
        {"Ingress": True},
        {"EnableIPv6": True},
        {"Scope": "swarm"},
        {"Labels": {}},
        {"Labels": {LABEL_MANAGED: "true", "x": "y"}},
        {"Labels": {LABEL_MANAGED: "false"}},
        {"name": "bigeye-jobs"},
    ],
)
def test_any_other_network_create_is_denied(change):
    body = {"Name": "bigeye-jobs", "Driver": "bridge", "Labels": {LABEL_MANAGED: "true"}}
    body.update(change)
    refused(call("POST", "/networks/create", body))


def test_the_job_networks_inspect_hides_who_is_attached():
    forward = allowed(call("GET", "/v1.41/networks/bigeye-jobs"))
    assert set(forward.hide_keys) >= {"Containers"}


def test_other_networks_are_not_inspected():
    denied(call("GET", "/networks/bridge"))
    denied(call("GET", "/networks"))
    denied(call("GET", "/networks/bigeye-jobs?verbose=true"))
    denied(call("DELETE", "/networks/bigeye-jobs"))
    denied(call("POST", "/networks/bigeye-jobs/connect", {"Container": "x"}))


# ---- container create: the compliant body, and every single deviation -----------------------


def test_the_orchestrators_create_body_is_allowed_and_forwarded_canonically():
    body = compliant_body()
    forward = allowed(call("POST", CREATE, body))
    assert forward.route == "container.create"
    assert forward.query == (("name", NAME),)
    assert forward.body == json.dumps(body, separators=(",", ":")).encode()
    assert loads_object(forward.body) == body
    # The server still checks, on disk, that the agent's config directory is there.
    assert forward.bind_source == f"{HOST_DIR}/agent_config/datahealth"


@pytest.mark.parametrize(
    "serialise",
    [
        lambda b: json.dumps(b),
        lambda b: json.dumps(b, indent=4),
        lambda b: json.dumps(b, sort_keys=True),
        lambda b: json.dumps(dict(reversed(list(b.items())))),
        lambda b: json.dumps(b, ensure_ascii=False),
        lambda b: "\r\n\t " + json.dumps(b, separators=(",", ":")) + " \n",
        lambda b: json.dumps(b).replace('"Image"', '"\\u0049mage"'),  # an escaped key
    ],
)
def test_whitespace_key_order_and_escapes_of_a_compliant_body_are_allowed(serialise):
    forward = allowed(call("POST", CREATE, serialise(compliant_body()).encode()))
    assert loads_object(forward.body or b"") == compliant_body()


def test_content_type_with_charset_is_allowed():
    headers = [("Content-Type", "application/json; charset=utf-8")]
    allowed(call("POST", CREATE, compliant_body(), headers=headers))


Mutation = Callable[[dict[str, Any]], None]


def _hc(key: str, value: Any) -> Mutation:
    return lambda body: body["HostConfig"].__setitem__(key, value)


def _top(key: str, value: Any) -> Mutation:
    return lambda body: body.__setitem__(key, value)


def _bind(spec: str) -> Mutation:
    return _hc("Binds", [spec])


def _label(key: str, value: str | None) -> Mutation:
    def mutate(body: dict[str, Any]) -> None:
        if value is None:
            del body["Labels"][key]
        else:
            body["Labels"][key] = value

    return mutate


def _drop_hc(key: str) -> Mutation:
    return lambda body: body["HostConfig"].pop(key)


def _rename_top(old: str, new: str) -> Mutation:
    def mutate(body: dict[str, Any]) -> None:
        body[new] = body.pop(old)

    return mutate


def _rename_hc(old: str, new: str) -> Mutation:
    def mutate(body: dict[str, Any]) -> None:
        body["HostConfig"][new] = body["HostConfig"].pop(old)

    return mutate


SRC = f"{HOST_DIR}/agent_config/datahealth"
DEVIATIONS: dict[str, Mutation] = {
    "Privileged": _hc("Privileged", True),
    "Privileged false": _hc("Privileged", False),
    "lowercase privileged at the top": _top("privileged", True),
    "Privileged at the top (Go reads it into the embedded HostConfig)": _top("Privileged", True),
    "PidMode host": _hc("PidMode", "host"),
    "IpcMode host": _hc("IpcMode", "host"),
    "UTSMode host": _hc("UTSMode", "host"),
    "UsernsMode host": _hc("UsernsMode", "host"),
    "CgroupnsMode host": _hc("CgroupnsMode", "host"),
    "PidMode container:x": _hc("PidMode", "container:x"),
    "IpcMode container:x": _hc("IpcMode", "container:x"),
    "NetworkMode host": _hc("NetworkMode", "host"),
    "NetworkMode container:x": _hc("NetworkMode", "container:x"),
    "NetworkMode orchestrator-internal": _hc("NetworkMode", INTERNAL_NETWORK),
    "NetworkMode bridge": _hc("NetworkMode", "bridge"),
    "NetworkMode none": _hc("NetworkMode", "none"),
    "no NetworkMode": _drop_hc("NetworkMode"),
    "CapAdd": _hc("CapAdd", ["SYS_ADMIN"]),
    "CapDrop empty": _hc("CapDrop", []),
    "CapDrop NET_RAW only": _hc("CapDrop", ["NET_RAW"]),
    "no CapDrop": _drop_hc("CapDrop"),
    "SecurityOpt unconfined": _hc("SecurityOpt", ["seccomp=unconfined"]),
    "SecurityOpt apparmor": _hc("SecurityOpt", ["no-new-privileges:true", "apparmor=unconfined"]),
    "no SecurityOpt": _drop_hc("SecurityOpt"),
    "Devices": _hc("Devices", [{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda"}]),
    "DeviceRequests": _hc("DeviceRequests", [{"Count": -1, "Capabilities": [["gpu"]]}]),
    "DeviceCgroupRules": _hc("DeviceCgroupRules", ["a *:* rwm"]),
    "bind of the docker socket": _bind("/var/run/docker.sock:/app/config:ro"),
    "bind of the docker socket, extra": _hc(
        "Binds", [f"{SRC}:/app/config:ro", "/var/run/docker.sock:/var/run/docker.sock"]
    ),
    "bind of /": _bind("/:/app/config:ro"),
    "bind of /etc": _bind("/etc:/app/config:ro"),
    "rw bind": _bind(f"{SRC}:/app/config:rw"),
    "bind without mode": _bind(f"{SRC}:/app/config"),
    "bind with extra options": _bind(f"{SRC}:/app/config:ro,rshared"),
    "bind elsewhere in the container": _bind(f"{SRC}:/etc:ro"),
    "bind outside the host dir": _bind("/srv/other/agent_config:/app/config:ro"),
    "bind of a sibling with the host dir as prefix": _bind("/srv/host2/x:/app/config:ro"),
    "bind of the host dir itself": _bind(f"{HOST_DIR}:/app/config:ro"),
    "bind escaping with ..": _bind(f"{HOST_DIR}/../../etc:/app/config:ro"),
    "bind relative (a named volume)": _bind("myvolume:/app/config:ro"),
    "two binds": _hc("Binds", [f"{SRC}:/app/config:ro", f"{SRC}:/app/config2:ro"]),
    "Mounts": _hc("Mounts", [{"Type": "bind", "Source": "/", "Target": "/host"}]),
    "Tmpfs": _hc("Tmpfs", {"/run": "rw"}),
    "VolumesFrom": _hc("VolumesFrom", ["other"]),
    "VolumeDriver": _hc("VolumeDriver", "x"),
    "Volumes (top level)": _top("Volumes", {"/data": {}}),
    "Links": _hc("Links", ["other:alias"]),
    "Sysctls": _hc("Sysctls", {"net.ipv4.ip_forward": "1"}),
    "Runtime": _hc("Runtime", "runc-privileged"),
    "Isolation": _hc("Isolation", "hyperv"),
    "Cgroup": _hc("Cgroup", "host"),
    "CgroupParent": _hc("CgroupParent", "/"),
    "OomKillDisable": _hc("OomKillDisable", True),
    "PortBindings": _hc("PortBindings", {"80/tcp": [{"HostPort": "80"}]}),
    "PublishAllPorts": _hc("PublishAllPorts", True),
    "ExtraHosts": _hc("ExtraHosts", ["a:1.2.3.4"]),
    "RestartPolicy": _hc("RestartPolicy", {"Name": "always"}),
    "AutoRemove": _hc("AutoRemove", True),
    "ReadonlyPaths empty": _hc("ReadonlyPaths", []),
    "MaskedPaths empty": _hc("MaskedPaths", []),
    "LogConfig other driver": _hc("LogConfig", {"Type": "syslog", "Config": {}}),
    "LogConfig extra option": _hc(
        "LogConfig", {"Type": "json-file", "Config": {"max-size": "1m", "labels": "x"}}
    ),
    "Memory as float 1.0": _hc("Memory", 1.0),
    "MemorySwap -1 (unlimited swap)": _hc("MemorySwap", -1),
    "MemorySwap true": _hc("MemorySwap", True),
    "Memory 0 (unlimited)": _hc("Memory", 0),
    "Memory as string": _hc("Memory", "1g"),
    "NanoCpus 0": _hc("NanoCpus", 0),
    "PidsLimit -1": _hc("PidsLimit", -1),
    "PidsLimit null": _hc("PidsLimit", None),
    "NetworkingConfig": _top("NetworkingConfig", {"EndpointsConfig": {INTERNAL_NETWORK: {}}}),
    "User root": _top("User", "0:0"),
    "Entrypoint": _top("Entrypoint", ["/bin/sh"]),
    "Hostname": _top("Hostname", "x"),
    "ExposedPorts": _top("ExposedPorts", {"80/tcp": {}}),
    "Env not NAME=value": _top("Env", ["LD_PRELOAD"]),
    "Env not a list": _top("Env", "A=1"),
    "Cmd empty": _top("Cmd", []),
    "Image empty": _top("Image", ""),
    "another host's id label": _label(LABEL_HOST_ID, "other-host"),
    "no host id label": _label(LABEL_HOST_ID, None),
    "no managed label": _label(LABEL_MANAGED, None),
    "managed label false": _label(LABEL_MANAGED, "false"),
    "label value not a string": _top("Labels", {LABEL_MANAGED: True}),
    # --- what the agent set says (socketproxy/agentset.py)
    "another agent's image": _top("Image", LP_IMAGE),
    "an image that is no agent's": _top("Image", "alpine:3"),
    "the agent's image, spelt in full": _top("Image", "docker.io/reg/dh:1"),
    "the agent's image by digest": _top("Image", "reg/dh@sha256:" + "d" * 64),
    "agent label of another agent": _label(LABEL_AGENT, "lineage_plus"),
    "agent label of no agent": _label(LABEL_AGENT, "sds"),
    "job-id label not the name's": _label(LABEL_JOB_ID, "job-2"),
    "label of a compose service": _label("com.docker.compose.project", "bigeye-agent"),
    "label of a compose service's name": _label("com.docker.compose.service", "sds"),
    "label routing a reverse proxy": _label("traefik.enable", "true"),
    "label routing a reverse proxy's rule": _label("traefik.http.routers.x.rule", "Host(`a`)"),
    "an extra label in our namespace": _label("com.bigeye.orchestrator.extra", "x"),
    "an empty label key": _label("", "x"),
    "bind of agent_config itself": _bind(f"{HOST_DIR}/agent_config:/app/config:ro"),
    "bind of the mTLS key": _bind(f"{HOST_DIR}/agent_config/mtls.key:/app/config:ro"),
    "bind of another agent's directory": _bind(f"{HOST_DIR}/configs/em:/app/config:ro"),
    "bind of a sub-directory of the agent's": _bind(f"{SRC}/sub:/app/config:ro"),
    "bind of a directory beside the agent's": _bind(
        f"{HOST_DIR}/agent_config/other:/app/config:ro"
    ),
    "Memory above the agent's": _hc("Memory", 2 * 1024**3 + 1),
    "Memory far above the agent's": _hc("Memory", 2**62),
    "NanoCpus above the agent's": _hc("NanoCpus", 1_000_000_001),
    "PidsLimit above the agent's": _hc("PidsLimit", 513),
    "LogConfig without options": _hc("LogConfig", {"Type": "json-file", "Config": {}}),
    "LogConfig larger files": _hc(
        "LogConfig", {"Type": "json-file", "Config": {"max-size": "10g", "max-file": "3"}}
    ),
    "LogConfig more files": _hc(
        "LogConfig", {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "1000"}}
    ),
    "LogConfig one option": _hc("LogConfig", {"Type": "json-file", "Config": {"max-size": "10m"}}),
    "key case: hostConfig": _rename_top("HostConfig", "hostConfig"),
    "key case: HOSTCONFIG": _rename_top("HostConfig", "HOSTCONFIG"),
    "key case: image": _rename_top("Image", "image"),
    "key case: binds": _rename_hc("Binds", "binds"),
    "key case: networkmode": _rename_hc("NetworkMode", "networkmode"),
    "key case: privileged": _hc("privileged", True),
    "long s spelling of SecurityOpt": _rename_hc("SecurityOpt", "\u017fecurityOpt"),
    "HostConfig null": _top("HostConfig", None),
    "HostConfig a list": _top("HostConfig", []),
}


@pytest.mark.parametrize("mutation", DEVIATIONS.values(), ids=DEVIATIONS.keys())
def test_every_single_deviation_from_a_compliant_create_is_denied(mutation):
    body = copy.deepcopy(compliant_body())
    mutation(body)
    refused(call("POST", CREATE, body))


def _splice(text: str, marker: str, insert: str) -> bytes:
    assert marker in text
    return text.replace(marker, marker + insert, 1).encode()


@pytest.mark.parametrize(
    "make",
    [
        # Go merges a repeated struct or map value; Python keeps only the last.
        lambda t: _splice(t, "{", '"HostConfig": {"Privileged": true}, '),
        lambda t: _splice(t, '"HostConfig": {', '"Binds": ["/:/host"], '),
        lambda t: _splice(t, '"HostConfig": {', '"binds": ["/:/host"], '),
        lambda t: _splice(t, '"HostConfig": {', '"privileged": true, "Privileged": false, '),
        lambda t: _splice(t, '"Labels": {', f'"{LABEL_HOST_ID}": "other", '),
        lambda t: _splice(t, "{", '"hostconfig": {"Privileged": true}, '),
        lambda t: _splice(t, '"HostConfig": {', '"NETWORKMODE": "host", '),
        lambda t: _splice(t, "{", '"\\u0048ostConfig": {"Privileged": true}, '),
        # Go's decoder stops after the first value; the engine ignores the rest.
        lambda t: (t + ' {"HostConfig": {"Privileged": true}}').encode(),
        lambda t: (t + "x").encode(),
        lambda t: b"\xef\xbb\xbf" + t.encode(),
        lambda t: t.replace('"Memory": ', '"Memory": 1e3, "x": ').encode(),
        lambda t: t.replace('"NanoCpus": 1000000000', '"NanoCpus": 1.0e9').encode(),
        lambda t: t.replace('"NanoCpus": 1000000000', '"NanoCpus": NaN').encode(),
        lambda t: t.replace('"NanoCpus": 1000000000', '"NanoCpus": 9223372036854775808').encode(),
        lambda t: t.replace('"reg/dh:1"', '"reg/dh:1\\ud800"').encode(),
        lambda t: t.replace('"reg/dh:1"', '"reg/dh:1\xff"').encode("latin-1"),
        lambda t: t.encode("utf-16"),
    ],
)
def test_bodies_go_would_read_differently_are_denied(make):
    text = json.dumps(compliant_body())
    assert allowed(call("POST", CREATE, text.encode()))
    denied(call("POST", CREATE, make(text)), "rejected", status=400)


@pytest.mark.parametrize("digits", [19, 20, 64, 5000])
def test_integers_too_long_for_int64_are_bad_requests_not_errors(digits):
    text = json.dumps(compliant_body()).replace(
        '"NanoCpus": 1000000000', f'"NanoCpus": {"9" * digits}'
    )
    denied(call("POST", CREATE, text.encode()), "64 bits", status=400)
    network = '{"Name": "bigeye-jobs", "Driver": "bridge", "x": -' + "9" * digits + "}"
    denied(call("POST", "/networks/create", network.encode()), "64 bits", status=400)


@pytest.mark.parametrize(
    "target, why",
    [
        ("/v1.41/containers/create", "'name' is required"),
        (f"/v1.41/containers/create?name={NAME}&name=x", "repeated"),
        (f"/v1.41/containers/create?name={NAME}&platform=linux", "not allowed"),
        ("/v1.41/containers/create?name=evil", "container name"),
        ("/v1.41/containers/create?name=", "container name"),
    ],
)
def test_create_needs_exactly_one_job_name(target, why):
    denied(call("POST", target, compliant_body()), why)


@pytest.mark.parametrize(
    "headers, body, why",
    [
        ([("Content-Type", "application/x-www-form-urlencoded")], None, "Content-Type"),
        ([("Content-Type", "text/plain")], None, "Content-Type"),
        ([("Content-Type", "application/jsonx")], None, "Content-Type"),
        ([], None, "Content-Type application/json is required"),
        ([JSON_CT, JSON_CT], None, "repeated"),
        ([JSON_CT], b"", "JSON body is required"),
        ([JSON_CT, ("Content-Encoding", "gzip")], None, "encoded"),
        ([JSON_CT, ("Transfer-Encoding", "gzip, chunked")], None, "transfer encoding"),
    ],
)
def test_create_body_framing(headers, body, why):
    raw = json.dumps(compliant_body()).encode() if body is None else body
    denied(call("POST", CREATE, raw, headers=headers), why)


def test_chunked_create_is_fine_but_not_an_oversized_one():
    allowed(
        call("POST", CREATE, compliant_body(), headers=[JSON_CT, ("Transfer-Encoding", "chunked")])
    )
    denied(call("POST", CREATE, None), f"larger than {MAX_BODY_BYTES}")


# ---- everything else -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, target",
    [
        ("POST", "/containers/bigeye-job-j-r/exec"),
        ("POST", "/exec/abc/start"),
        ("GET", "/exec/abc/json"),
        ("POST", "/containers/bigeye-job-j-r/attach?stream=1&stdin=1"),
        ("GET", "/containers/bigeye-job-j-r/attach/ws"),
        ("GET", "/containers/bigeye-job-j-r/archive?path=/"),
        ("PUT", "/containers/bigeye-job-j-r/archive?path=/"),
        ("HEAD", "/containers/bigeye-job-j-r/archive?path=/"),
        ("GET", "/containers/bigeye-job-j-r/export"),
        ("GET", "/containers/bigeye-job-j-r/changes"),
        ("GET", "/containers/bigeye-job-j-r/top"),
        ("GET", "/containers/bigeye-job-j-r/stats"),
        ("POST", "/containers/bigeye-job-j-r/update"),
        ("POST", "/containers/bigeye-job-j-r/rename?name=x"),
        ("POST", "/containers/bigeye-job-j-r/restart"),
        ("POST", "/containers/bigeye-job-j-r/pause"),
        ("POST", "/containers/bigeye-job-j-r/resize?h=1&w=1"),
        ("POST", "/containers/prune"),
        ("POST", "/images/prune"),
        ("POST", "/networks/prune"),
        ("POST", "/volumes/prune"),
        ("POST", "/build/prune"),
        ("POST", "/build"),
        ("POST", "/commit?container=abc"),
        ("GET", "/images/json"),
        ("DELETE", "/images/alpine"),
        ("POST", "/images/alpine/push"),
        ("POST", "/images/alpine/tag?repo=x"),
        ("GET", "/images/alpine/get"),
        ("POST", "/images/load"),
        ("GET", "/images/alpine/history"),
        ("POST", "/volumes/create"),
        ("GET", "/volumes"),
        ("GET", "/info"),
        ("GET", "/events"),
        ("GET", "/system/df"),
        ("POST", "/auth"),
        ("GET", "/plugins"),
        ("POST", "/plugins/pull?remote=x"),
        ("POST", "/swarm/init"),
        ("GET", "/services"),
        ("GET", "/secrets"),
        ("GET", "/configs"),
        ("POST", "/session"),
        ("GET", "/distribution/alpine/json"),
        ("GET", "/"),
        ("GET", ""),
        ("OPTIONS", "/_ping"),
        ("PUT", "/_ping"),
        ("POST", "/_ping"),
        ("HEAD", "/version"),
        ("HEAD", "/containers/json"),
        ("PATCH", "/containers/bigeye-job-j-r/json"),
        ("CONNECT", "/containers/bigeye-job-j-r/json"),
        ("get", "/_ping"),
        ("GET", "/containers/bigeye-job-j-r"),
        ("POST", "/containers/bigeye-job-j-r"),
        ("DELETE", "/containers/bigeye-job-j-r/json"),
        ("GET", "/containers/bigeye-job-j-r/start"),
        ("POST", "/containers/bigeye-job-j-r/logs"),
        ("GET", "/containers/"),
        ("GET", "/containers/bigeye-job-j-r/"),
        ("GET", "/_ping/"),
        ("GET", "/images//json"),
    ],
)
def test_everything_else_is_denied(method, target):
    denied(call(method, target))


@pytest.mark.parametrize(
    "target, why",
    [
        ("/images/create?fromSrc=-", "fromSrc"),
        ("/images/create?fromImage=alpine&fromSrc=-", "fromSrc"),
        ("/images/create?fromImage=reg/dh&tag=1&platform=linux/amd64", "platform"),
        ("/images/create?fromImage=alpine&repo=x", "repo"),
        ("/images/create?fromImage=alpine&message=x", "message"),
        ("/images/create?fromImage=alpine&changes=CMD+x", "changes"),
        ("/images/create?fromImage=alpine&fromImage=evil", "repeated"),
        ("/images/create?fromImage=alpine&fromimage=x", "not allowed"),
        ("/images/create", "required"),
        ("/images/create?fromImage=", "not allowed"),
        ("/images/create?fromImage=alpine&tag=", "not allowed"),
        ("/images/create?fromImage=-", "not allowed"),
        ("/images/create?fromImage=a//b", "not an image"),
        ("/images/create?fromImage=a%0Ab", "malformed"),
    ],
)
def test_pull_only_from_image(target, why):
    denied(call("POST", target), why)


def test_pull_with_a_body_is_denied():
    denied(call("POST", "/images/create?fromImage=alpine", b"data"), "body is not allowed")
    denied(call("POST", "/images/create?fromImage=alpine", b"x", headers=[]), "body")


@pytest.mark.parametrize(
    "target, why",
    [
        ("/containers/bigeye-job-j-r/kill?signal=SIGSTOP", "not allowed"),
        ("/containers/bigeye-job-j-r/kill?signal=SIGHUP", "not allowed"),
        ("/containers/bigeye-job-j-r/kill?signal=sigterm", "not allowed"),
        ("/containers/bigeye-job-j-r/kill?signal=0", "not allowed"),
        ("/containers/bigeye-job-j-r/kill?signal=TERM&signal=STOP", "repeated"),
        ("/containers/bigeye-job-j-r/stop?t=-1", "not allowed"),
        ("/containers/bigeye-job-j-r/stop?t=x", "not allowed"),
        ("/containers/bigeye-job-j-r/stop?signal=SIGKILL", "not allowed"),
        ("/containers/bigeye-job-j-r/wait?condition=other", "not allowed"),
        ("/containers/bigeye-job-j-r/start?detachKeys=ctrl-p", "not allowed"),
    ],
)
def test_container_action_parameters(target, why):
    denied(call("POST", target), why)


@pytest.mark.parametrize(
    "query",
    ["details=true", "stdin=true", "stream=true", "logs=true", "tail=-5", "follow=yes", "x=1"],
)
def test_logs_parameters_that_are_not_plain_log_reads_are_denied(query):
    denied(call("GET", f"/containers/bigeye-job-j-r/logs?stdout=1&{query}"))


def test_delete_link_and_start_body_are_denied():
    denied(call("DELETE", "/containers/bigeye-job-j-r?link=true"), "link")
    # API < 1.24 applied a HostConfig sent with start; no start body at any version.
    denied(call("POST", "/v1.41/containers/bigeye-job-j-r/start", {"Privileged": True}), "body")
    denied(call("POST", "/v1.23/containers/bigeye-job-j-r/start"), "API version")
    denied(call("POST", "/v1.12/containers/create?name=" + NAME, compliant_body()), "API version")


@pytest.mark.parametrize(
    "target, why",
    [
        ("/v1.41/containers/../images/json", "dot segments"),
        ("/v1.41/containers/bigeye-job-j-r/../../images/json", "dot segments"),
        ("/v1.41/./_ping", "dot segments"),
        ("/containers/..", "dot segments"),
        ("/v1.41/containers/bigeye-job-j-r%2F..%2Fdef/json", "percent-encoding"),
        ("/v1.41/containers/bigeye-job-j-r%2fjson", "percent-encoding"),
        ("/v1.41/%5fping", "percent-encoding"),
        ("//_ping", "//"),
        ("/v1.41//_ping", "//"),
        ("/v1.41/containers//json", "//"),
        ("/_ping?", "empty query"),
        ("/_ping?a=1", "not allowed"),
        ("/containers/json?all=1&&size=1", "empty query parameter"),
        ("/containers/json?all", "without a value"),
        ("/containers/json?all=1;size=1", "characters outside"),
        ("/containers/json?all=1&all=0", "repeated"),
        ("/containers/json?all=%zz", "malformed"),
        ("/containers/json?all=%C0%AF", "malformed"),
        ("/containers/json?all=1#frag", "characters outside"),
        ("/containers/json?all=1?x=2", "characters outside"),
        ("/v1.41/containers/bigeye-job-j-r/json?size=1 HTTP/1.1", "characters outside"),
        ("/containers/abc\\..\\json", "characters outside"),
        ("/containers/ab c/json", "characters outside"),
        ("/containers/\u00e9/json", "characters outside"),
        ("/containers/-abc/json", "full id or its job name"),
        ("/containers/_abc/json", "full id or its job name"),
        ("http://docker/_ping", "absolute path"),
        ("*", "absolute path"),
        ("/v01.41/_ping", "leading zeros"),
        ("/v1.41", "malformed API version"),
        ("/v1/_ping", "malformed API version"),
        ("/v1.41.1/_ping", "malformed API version"),
        ("/v1.41/v1.41/_ping", "not an allowed"),
        ("/V1.41/_ping", "not an allowed"),
    ],
)
def test_path_and_query_tricks_are_denied(target, why):
    denied(call("GET", target), why)


@pytest.mark.parametrize(
    "header",
    [
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-HTTP-Method", "DELETE"),
        ("X-Method-Override", "PUT"),
        ("Connection", "Upgrade"),
        ("Connection", "keep-alive, upgrade"),
        ("Upgrade", "tcp"),
        ("Upgrade", "h2c"),
        ("Expect", "something"),
    ],
)
def test_override_and_upgrade_headers_are_denied(header):
    denied(call("GET", "/_ping", headers=[header]))
    denied(call("POST", "/containers/bigeye-job-j-r/start", headers=[JSON_CT, header]))


def test_keep_alive_and_expect_continue_are_fine():
    allowed(call("GET", "/_ping", headers=[("Connection", "keep-alive")]))
    allowed(call("POST", CREATE, compliant_body(), headers=[JSON_CT, ("Expect", "100-continue")]))


def test_registry_auth_must_look_like_base64():
    denied(call("POST", "/images/create?fromImage=a", headers=[("X-Registry-Auth", "a b")]))
    denied(call("POST", "/images/create?fromImage=a", headers=[("X-Registry-Auth", "a" * 20000)]))


def test_a_body_on_a_bodiless_call_is_denied():
    denied(call("GET", "/containers/json", b"{}"), "body")
    denied(call("DELETE", "/containers/bigeye-job-j-r", b"x", headers=[]), "body")


# ---- the target container -------------------------------------------------------------------


def _inspected(labels: dict[str, str] | None, container_id: str = "a" * 64) -> dict[str, Any]:
    return {"Id": container_id, "Config": {"Labels": labels}}


def test_target_check():
    ours = {LABEL_MANAGED: "true", LABEL_HOST_ID: HOST_ID}
    assert target_violation(_inspected(ours), POLICY) is None
    assert "not managed" in (target_violation(_inspected({}), POLICY) or "")
    assert "not managed" in (target_violation(_inspected(None), POLICY) or "")
    assert "not managed" in (target_violation(_inspected({LABEL_HOST_ID: HOST_ID}), POLICY) or "")
    assert "not managed" in (
        target_violation(_inspected({**ours, LABEL_MANAGED: "TRUE"}), POLICY) or ""
    )
    assert "another host" in (
        target_violation(_inspected({**ours, LABEL_HOST_ID: "other"}), POLICY) or ""
    )
    assert "another host" in (target_violation(_inspected({LABEL_MANAGED: "true"}), POLICY) or "")
    assert "no container id" in (target_violation(_inspected(ours, "abc"), POLICY) or "")
    assert target_violation({"Id": "a" * 64}, POLICY) is not None
