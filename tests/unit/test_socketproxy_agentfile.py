"""socketproxy/agentfile.py: the agent set read from bigeye_agent.yml and re-read on change;
and the server's check of a bind source through the proxy's mount of the host directory."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from socketproxy.agentfile import RECHECK_SECONDS, AgentSetFile
from socketproxy.config import ProxyConfig
from socketproxy.server import Proxy

HOST_DIR = "/srv/host"  # the host path; the files live in tmp_path, as through a mount


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, agents: dict[str, Any] | None, *, atomic: bool = True) -> None:
    text = yaml.safe_dump({"docker_compose_enabled": True, "agents": agents or {}})
    if atomic:
        tmp = path.with_name(".bigeye_agent.yml.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    else:
        path.write_text(text)


def images(source: AgentSetFile) -> dict[str, str]:
    return {name: rule.image for name, rule in source.current().agents.items()}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "bigeye_agent.yml"


def test_no_file_at_start_up_is_an_empty_agent_set_and_one_line(config_file, clock):
    source = AgentSetFile(config_file, HOST_DIR, clock=clock)
    with capture_logs() as logs:
        for _ in range(5):
            assert images(source) == {}
            clock.now += RECHECK_SECONDS
    assert len(logs) == 1
    assert "no agent set" in logs[0]["event"] and "not found" in logs[0]["event"]
    write(config_file, {"datahealth": {"image": "reg/dh:1"}})
    assert images(source) == {"datahealth": "reg/dh:1"}


def test_an_atomic_replace_is_seen_at_once(config_file, clock):
    write(config_file, {"datahealth": {"image": "reg/dh:1"}})
    source = AgentSetFile(config_file, HOST_DIR, clock=clock)
    assert images(source) == {"datahealth": "reg/dh:1"}
    write(config_file, {"datahealth": {"image": "reg/dh:2"}, "lineage_plus": {"image": "reg/lp:1"}})
    assert images(source) == {"datahealth": "reg/dh:2", "lineage_plus": "reg/lp:1"}


def test_an_edit_that_keeps_size_and_times_is_seen_within_a_second(config_file, clock):
    write(config_file, {"datahealth": {"image": "reg/dh:1"}})
    source = AgentSetFile(config_file, HOST_DIR, clock=clock)
    assert images(source) == {"datahealth": "reg/dh:1"}
    info = os.stat(config_file)
    config_file.write_text(config_file.read_text().replace("dh:1", "dh:2"))  # same size
    os.utime(config_file, ns=(info.st_atime_ns, info.st_mtime_ns))
    clock.now += RECHECK_SECONDS
    assert images(source) == {"datahealth": "reg/dh:2"}


def test_a_broken_file_keeps_the_last_agent_set_and_says_so_once(config_file, clock):
    write(config_file, {"datahealth": {"image": "reg/dh:1"}})
    source = AgentSetFile(config_file, HOST_DIR, clock=clock)
    assert images(source) == {"datahealth": "reg/dh:1"}
    with capture_logs() as logs:
        config_file.write_text("agents:\n  datahealth: {image: reg/dh:2, memory: lots}\n")
        for _ in range(5):
            assert images(source) == {"datahealth": "reg/dh:1"}
            clock.now += RECHECK_SECONDS
        config_file.write_text("agents: [unclosed\n")
        for _ in range(3):
            assert images(source) == {"datahealth": "reg/dh:1"}
            clock.now += RECHECK_SECONDS
    problems = [entry["event"] for entry in logs]
    assert len(problems) == 2, problems
    assert "keeping the last agent set read" in problems[0] and "memory" in problems[0]
    assert "YAML" in problems[1]
    write(config_file, {"datahealth": {"image": "reg/dh:3"}})
    assert images(source) == {"datahealth": "reg/dh:3"}


def test_a_file_being_written_or_gone_keeps_the_last_agent_set(config_file, clock):
    write(config_file, {"datahealth": {"image": "reg/dh:1"}})
    source = AgentSetFile(config_file, HOST_DIR, clock=clock)
    assert images(source) == {"datahealth": "reg/dh:1"}
    config_file.write_text("")  # write_text truncates first
    assert images(source) == {"datahealth": "reg/dh:1"}
    with capture_logs() as logs:
        config_file.unlink()
        clock.now += RECHECK_SECONDS
        assert images(source) == {"datahealth": "reg/dh:1"}
    assert ["gone" in entry["event"] for entry in logs] == [True]


NOBODY = 65534


def read_as_nobody(config_file: Path) -> dict[str, Any]:
    """What AgentSetFile makes of the file when read by an unprivileged user: root reads any
    file, so a forked child drops to nobody first (the interpreter itself lives under /root,
    which nobody may not enter, so a fresh process could not start)."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(reader)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            with capture_logs() as logs:
                agents = AgentSetFile(config_file, HOST_DIR).current().agents
            out = {"agents": sorted(agents), "events": [e["event"] for e in logs]}
        except BaseException as exc:  # reported to the parent, which fails the test
            out = {"error": repr(exc)}
        os.write(writer, json.dumps(out).encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return dict(json.loads(data))


def test_an_unreadable_file_is_one_line_naming_the_problem():
    # a file only root may read, in a directory anyone may enter (pytest's is root's alone)
    directory = Path(tempfile.mkdtemp(prefix="agentfile-", dir="/tmp"))
    try:
        directory.chmod(0o755)
        config_file = directory / "bigeye_agent.yml"
        write(config_file, {"datahealth": {"image": "reg/dh:1"}})
        config_file.chmod(0)
        seen = read_as_nobody(config_file)
        assert "error" not in seen, seen
        assert seen["agents"] == []
        assert len(seen["events"]) == 1
        assert "Permission denied" in seen["events"][0]
        assert str(config_file) in seen["events"][0]
    finally:
        shutil.rmtree(directory)


def test_a_loopback_agent_is_named_in_the_log(config_file, clock):
    write(config_file, {"datahealth": {"image": "127.0.0.1:5000/dh:1"}})
    with capture_logs() as logs:
        source = AgentSetFile(config_file, HOST_DIR, clock=clock)
        assert images(source) == {"datahealth": "127.0.0.1:5000/dh:1"}
    refused = [entry for entry in logs if entry["event"] == "agent refused"]
    assert len(refused) == 1 and "loopback" in refused[0]["reason"]
    allowed = AgentSetFile(config_file, HOST_DIR, allow_loopback_registry=True, clock=clock)
    assert not allowed.current().refusals


def test_the_file_is_read_with_the_orchestrators_loader(config_file, clock):
    # A key the loader refuses (an unknown agent type) is refused here too.
    config_file.write_text("agents:\n  sds: {image: reg/sds:1}\n")
    source = AgentSetFile(config_file, HOST_DIR, clock=clock)
    with capture_logs() as logs:
        assert images(source) == {}
    assert "unknown agent type" in logs[0]["event"]


# ---- bind sources, checked through the mount ------------------------------------------------


@pytest.fixture
def proxy(tmp_path: Path) -> Proxy:
    mounted = tmp_path / "mnt"
    (mounted / "agent_config" / "datahealth").mkdir(parents=True)
    (mounted / "agent_config" / "mtls.key").write_text("key")
    return Proxy(
        ProxyConfig("prod-agent-01", HOST_DIR, agent_config=str(mounted / "bigeye_agent.yml"))
    )


def test_an_existing_agent_directory_may_be_bound(proxy):
    assert proxy.bind_problem(f"{HOST_DIR}/agent_config/datahealth") is None


@pytest.mark.parametrize(
    ("relative", "prepare", "why"),
    [
        ("agent_config/lineage_plus", None, "does not exist"),
        ("configs/lp", None, "does not exist"),
        ("agent_config/mtls.key", None, "not a directory"),
        ("agent_config/datahealth", "key", "holds mtls.key"),
        ("agent_config/datahealth", "ca-key", "holds mtls_ca.key"),
        ("agent_config/datahealth", "token", "holds docker_token"),
        ("agent_config/linked", "symlink", "symbolic link"),
        ("linked/datahealth", "parent-symlink", "symbolic link"),
        ("agent_config", None, "holds mtls.key"),
    ],
)
def test_bind_sources_that_must_not_be_bound(proxy, relative, prepare, why):
    mounted = Path(proxy.config.mounted_host_dir)
    agent = mounted / "agent_config" / "datahealth"
    if prepare == "key":
        (agent / "mtls.key").write_text("k")
    elif prepare == "ca-key":
        (agent / "mtls_ca.key").write_text("k")
    elif prepare == "token":
        (agent / "docker_token").write_text("k")
    elif prepare == "symlink":
        (mounted / "agent_config" / "linked").symlink_to("/etc")
    elif prepare == "parent-symlink":
        (mounted / "linked").symlink_to(mounted / "agent_config")
    problem = proxy.bind_problem(f"{HOST_DIR}/{relative}")
    assert problem is not None and why in problem, problem
    assert not (mounted / "agent_config" / "lineage_plus").exists()


def test_a_bind_outside_the_host_directory_is_refused(proxy):
    for source in ("/srv/other/x", HOST_DIR, "/srv"):
        assert "not inside the host directory" in (proxy.bind_problem(source) or "")
