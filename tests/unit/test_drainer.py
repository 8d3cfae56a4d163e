"""The drainer `compose upgrade` starts: built from the old container's inspect output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bigeye_agent.drainer import (
    DRAINER_LABEL,
    PROJECT_LABEL,
    Release,
    create_argv,
    drainer_name,
    env_lines,
    needs_drainer,
    parse_drainers,
)

OLD: dict[str, Any] = {
    "Image": "sha256:" + "a" * 64,
    "Config": {
        "User": "4242:4242",
        "Env": [
            "DOCKER_HOST=tcp://docker-socket-proxy:2375",
            "BIGEYE_AGENT_CONFIG=/etc/bigeye/bigeye_agent.yml",
            "PATH=/opt/bigeye/bin:/usr/bin",
        ],
        "StopTimeout": 15,
        "Labels": {"com.docker.compose.project": "bigeye-agent"},
    },
    "HostConfig": {
        "ReadonlyRootfs": True,
        "Tmpfs": {"/tmp": "size=64m"},
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges:true"],
        "ExtraHosts": ["host.docker.internal:host-gateway"],
        "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}},
        "PidsLimit": 256,
        "Memory": 0,
    },
    "Mounts": [
        {"Type": "bind", "Source": "/srv/bigeye", "Destination": "/etc/bigeye", "RW": False},
    ],
    "NetworkSettings": {
        "Networks": {"bigeye-agent_orchestrator-internal": {}, "bigeye-agent_egress": {}}
    },
}


def pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, item in enumerate(argv[:-1]) if item == flag]


def test_the_drainer_runs_the_old_image_as_the_old_container_ran() -> None:
    release = Release(OLD, "0.1.0")
    argv, more = create_argv(release, "bigeye-agent", Path("/tmp/env"))
    assert argv[0] == "create"
    assert argv[-2:] == ["sha256:" + "a" * 64, "drain"]
    assert pairs(argv, "--name") == ["bigeye-agent-drain-0.1.0"]
    assert pairs(argv, "--user") == ["4242:4242"]
    assert "--read-only" in argv
    assert pairs(argv, "--tmpfs") == ["/tmp:size=64m"]
    assert pairs(argv, "--cap-drop") == ["ALL"]
    assert pairs(argv, "--security-opt") == ["no-new-privileges:true"]
    assert pairs(argv, "--add-host") == ["host.docker.internal:host-gateway"]
    assert pairs(argv, "--mount") == ["type=bind,source=/srv/bigeye,target=/etc/bigeye,readonly"]
    assert pairs(argv, "--log-opt") == ["max-file=3", "max-size=10m"]
    assert pairs(argv, "--pids-limit") == ["256"] and "--memory" not in argv
    assert pairs(argv, "--stop-timeout") == ["15"]
    assert pairs(argv, "--restart") == ["on-failure"]
    assert pairs(argv, "--env-file") == ["/tmp/env"]
    assert sorted(pairs(argv, "--label")) == [
        f"{PROJECT_LABEL}=bigeye-agent",
        f"{DRAINER_LABEL}=0.1.0",
    ]  # never the compose labels: Compose must not take it for one of its containers
    assert pairs(argv, "--network") == ["bigeye-agent_egress"]
    assert more == ["bigeye-agent_orchestrator-internal"]
    assert not any("DOCKER_HOST" in item for item in argv)  # the environment goes by file


def test_the_environment_file_keeps_every_variable_and_drops_none() -> None:
    lines = env_lines(Release(OLD, "0.1.0")).splitlines()
    assert lines == OLD["Config"]["Env"]


def test_a_drainer_only_when_the_release_changed() -> None:
    old = Release(OLD, "0.1.0")
    assert needs_drainer(old, "0.2.0")
    assert needs_drainer(old, "0.0.9")  # a rollback leaves the newer release to drain too
    assert not needs_drainer(old, "0.1.0")  # the same build id: the new container serves it
    assert not needs_drainer(None, "0.2.0")
    assert not needs_drainer(Release(OLD, None), "0.2.0")
    assert not needs_drainer(old, None)


def test_a_version_that_is_not_a_container_name_is_made_one() -> None:
    assert drainer_name("p", "1.0.0+local") == "p-drain-1.0.0-local"


def test_drainers_are_read_from_inspect_output() -> None:
    def item(name: str, status: str, code: int) -> dict[str, Any]:
        return {
            "Name": f"/{name}",
            "Config": {"Labels": {DRAINER_LABEL: name[-5:]}},
            "State": {"Status": status, "ExitCode": code},
        }

    found = parse_drainers(
        json.dumps(
            [
                item("p-drain-0.1.1", "running", 0),
                item("p-drain-0.1.0", "exited", 0),
                item("p-drain-0.0.9", "exited", 75),
            ]
        )
    )
    assert [(d.name, d.version, d.finished) for d in found] == [
        ("p-drain-0.0.9", "0.0.9", False),  # stopped before it drained: resumed by `up`
        ("p-drain-0.1.0", "0.1.0", True),
        ("p-drain-0.1.1", "0.1.1", False),
    ]
    assert parse_drainers("") == [] and parse_drainers("not json") == []
