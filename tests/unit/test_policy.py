"""activities/policy.py: the create-body allowlist of design §4 (orchestrator and proxy)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator.contract import (
    LABEL_AGENT,
    LABEL_HOST_ID,
    LABEL_JOB_ID,
    LABEL_MANAGED,
    LABEL_RUN_ID,
    LABEL_VERSION,
    LABEL_WORKFLOW_ID,
)
from orchestrator.policy import bind_source_allowed, structural_violations
from tests import bodies

HOST_ID = "prod-agent-01"
HOST_DIR = "/srv/host"
CONFIG_SOURCE = f"{HOST_DIR}/agent_config/datahealth"


def compliant_body() -> dict[str, Any]:
    """The orchestrator's own create body for a run."""
    return bodies.compliant_body(host_id=HOST_ID, host_dir=HOST_DIR)


def violations(body: Any, name: str | None = None) -> list[str]:
    return structural_violations(body, host_id=HOST_ID, host_dir=HOST_DIR, name=name)


def test_body_from_create_body_is_compliant():
    body = compliant_body()
    assert body["HostConfig"]["Binds"] == [f"{CONFIG_SOURCE}:/app/config:ro"]
    assert violations(body) == []


def test_compliant_body_with_its_container_name_is_allowed():
    assert violations(compliant_body(), name="bigeye-job-job-1-run-1") == []


@pytest.mark.parametrize("name", ["evil", "bigeye-job-", "bigeye-job-a b-c", "x-bigeye-job-a-b"])
def test_other_container_names_are_denied(name):
    assert violations(compliant_body(), name=name) == [
        "container name must be bigeye-job-<job_id>-<run_id>"
    ]


@pytest.mark.parametrize("body", [None, [], "{}", 1])
def test_non_object_body_is_denied(body):
    assert violations(body) == ["body must be a JSON object"]


def hc(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        body["HostConfig"][key] = value

    return mutate


def top(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        body[key] = value

    return mutate


def label(key: str, value: str | None) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        if value is None:
            del body["Labels"][key]
        else:
            body["Labels"][key] = value

    return mutate


def drop_hc(key: str) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        del body["HostConfig"][key]

    return mutate


def double_swap(body: dict[str, Any]) -> None:
    body["HostConfig"]["MemorySwap"] = 2 * body["HostConfig"]["Memory"]


def binds(*items: str) -> Callable[[dict[str, Any]], None]:
    return hc("Binds", list(items))


DEVIATIONS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("privileged", hc("Privileged", True), "HostConfig.Privileged"),
    ("privileged-false", hc("Privileged", False), "HostConfig.Privileged"),
    ("privileged-lowercase", hc("privileged", True), "HostConfig.privileged"),
    ("top-level-privileged", top("privileged", True), "privileged"),
    ("pid-host", hc("PidMode", "host"), "HostConfig.PidMode"),
    ("ipc-host", hc("IpcMode", "host"), "HostConfig.IpcMode"),
    ("userns-host", hc("UsernsMode", "host"), "HostConfig.UsernsMode"),
    ("uts-host", hc("UTSMode", "host"), "HostConfig.UTSMode"),
    ("network-host", hc("NetworkMode", "host"), "HostConfig.NetworkMode"),
    ("network-container", hc("NetworkMode", "container:x"), "HostConfig.NetworkMode"),
    ("network-internal", hc("NetworkMode", "orchestrator-internal"), "HostConfig.NetworkMode"),
    ("network-bridge", hc("NetworkMode", "bridge"), "HostConfig.NetworkMode"),
    ("networkmode-lowercase", hc("networkmode", "host"), "HostConfig.networkmode"),
    ("cap-add", hc("CapAdd", ["SYS_ADMIN"]), "HostConfig.CapAdd"),
    ("cap-drop-none", hc("CapDrop", []), "HostConfig.CapDrop"),
    ("cap-drop-partial", hc("CapDrop", ["NET_RAW"]), "HostConfig.CapDrop"),
    ("security-opt-missing", hc("SecurityOpt", []), "HostConfig.SecurityOpt"),
    (
        "security-opt-extra",
        hc("SecurityOpt", ["no-new-privileges:true", "seccomp=unconfined"]),
        "HostConfig.SecurityOpt",
    ),
    ("devices", hc("Devices", [{"PathOnHost": "/dev/sda"}]), "HostConfig.Devices"),
    ("device-requests", hc("DeviceRequests", [{"Count": -1}]), "HostConfig.DeviceRequests"),
    ("docker-sock", binds("/var/run/docker.sock:/var/run/docker.sock"), "HostConfig.Binds"),
    ("docker-sock-ro", binds("/var/run/docker.sock:/app/config:ro"), "HostConfig.Binds"),
    ("root", binds("/:/app/config:ro"), "HostConfig.Binds"),
    ("etc", binds("/etc:/app/config:ro"), "HostConfig.Binds"),
    ("rw-bind", binds(f"{CONFIG_SOURCE}:/app/config:rw"), "HostConfig.Binds"),
    ("bind-no-mode", binds(f"{CONFIG_SOURCE}:/app/config"), "HostConfig.Binds"),
    ("bind-extra-mode", binds(f"{CONFIG_SOURCE}:/app/config:ro,z"), "HostConfig.Binds"),
    ("bind-other-target", binds(f"{CONFIG_SOURCE}:/etc:ro"), "HostConfig.Binds"),
    ("bind-outside", binds("/srv/other/agent_config:/app/config:ro"), "HostConfig.Binds"),
    ("bind-prefix-trick", binds("/srv/host-evil/x:/app/config:ro"), "HostConfig.Binds"),
    ("bind-host-dir", binds(f"{HOST_DIR}:/app/config:ro"), "HostConfig.Binds"),
    ("bind-host-dir-slash", binds(f"{HOST_DIR}/:/app/config:ro"), "HostConfig.Binds"),
    ("bind-dotdot", binds(f"{HOST_DIR}/agent_config/../../etc:/app/config:ro"), "HostConfig.Binds"),
    ("bind-relative", binds("agent_config/datahealth:/app/config:ro"), "HostConfig.Binds"),
    ("bind-volume-name", binds("myvolume:/app/config:ro"), "HostConfig.Binds"),
    (
        "two-binds",
        binds(f"{CONFIG_SOURCE}:/app/config:ro", f"{HOST_DIR}/agent_config/x:/x:ro"),
        "HostConfig.Binds",
    ),
    ("no-binds", binds(), "HostConfig.Binds"),
    ("binds-not-list", hc("Binds", f"{CONFIG_SOURCE}:/app/config:ro"), "HostConfig.Binds"),
    ("binds-missing", drop_hc("Binds"), "HostConfig.Binds is required"),
    (
        "mounts",
        hc("Mounts", [{"Type": "bind", "Source": "/", "Target": "/host"}]),
        "HostConfig.Mounts",
    ),
    ("volumes-from", hc("VolumesFrom", ["other"]), "HostConfig.VolumesFrom"),
    ("volumes", top("Volumes", {"/data": {}}), "Volumes"),
    ("host-id-missing", label(LABEL_HOST_ID, None), LABEL_HOST_ID),
    ("host-id-other", label(LABEL_HOST_ID, "other-host"), LABEL_HOST_ID),
    ("managed-false", label(LABEL_MANAGED, "false"), LABEL_MANAGED),
    ("managed-True", label(LABEL_MANAGED, "True"), LABEL_MANAGED),
    ("managed-missing", label(LABEL_MANAGED, None), LABEL_MANAGED),
    ("job-id-missing", label(LABEL_JOB_ID, None), LABEL_JOB_ID),
    ("run-id-missing", label(LABEL_RUN_ID, None), LABEL_RUN_ID),
    ("agent-missing", label(LABEL_AGENT, None), LABEL_AGENT),
    ("workflow-id-missing", label(LABEL_WORKFLOW_ID, None), LABEL_WORKFLOW_ID),
    ("version-missing", label(LABEL_VERSION, None), LABEL_VERSION),
    ("labels-non-string", top("Labels", {LABEL_MANAGED: True}), "Labels"),
    ("memory-swap-other", hc("MemorySwap", -1), "HostConfig.MemorySwap"),
    ("memory-swap-double", double_swap, "HostConfig.MemorySwap"),
    ("memory-swap-missing", drop_hc("MemorySwap"), "HostConfig.MemorySwap"),
    ("memory-bool", hc("Memory", True), "HostConfig.Memory"),
    ("memory-zero", hc("Memory", 0), "HostConfig.Memory"),
    ("memory-string", hc("Memory", "2g"), "HostConfig.Memory"),
    ("memory-float", hc("Memory", 2.0 * 1024**3), "HostConfig.Memory"),
    ("memory-missing", drop_hc("Memory"), "HostConfig.Memory"),
    ("nano-cpus-zero", hc("NanoCpus", 0), "HostConfig.NanoCpus"),
    ("nano-cpus-bool", hc("NanoCpus", True), "HostConfig.NanoCpus"),
    ("pids-8", hc("PidsLimit", 8), "HostConfig.PidsLimit"),
    ("pids-unlimited", hc("PidsLimit", -1), "HostConfig.PidsLimit"),
    ("pids-missing", drop_hc("PidsLimit"), "HostConfig.PidsLimit"),
    ("log-driver", hc("LogConfig", {"Type": "syslog", "Config": {}}), "HostConfig.LogConfig"),
    (
        "log-option",
        hc("LogConfig", {"Type": "json-file", "Config": {"labels": "x"}}),
        "HostConfig.LogConfig",
    ),
    ("log-no-config", hc("LogConfig", {"Type": "json-file"}), "HostConfig.LogConfig"),
    (
        "log-int-option",
        hc("LogConfig", {"Type": "json-file", "Config": {"max-file": 3}}),
        "HostConfig.LogConfig",
    ),
    ("restart-policy", hc("RestartPolicy", {"Name": "always"}), "HostConfig.RestartPolicy"),
    ("sysctls", hc("Sysctls", {"net.ipv4.ip_forward": "1"}), "HostConfig.Sysctls"),
    ("runtime", hc("Runtime", "runc"), "HostConfig.Runtime"),
    ("port-bindings", hc("PortBindings", {"80/tcp": [{}]}), "HostConfig.PortBindings"),
    ("entrypoint", top("Entrypoint", ["sh", "-c"]), "Entrypoint"),
    ("user", top("User", "0"), "User"),
    ("tty", top("Tty", True), "Tty"),
    ("working-dir", top("WorkingDir", "/"), "WorkingDir"),
    ("networking-config", top("NetworkingConfig", {}), "NetworkingConfig"),
    ("image-lowercase", top("image", "evil"), "image"),
    ("hostconfig-lowercase", top("hostconfig", {"Privileged": True}), "hostconfig"),
    ("image-empty", top("Image", ""), "Image"),
    ("cmd-empty", top("Cmd", []), "Cmd"),
    ("cmd-string", top("Cmd", "sh -c id"), "Cmd"),
    ("env-not-assignment", top("Env", ["JUSTNAME"]), "Env"),
    ("env-bad-name", top("Env", ["1A=x"]), "Env"),
    ("hostconfig-not-object", top("HostConfig", []), "HostConfig"),
]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [pytest.param(m, e, id=i) for i, m, e in DEVIATIONS],
)
def test_each_single_deviation_is_a_violation(mutate, expected):
    body = compliant_body()
    mutate(body)
    found = violations(body)
    assert found, "deviation was allowed"
    assert any(expected in problem for problem in found), found


@pytest.mark.parametrize("key", ["Image", "Cmd", "Env", "Labels", "HostConfig"])
def test_each_top_level_key_is_required(key):
    body = compliant_body()
    del body[key]
    assert f"{key} is required" in violations(body)


def test_unknown_keys_are_named_one_per_problem():
    body = compliant_body()
    body["User"] = "root"
    body["HostConfig"]["Privileged"] = True
    assert sorted(violations(body)) == [
        "HostConfig.Privileged is not allowed",
        "User is not allowed",
    ]


def test_policy_does_not_mutate_the_body():
    body = compliant_body()
    body["HostConfig"]["Privileged"] = True
    before = copy.deepcopy(body)
    violations(body)
    assert body == before


def test_extra_labels_are_allowed():
    body = compliant_body()
    body["Labels"]["com.example.team"] = "data"
    assert violations(body) == []


# ---- bind sources --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "host_dir"),
    [
        ("/srv/host/agent_config/datahealth", "/srv/host"),
        ("/srv/host/x", "/srv/host/"),
        ("/srv/host/x", "/srv//host"),
        ("/srv/host/a/b/c", "/srv/host"),
        ("/srv/host/..x", "/srv/host"),
    ],
)
def test_bind_sources_inside_the_host_dir_are_allowed(source, host_dir):
    assert bind_source_allowed(source, host_dir)


@pytest.mark.parametrize(
    "source",
    [
        "/srv/host-evil",
        "/srv/host-evil/agent_config",
        "/srv/hostx/a",
        "/srv/host",
        "/srv/host/",
        "/srv",
        "/",
        "/srv/host/a/../../etc",
        "/srv/host/../host/x",
        "/srv/host/./x",
        "/srv/host//x",
        "/srv/host/x/",
        "srv/host/x",
        "",
        "/var/run/docker.sock",
    ],
)
def test_bind_sources_outside_or_not_normalised_are_denied(source):
    assert not bind_source_allowed(source, "/srv/host")
