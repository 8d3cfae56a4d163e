"""`bigeye-agent register | compose | sync` against a fake Bigeye API (aiohttp on loopback) and a
fake `docker` on PATH that records its argv. The real ones are exercised by the e2e tests."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bigeye_agent import api, keys
from bigeye_agent import messages as m
from bigeye_agent.cli import main
from bigeye_agent.compose_file import COMPOSE_FILE_NAME
from orchestrator.hostconfig import load_host_config

SERVER_CA = "-----BEGIN CERTIFICATE-----\nZmFrZQ==\n-----END CERTIFICATE-----\n"
ADMIN, MEMBER = "admin-key", "member-key"


class FakeBigeye:
    """Just enough of docs/devcloud-api.md for the CLI: keys, account, hosts, agents."""

    def __init__(self) -> None:
        self.roles = {ADMIN: "admin", MEMBER: "member"}
        self.hosts: dict[str, dict[str, Any]] = {}
        self.ca_fingerprint: str | None = None
        self.requests: list[tuple[str, str, Any]] = []
        self.raw: dict[str, tuple[int, bytes]] = {}  # path -> canned (status, body)
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.method, request.path, body))
        if request.path in self.raw:
            status, raw = self.raw[request.path]
            return web.Response(status=status, body=raw)
        role = self.roles.get(request.headers.get("Authorization", "").removeprefix("apikey "))
        if role is None:
            return web.json_response({"message": "unknown key"}, status=401)
        route = (request.method, request.path)
        if route == ("GET", "/api/v1/personal-api-keys/verify"):
            return web.Response(status=204)
        if route == ("GET", "/api/v1/personal-api-keys/me"):
            return web.json_response({"role": role})
        if route == ("GET", "/api/v1/agent-orchestrator/account"):
            fp = self.ca_fingerprint
            return web.json_response({"hosts": len(self.hosts), "client_ca_fingerprint": fp})
        if role != "admin":
            return web.json_response({"message": "admin only"}, status=403)
        if route == ("POST", "/api/v1/agent-orchestrator/hosts"):
            return self._register(body)
        match = re.fullmatch(r"/api/v1/agent-orchestrator/hosts/([^/]+)/agents", request.path)
        if request.method == "PUT" and match:
            host = self.hosts.get(match.group(1))
            if host is None:
                return web.json_response({"message": "unknown host"}, status=404)
            host["managed_agents"] = body["managed_agents"]
            host["installed_agents"] = body.get("installed_agents", host["installed_agents"])
            return web.json_response({"host_id": match.group(1), **host})
        return web.json_response({"message": "no such route"}, status=404)

    def _register(self, body: dict[str, Any]) -> web.Response:
        host = self.hosts.get(body["host_id"])
        if host and host["instance_id"] != body["instance_id"]:
            return web.json_response({"message": "Host is already registered"}, status=409)
        ca = x509.load_pem_x509_certificate(body["client_ca_pem"].encode())
        fp = hashlib.sha256(ca.public_bytes(serialization.Encoding.DER)).hexdigest()
        if self.ca_fingerprint not in (None, fp):
            return web.json_response({"message": "not the account CA"}, status=400)
        cert = x509.load_pem_x509_certificate(body["client_cert_pem"].encode())
        cert.verify_directly_issued_by(ca)
        self.ca_fingerprint = fp
        self.hosts[body["host_id"]] = {
            "instance_id": body["instance_id"],
            "managed_agents": body["managed_agents"],
            "installed_agents": body.get("installed_agents", []),
        }
        return web.json_response(
            {
                "host_id": body["host_id"],
                "temporal": {
                    "address": "host.docker.internal:7443",
                    "namespace": "default",
                    "server_name": "host.docker.internal",
                },
                "server_ca_pem": SERVER_CA,
            }
        )

    def start(self) -> None:
        self._thread.start()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        asyncio.run_coroutine_threadsafe(self._runner.setup(), self._loop).result(10)
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        asyncio.run_coroutine_threadsafe(site.start(), self._loop).result(10)
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


FAKE_DOCKER = r"""#!/bin/sh
printf '%s\n' "$*" >> "$FAKE_DOCKER_LOG"
if [ "$1" = compose ] && [ "$2" = version ]; then
  if [ "$FAKE_COMPOSE" = missing ]; then
    echo "docker: 'compose' is not a docker command." >&2; exit 1
  fi
  echo "${FAKE_COMPOSE:-Docker Compose version v2.40.3}"; exit 0
fi
if [ "$1" = ps ]; then
  case "$FAKE_PS" in
    denied) echo "permission denied while trying to connect to the Docker daemon socket" >&2
            exit 1;;
    down) echo "Cannot connect to the Docker daemon. Is the docker daemon running?" >&2; exit 1;;
  esac
  case "$*" in *--format*|*-q*|*-aq*) exit 0;; esac  # no containers to list
  echo "CONTAINER ID   IMAGE"; exit 0
fi
if [ "$1" = info ]; then
  if [ -n "$FAKE_ROOTLESS" ]; then echo '["name=seccomp,profile=default","name=rootless"]'
  else echo '["name=seccomp,profile=default"]'; fi
  exit 0
fi
if [ "$1" = image ] && [ "$2" = inspect ]; then
  case " $FAKE_MISSING_IMAGES " in *" $3 "*) exit 1;; esac
  echo "[{}]"; exit 0
fi
if [ "$1" = compose ]; then
  for arg in "$@"; do [ "$arg" = pull ] && exit "${FAKE_PULL_EXIT:-0}"; done
  exit "${FAKE_COMPOSE_EXIT:-0}"
fi
exit 0
"""


@pytest.fixture
def cloud() -> Iterator[FakeBigeye]:
    fake = FakeBigeye()
    fake.start()
    yield fake
    fake.stop()


class Host:
    def __init__(self, path: Path, env: dict[str, str], log: Path) -> None:
        self.path, self.env, self.log = path, env, log

    def run(self, *argv: str, **env: str) -> int:
        return main([*argv, "--dir", str(self.path)], {**self.env, **env})

    def register(self, *agents: str, host_id: str = "prod-agent-01", **env: str) -> int:
        argv = ["register", f"--host-id={host_id}"]
        for agent in agents:
            argv += ["--agent", agent]
        return self.run(*argv, **env)

    def docker_calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def changing_calls(self) -> list[str]:
        """The docker calls without the looks at the stack's state (which orchestrator and
        which drainers exist) that precede and follow every `compose up -d`."""
        looks = ("ps -aq ", "inspect ", "image inspect --format ")
        return [call for call in self.docker_calls() if not call.startswith(looks)]

    @property
    def config(self) -> Path:
        return self.path / "bigeye_agent.yml"


@pytest.fixture
def make_host(tmp_path: Path, cloud: FakeBigeye) -> Any:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    log = tmp_path / "docker.log"
    count = iter(range(100))
    listener = socket.socket(socket.AF_UNIX)  # where the engine's socket would be
    engine_socket = tmp_path / "docker.sock"
    listener.bind(str(engine_socket))

    def factory(name: str | None = None) -> Host:
        path = tmp_path / (name or f"host{next(count)}")
        path.mkdir()
        env = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "FAKE_DOCKER_LOG": str(log),
            "BIGEYE_API_KEY": ADMIN,
            "BIGEYE_URL": cloud.url,
            "BIGEYE_COMPOSE_PROJECT": "bigeye-test",
            "DOCKER_HOST": f"unix://{engine_socket}",
        }
        return Host(path, env, log)

    return factory


def snapshot(path: Path) -> dict[str, tuple[int, bytes]]:
    found = {}
    for item in sorted(path.rglob("*")):
        data = item.read_bytes() if item.is_file() else b""
        found[str(item.relative_to(path))] = (item.stat().st_mode, data)
    return found


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("bigeye-agent: error: ")
    return lines[0].removeprefix("bigeye-agent: error: ")


EXISTING = """\
# Bigeye agents on this host — maintained by hand
lineage_plus_legacy:   # the old cron-driven agent; not the orchestrator's
   schedule: "0 3 * * *"
   workers: 4
registry: {server: docker.io, username: bigeyedata, password_file: agent_config/docker_token}
agents:
    lineage_plus: {image: "docker.io/bigeyedata/lineage-plus-connector:1.2", memory: 25g}
# the end"""


# ---- register ------------------------------------------------------------------------------


def test_register_fresh_host(make_host: Any, cloud: FakeBigeye, capsys: Any) -> None:
    host = make_host()
    assert host.register("datahealth=docker.io/bigeyedata/datahealth:3") == 0
    out = capsys.readouterr().out

    agent_config = host.path / "agent_config"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in agent_config.iterdir() if p.is_file()}
    # root owns this host directory: the orchestrator runs as uid 10001 and reads its key
    # through group 10001; nobody else may, and the CA's key stays root's alone
    assert modes == {
        "mtls.pem": 0o644,
        "mtls.key": 0o640,
        "mtls_ca.pem": 0o644,
        "mtls_ca.key": 0o600,
        "bigeye_workflows_ca.pem": 0o644,
    }
    assert (agent_config / "mtls.key").stat().st_gid == 10001
    assert f"{agent_config / 'mtls.key'}: group 10001, mode 0640" in out
    assert (agent_config / "bigeye_workflows_ca.pem").read_text() == SERVER_CA
    assert (agent_config / "datahealth").is_dir()
    keys.load(agent_config)  # a consistent key set

    config = load_host_config(host.config)
    assert config.docker_compose_enabled is True
    assert config.orchestrator.host_id == "prod-agent-01"
    assert uuid.UUID(config.orchestrator.instance_id or "").version == 4
    assert config.orchestrator.temporal.address == "host.docker.internal:7443"
    assert config.orchestrator.temporal.server_name == "host.docker.internal"
    assert config.agents["datahealth"].image == "docker.io/bigeyedata/datahealth:3"
    assert not list(host.path.glob("bigeye_agent.yml.bak-*"))  # nothing to back up

    (method, path, body) = cloud.requests[-1]
    assert (method, path) == ("POST", "/api/v1/agent-orchestrator/hosts")
    assert body["instance_id"] == config.orchestrator.instance_id
    assert body["managed_agents"] == ["datahealth"]
    assert body["client_ca_pem"] == (agent_config / "mtls_ca.pem").read_text()
    assert body["client_cert_pem"] == (agent_config / "mtls.pem").read_text()
    assert body["cli_version"]

    compose = yaml.safe_load((host.path / COMPOSE_FILE_NAME).read_text())
    assert compose["name"] == "bigeye-test"
    env = compose["services"]["bigeye-agent-orchestrator"]["environment"]
    assert compose["services"]["bigeye-agent-orchestrator"]["user"] == "10001:10001"
    proxy_volumes = compose["services"]["docker-socket-proxy"]["volumes"]
    assert proxy_volumes == [
        f"{host.env['DOCKER_HOST'][7:]}:/var/run/docker.sock:ro",
        f"{host.path}:/etc/bigeye:ro",  # the agent set, read-only
    ]
    assert env["BIGEYE_TLS_SERVER_NAME"] == "host.docker.internal"
    assert env["BIGEYE_TLS_CA"] == "/etc/bigeye/agent_config/bigeye_workflows_ca.pem"
    compose_file = host.path / COMPOSE_FILE_NAME
    assert host.changing_calls() == [
        "compose version",
        "ps",
        "info --format {{json .SecurityOptions}}",
        f"compose -f {compose_file} -p bigeye-test up -d",
    ]
    assert "bigeye-agent compose status" in out
    assert "bigeye-agent compose logs -s bigeye-agent-orchestrator" in out


def test_register_edits_an_existing_file_non_destructively(
    make_host: Any, cloud: FakeBigeye
) -> None:
    host = make_host()
    host.config.write_bytes(EXISTING.encode())
    host.config.chmod(0o640)
    image = "docker.io/bigeyedata/external-monitors:7"
    assert host.register(f"external_monitors={image}") == 0

    backups = list(host.path.glob("bigeye_agent.yml.bak-*"))
    assert len(backups) == 1
    assert re.fullmatch(r"bigeye_agent\.yml\.bak-\d{8}T\d{6}Z", backups[0].name)
    assert backups[0].read_bytes() == EXISTING.encode()

    new = host.config.read_text()
    assert stat.S_IMODE(host.config.stat().st_mode) == 0o640
    # every original line is still there, in order, byte for byte
    original = EXISTING.splitlines(keepends=True)
    instance = load_host_config(host.config).orchestrator.instance_id
    assert (
        new
        == "".join(original[:7])
        + (
            f"    external_monitors: {{image: '{image}'}}\n"
            "docker_compose_enabled: true\n"
            "orchestrator:\n"
            "   host_id: prod-agent-01\n"
            f"   instance_id: {instance}\n"
            "   temporal: {address: 'host.docker.internal:7443', namespace: default, "
            "server_name: host.docker.internal}\n"
            f"   bigeye_url: '{cloud.url}'\n"
        )
        + original[7]
    )
    data = yaml.safe_load(new)
    before = yaml.safe_load(EXISTING)
    for key in ("lineage_plus_legacy", "registry"):
        assert data[key] == before[key]
    assert data["agents"]["lineage_plus"] == before["agents"]["lineage_plus"]


def test_register_again_reuses_keys_and_instance(make_host: Any, cloud: FakeBigeye) -> None:
    host = make_host()
    assert host.register("datahealth=img:1") == 0
    first = snapshot(host.path / "agent_config")
    instance = load_host_config(host.config).orchestrator.instance_id
    config_before = host.config.read_bytes()

    assert host.register() == 0
    assert snapshot(host.path / "agent_config") == first
    assert load_host_config(host.config).orchestrator.instance_id == instance
    assert host.config.read_bytes() == config_before  # nothing to change: no backup either
    assert not list(host.path.glob("bigeye_agent.yml.bak-*"))
    assert cloud.requests[-1][2]["managed_agents"] == ["datahealth"]


def test_second_host_needs_the_copied_agent_config(make_host: Any, capsys: Any) -> None:
    first, second = make_host(), make_host()
    assert first.register() == 0
    capsys.readouterr()

    before = snapshot(second.path)
    assert second.register(host_id="prod-agent-02") == 1
    line = one_error_line(capsys.readouterr().err)
    assert "copy the agent_config/ directory from a registered host" in line
    assert snapshot(second.path) == before

    shutil.copytree(first.path / "agent_config", second.path / "agent_config")
    assert second.register(host_id="prod-agent-02") == 0
    assert (second.path / "agent_config" / "mtls.key").read_bytes() == (
        first.path / "agent_config" / "mtls.key"
    ).read_bytes()


def test_same_host_id_from_another_machine_is_already_registered(
    make_host: Any, capsys: Any
) -> None:
    first, second = make_host(), make_host()
    assert first.register() == 0
    shutil.copytree(first.path / "agent_config", second.path / "agent_config")
    capsys.readouterr()
    assert second.register() == 1
    assert one_error_line(capsys.readouterr().err).startswith("Host is already registered")


def test_keys_of_another_account_are_refused(make_host: Any, capsys: Any) -> None:
    first, second = make_host(), make_host()
    assert first.register() == 0
    (second.path / "agent_config").mkdir()
    keys.write(second.path / "agent_config", keys.generate(), (os.getuid(), os.getgid()))
    before = snapshot(second.path)
    capsys.readouterr()
    assert second.register(host_id="prod-agent-02") == 1
    assert "is not the CA this account trusts" in one_error_line(capsys.readouterr().err)
    assert snapshot(second.path) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand files to another user")
def test_as_root_the_files_belong_to_the_directory_owner(make_host: Any) -> None:
    host = make_host()
    os.chown(host.path, 4242, 4242)
    assert host.register("datahealth=img:1") == 0
    for path in [host.config, host.path / COMPOSE_FILE_NAME, *host.path.rglob("agent_config*")]:
        assert (path.stat().st_uid, path.stat().st_gid) == (4242, 4242), path
    for path in (host.path / "agent_config").rglob("*"):
        assert path.stat().st_uid == 4242, path
    compose = yaml.safe_load((host.path / COMPOSE_FILE_NAME).read_text())
    assert compose["services"]["bigeye-agent-orchestrator"]["user"] == "4242:4242"


def _partial(host: Host) -> None:
    (host.path / "agent_config").mkdir()
    (host.path / "agent_config" / "mtls.pem").write_text("only the certificate\n")


def _alias(host: Host) -> None:
    host.config.write_text("base: &b {image: a}\nagents:\n  datahealth: *b\n")


def _bad_yaml(host: Host) -> None:
    host.config.write_text("agents:\n  lineage_plus: {image: x}\n  bogus: {image: y}\n")


@pytest.mark.parametrize(
    ("setup", "argv_agents", "env", "expected"),
    [
        (None, (), {"FAKE_COMPOSE": "docker-compose version 1.29.2"}, "install the Docker Compose"),
        (None, (), {"FAKE_COMPOSE": "missing"}, "install the Docker Compose V2 plugin"),
        (None, (), {"FAKE_PS": "denied"}, "sudo usermod -aG docker $USER, then log in again"),
        (None, (), {"FAKE_PS": "down"}, "start the Docker engine"),
        (None, ("lineage_plus",), {}, "is not TYPE=IMAGE"),
        (None, ("sds=img:1",), {}, "unknown agent type 'sds'"),
        (None, ("datahealth=",), {}, "the image is empty"),
        (_bad_yaml, (), {}, "agents: unknown agent type 'bogus'"),
        (_partial, (), {}, "lacks mtls.key, mtls_ca.pem, mtls_ca.key"),
        (_alias, ("datahealth=new",), {}, "agents.datahealth is an alias"),
        (None, (), {"BIGEYE_API_KEY": "nope"}, "the API key was rejected"),
        (None, (), {"BIGEYE_API_KEY": MEMBER}, "an admin Personal API Key is required"),
        (None, (), {"BIGEYE_URL": "ftp://example.com"}, "invalid Bigeye URL"),
    ],
)
def test_failed_checks_write_nothing(
    make_host: Any, capsys: Any, setup: Any, argv_agents: tuple[str, ...], env: Any, expected: str
) -> None:
    host = make_host()
    if setup:
        setup(host)
    before = snapshot(host.path)
    assert host.register(*argv_agents, **env) == 1
    assert expected in one_error_line(capsys.readouterr().err)
    assert snapshot(host.path) == before
    assert not [c for c in host.docker_calls() if " up " in f" {c} "]


def test_invalid_host_id(make_host: Any, capsys: Any) -> None:
    host = make_host()
    for bad in ("-lead", "under_score", "a" * 257):
        assert host.register(host_id=bad) == 1
        assert "at most 256 characters" in one_error_line(capsys.readouterr().err)
    assert list(host.path.iterdir()) == []


def test_no_api_key_and_no_terminal(make_host: Any, capsys: Any) -> None:
    host = make_host()
    env = dict(host.env)
    del env["BIGEYE_API_KEY"]
    assert main(["register", "--host-id", "h1", "--dir", str(host.path)], env) == 1
    assert one_error_line(capsys.readouterr().err) == m.NO_API_KEY
    assert list(host.path.iterdir()) == []


def test_api_key_prompt() -> None:
    assert api.api_key({}, prompt=lambda _: " k \n", interactive=True) == "k"
    with pytest.raises(m.CliError, match="empty"):
        api.api_key({}, prompt=lambda _: "", interactive=True)


def test_unreachable_and_non_json_api(make_host: Any, cloud: FakeBigeye, capsys: Any) -> None:
    host = make_host()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    assert host.register(BIGEYE_URL=closed) == 1
    assert one_error_line(capsys.readouterr().err).startswith(
        f"cannot connect to Bigeye at {closed}"
    )

    cloud.raw["/api/v1/personal-api-keys/verify"] = (200, b"<html>login</html>")
    assert host.register() == 1
    assert "a body that is not JSON" in one_error_line(capsys.readouterr().err)
    assert list(host.path.iterdir()) == []


def test_compose_up_failure_is_one_line(make_host: Any, capsys: Any) -> None:
    host = make_host()
    assert host.register(FAKE_COMPOSE_EXIT="3") == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("docker compose up -d failed (exit 3)")
    assert line.endswith("run bigeye-agent compose up")


# ---- compose and sync --------------------------------------------------------------------


@pytest.mark.parametrize("action", ["status", "logs", "up", "down", "upgrade"])
def test_compose_before_register(make_host: Any, capsys: Any, action: str) -> None:
    host = make_host()
    assert host.run("compose", action) == 1
    assert one_error_line(capsys.readouterr().err) == m.NOT_ENABLED
    assert m.NOT_ENABLED == "Docker Compose mode is not enabled — re-run bigeye-agent register"
    host.config.write_text("docker_compose_enabled: false\n")
    assert host.run("compose", action) == 1
    assert one_error_line(capsys.readouterr().err) == m.NOT_ENABLED
    host.config.write_text("docker_compose_enabled: true\n")  # but no compose file
    assert host.run("compose", action) == 1
    assert one_error_line(capsys.readouterr().err) == m.NOT_ENABLED
    assert host.docker_calls() == []


def test_compose_commands_wrap_docker_compose(make_host: Any, capsys: Any) -> None:
    host = make_host()
    assert host.register() == 0
    host.log.unlink()
    base = f"compose -f {host.path / COMPOSE_FILE_NAME} -p bigeye-test"
    assert host.run("compose", "status") == 0
    assert host.run("compose", "logs", "-s", "bigeye-agent-orchestrator", "-f") == 0
    assert host.run("compose", "logs") == 0
    assert host.run("compose", "up") == 0
    assert host.run("compose", "down") == 0
    drainers = (
        "ps -aq --filter label=com.bigeye.orchestrator.compose-project=bigeye-test "
        "--filter label=com.bigeye.orchestrator.drains-version"
    )
    orchestrator = (
        "ps -aq --filter label=com.docker.compose.project=bigeye-test "
        "--filter label=com.docker.compose.service=bigeye-agent-orchestrator"
    )
    assert host.docker_calls() == [
        f"{base} ps",
        drainers,  # status lists them
        f"ps -a --filter label=com.docker.compose.project.working_dir={host.path} --format "
        '{{.Label "com.docker.compose.project"}}\t{{.Names}}',
        f"{base} logs -f bigeye-agent-orchestrator",
        f"{base} logs",
        orchestrator,  # which release runs before (none here: no drainer to create)
        f"{base} up -d",
        orchestrator,  # and after
        drainers,  # up retires the finished ones
        drainers,  # and resumes the others
        drainers,  # down stops them first
        f"{base} down",
    ]
    assert host.run("compose", "status", FAKE_COMPOSE_EXIT="1") == 1
    assert "docker compose ps failed (exit 1)" in one_error_line(capsys.readouterr().err)


def test_upgrade(make_host: Any, capsys: Any) -> None:
    host = make_host()
    assert host.register() == 0
    base = f"compose -f {host.path / COMPOSE_FILE_NAME} -p bigeye-test"
    recreate = f"{base} up -d"  # recreates what changed, nothing else

    host.log.unlink()
    assert host.run("compose", "upgrade") == 0
    compose_calls = [call for call in host.docker_calls() if call.startswith("compose")]
    assert compose_calls == [f"{base} pull", recreate]

    host.log.unlink()
    capsys.readouterr()
    assert host.run("compose", "upgrade", FAKE_PULL_EXIT="1") == 0
    assert m.PULL_FAILED_LOCAL in capsys.readouterr().out
    assert [call for call in host.docker_calls() if call.startswith("compose")][-1] == recreate

    compose = yaml.safe_load((host.path / COMPOSE_FILE_NAME).read_text())
    image = compose["services"]["docker-socket-proxy"]["image"]
    host.log.unlink()
    assert host.run("compose", "upgrade", FAKE_PULL_EXIT="1", FAKE_MISSING_IMAGES=image) == 1
    assert f"{image} is not present locally" in one_error_line(capsys.readouterr().err)
    assert recreate not in host.docker_calls()


def test_sync_pushes_the_agent_set_and_applies(make_host: Any, cloud: FakeBigeye) -> None:
    host = make_host()
    assert host.register("datahealth=img:1") == 0
    text = host.config.read_text().replace(
        "  datahealth: {image: 'img:1'}\n",
        "  datahealth: {image: 'img:1'}\n  lineage_plus: {image: 'img:2'}\n",
    )
    host.config.write_text(text)
    (host.path / COMPOSE_FILE_NAME).unlink()
    host.log.unlink()
    assert host.run("sync") == 0
    assert cloud.requests[-1] == (
        "PUT",
        "/api/v1/agent-orchestrator/hosts/prod-agent-01/agents",
        {"managed_agents": ["datahealth", "lineage_plus"], "installed_agents": []},
    )
    assert cloud.hosts["prod-agent-01"]["managed_agents"] == ["datahealth", "lineage_plus"]
    assert (host.path / COMPOSE_FILE_NAME).is_file()
    assert host.changing_calls() == [
        "info --format {{json .SecurityOptions}}",
        f"compose -f {host.path / COMPOSE_FILE_NAME} -p bigeye-test up -d",
    ]
    assert cloud.hosts["prod-agent-01"]["installed_agents"] == []


def test_sync_before_register_and_unknown_host(
    make_host: Any, cloud: FakeBigeye, capsys: Any
) -> None:
    host = make_host()
    assert host.run("sync") == 0  # not registered: the set is checked and shown, not pushed
    out = capsys.readouterr().out
    assert "nothing was pushed" in out and cloud.requests == []
    host.config.write_text("docker_compose_enabled: true\norchestrator: {host_id: ghost}\n")
    assert host.run("sync") == 1
    assert "host 'ghost' is not registered" in one_error_line(capsys.readouterr().err)


# ---- usage ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["register"],
        ["register", "--host-id"],
        ["register", "--host-id", "h", "--nope"],
        ["compose"],
        ["compose", "restart"],
        ["compose", "logs", "-s"],
        ["sync", "extra"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: Any) -> None:
    assert main(argv, {}) == 2
    assert "usage: bigeye-agent" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["register"],
        ["compose"],
        ["compose", "status"],
        ["compose", "logs"],
        ["compose", "up"],
        ["compose", "down"],
        ["compose", "upgrade"],
        ["sync"],
    ],
)
def test_help_on_every_command(argv: list[str], capsys: Any) -> None:
    assert main([*argv, "--help"], {}) == 0
    assert "usage: bigeye-agent" in capsys.readouterr().out


def test_cli_output_is_plain_lines(make_host: Any, capsys: Any) -> None:
    host = make_host()
    assert host.register() == 0
    out = capsys.readouterr().out
    assert "registered host prod-agent-01" in out
    assert "No agent is installed yet" in out
    assert not any(line.lstrip().startswith("{") for line in out.splitlines())


# ---- hosts as they are in the field ----------------------------------------------------------

LEGACY_HOST = """\
# an installation that predates the orchestrator
company_uuid: 9f1c
lineage:
  image: docker.io/bigeyedata/lineage-plus-connector:2.3.1
  connections: [snowflake, tableau]
external-monitors:
  image_tag: "1.9"
sds:
  port: 8080
"""


def test_register_finds_the_installed_agent_set_without_flags(
    make_host: Any, cloud: FakeBigeye, capsys: Any
) -> None:
    host = make_host()
    host.config.write_text(LEGACY_HOST)
    for directory in ("lineage", "datahealth", "sds"):
        (host.path / "agent_config" / directory).mkdir(parents=True)
    assert host.register() == 0
    out = capsys.readouterr().out

    config = load_host_config(host.config)
    assert config.agents["lineage_plus"].image == (
        "docker.io/bigeyedata/lineage-plus-connector:2.3.1"
    )
    assert config.agents["lineage_plus"].config_dir == "agent_config/lineage"
    assert config.agents["datahealth"].image == "docker.io/bigeyedata/datahealth:latest"
    assert config.agents["datahealth"].config_dir is None  # agent_config/datahealth: the default
    assert config.agents["external_monitors"].image == (
        "docker.io/bigeyedata/external-monitors:1.9"
    )
    assert host.config.read_text().startswith(LEGACY_HOST), "every original byte kept"
    body = next(b for m_, p, b in cloud.requests if p.endswith("/hosts") and m_ == "POST")
    assert body["managed_agents"] == ["lineage_plus", "datahealth", "external_monitors"]
    assert body["installed_agents"] == ["sds"]
    assert "lineage_plus (Lineage Plus): managed" in out
    assert "sds (SDS): installed, runs on its own (not managed)" in out
    assert "installed, running on their own: sds" in out


def test_an_agent_flag_overrides_the_image_found(make_host: Any) -> None:
    host = make_host()
    host.config.write_text(LEGACY_HOST)
    assert host.register("lineage_plus=reg/lineage:9") == 0
    assert load_host_config(host.config).agents["lineage_plus"].image == "reg/lineage:9"


@pytest.mark.parametrize(
    ("text", "env", "why"),
    [
        ("", {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, "KUBERNETES_SERVICE_HOST is set"),
        ("kubernetes_enabled: true\n", {}, "sets kubernetes_enabled: true"),
        ("kubernetes:\n  namespace: bigeye\n", {}, "has a kubernetes: section"),
        ("deployment: helm\n", {}, "sets deployment: helm"),
    ],
)
def test_a_kubernetes_host_is_refused_before_anything_is_written(
    make_host: Any, capsys: Any, text: str, env: dict[str, str], why: str
) -> None:
    host = make_host()
    if text:
        host.config.write_text(text)
    before = snapshot(host.path)
    assert host.register(**env) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(
        "Kubernetes hosts can't register: the orchestrator runs as a Docker Compose stack ("
    )
    assert why in line
    assert snapshot(host.path) == before
    assert host.docker_calls() == []


def test_the_socket_comes_from_docker_host_or_the_rootless_default(
    make_host: Any, capsys: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bigeye_agent import checks

    host = make_host()
    assert host.register(DOCKER_HOST="tcp://10.1.1.1:2375") == 1
    assert one_error_line(capsys.readouterr().err) == m.SOCKET_NOT_UNIX.format(
        host="tcp://10.1.1.1:2375"
    )
    assert host.register(DOCKER_HOST=f"unix://{tmp_path}/none.sock") == 1
    assert "there is no Docker socket at" in one_error_line(capsys.readouterr().err)
    assert not host.config.exists()

    # no DOCKER_HOST, no system socket: a rootless engine's, under $XDG_RUNTIME_DIR
    runtime = tmp_path / "run-user"
    runtime.mkdir()
    rootless = socket.socket(socket.AF_UNIX)
    rootless.bind(str(runtime / "docker.sock"))
    monkeypatch.setattr(checks, "DEFAULT_SOCKET", tmp_path / "no-system-engine.sock")
    env = {k: v for k, v in host.env.items() if k != "DOCKER_HOST"}
    env["XDG_RUNTIME_DIR"] = str(runtime)
    assert checks.docker_socket(env) == runtime / "docker.sock"
    rootless.close()


def test_a_compose_mode_host_keeps_its_stack_under_its_own_project(
    make_host: Any, capsys: Any
) -> None:
    host = make_host("site-a")
    original = (
        "services:\n  sds:\n    image: docker.io/bigeyedata/sds:3\n"
        "    container_name: bigeye-sds\n    restart: unless-stopped\n"
    )
    (host.path / COMPOSE_FILE_NAME).write_text(original)
    assert host.register("datahealth=img:1") == 0
    out = capsys.readouterr().out
    (backup,) = host.path.glob(f"{COMPOSE_FILE_NAME}.bak-*")
    assert backup.read_text() == original
    kept = (host.path / "docker-compose.agents.yml").read_text()
    assert kept.endswith(original) and 'name: "site-a"' in kept
    assert yaml.safe_load(kept)["services"]["sds"]["container_name"] == "bigeye-sds"
    ours = yaml.safe_load((host.path / COMPOSE_FILE_NAME).read_text())
    assert set(ours["services"]) == {"bigeye-agent-orchestrator", "docker-socket-proxy"}
    assert "keep running as the Compose project site-a" in out

    # it is ours now: a second register leaves the kept stack alone
    assert host.register("datahealth=img:1") == 0
    assert len(list(host.path.glob(f"{COMPOSE_FILE_NAME}.bak-*"))) == 1


def test_a_compose_mode_stack_named_like_ours_is_refused(make_host: Any, capsys: Any) -> None:
    host = make_host()
    (host.path / COMPOSE_FILE_NAME).write_text("name: bigeye-test\nservices: {sds: {image: x}}\n")
    before = snapshot(host.path)
    assert host.register() == 1
    assert "run as the Compose project 'bigeye-test'" in one_error_line(capsys.readouterr().err)
    assert snapshot(host.path) == before


# ---- install -----------------------------------------------------------------------------------


def test_install_on_a_host_not_registered_adds_the_agent_and_pushes_nothing(
    make_host: Any, cloud: FakeBigeye, capsys: Any
) -> None:
    host = make_host()
    host.config.write_text(LEGACY_HOST)
    assert host.run("install", "lineage", "--yes") == 0
    out = capsys.readouterr().out
    agent = load_host_config(host.config).agents["lineage_plus"]
    assert agent.image == "docker.io/bigeyedata/lineage-plus-connector:2.3.1"  # the one it uses
    assert "nothing was pushed" in out and cloud.requests == []
    assert (host.path / "agent_config" / "lineage_plus").is_dir()
    assert host.config.read_text().startswith(LEGACY_HOST)
    assert len(list(host.path.glob("bigeye_agent.yml.bak-*"))) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["install"], m.INSTALL_WHICH),
        (["install", "sds"], m.INSTALL_UNKNOWN.format(agent="sds")),
        (["install", "datahealth", "--image", "a b"], m.INSTALL_BAD_IMAGE.format(value="a b")),
        (["install", "datahealth", "--config-dir", "../x"],
         m.INSTALL_BAD_CONFIG_DIR.format(value="../x")),
        (["install", "datahealth", "--config-dir", "agent_config"],
         m.INSTALL_BAD_CONFIG_DIR.format(value="agent_config")),
    ],
)  # fmt: skip
def test_install_refusals_write_nothing(
    make_host: Any, capsys: Any, argv: list[str], message: str
) -> None:
    host = make_host()
    before = snapshot(host.path)
    assert host.run(*argv) == 1
    assert one_error_line(capsys.readouterr().err) == message
    assert snapshot(host.path) == before


def test_install_asks_on_a_terminal_and_takes_the_defaults_on_enter(make_host: Any) -> None:
    from bigeye_agent.install import InstallOptions, install

    host = make_host()
    answers = iter(["external-monitors", "reg/monitors:4", ""])
    asked: list[str] = []

    def ask(question: str) -> str:
        asked.append(question)
        return next(answers)

    install(InstallOptions(host.path), host.env, lambda _: None, ask, interactive=True)
    agent = load_host_config(host.config).agents["external_monitors"]
    assert agent.image == "reg/monitors:4" and agent.config_dir is None
    assert asked[1] == "image [docker.io/bigeyedata/external-monitors:latest]: "
    assert asked[2] == "config directory [agent_config/external_monitors]: "


def test_install_on_a_registered_host_syncs(make_host: Any, cloud: FakeBigeye) -> None:
    host = make_host()
    assert host.register("datahealth=img:1") == 0
    host.log.unlink()
    assert host.run("install", "external_monitors", "--image", "img:2", "--yes") == 0
    assert cloud.hosts["prod-agent-01"]["managed_agents"] == ["datahealth", "external_monitors"]
    assert (
        host.changing_calls()[-1]
        == f"compose -f {host.path / COMPOSE_FILE_NAME} -p bigeye-test up -d"
    )


def test_on_a_rootless_engine_the_stack_runs_as_the_engines_own_user(
    make_host: Any, capsys: Any
) -> None:
    host = make_host()
    assert host.register("datahealth=img:1", FAKE_ROOTLESS="1") == 0
    out = capsys.readouterr().out
    assert "uid 0 of the rootless engine's user namespace" in out
    stack = yaml.safe_load((host.path / COMPOSE_FILE_NAME).read_text())["services"]
    assert stack["bigeye-agent-orchestrator"]["user"] == "0:0"
    assert stack["docker-socket-proxy"]["user"] == "0:0"
    assert "group_add" not in stack["docker-socket-proxy"]
    key = host.path / "agent_config" / "mtls.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600, "nothing to give: the owner reads it"


def test_metrics_are_published_only_when_asked(make_host: Any) -> None:
    host = make_host()
    assert host.register("datahealth=img:1") == 0
    stack = yaml.safe_load((host.path / COMPOSE_FILE_NAME).read_text())["services"]
    assert "ports" not in stack["bigeye-agent-orchestrator"]
    assert host.run("sync", BIGEYE_METRICS_ADDR="127.0.0.1:9100") == 0
    orchestrator = yaml.safe_load((host.path / COMPOSE_FILE_NAME).read_text())["services"][
        "bigeye-agent-orchestrator"
    ]
    assert orchestrator["ports"] == ["127.0.0.1:9100:9100"]
    assert orchestrator["environment"]["BIGEYE_METRICS_ADDR"] == "0.0.0.0:9100"


# ---- state as JSON, diagnose, completion -------------------------------------------------------


def test_sync_and_status_speak_json(make_host: Any, cloud: FakeBigeye, capsys: Any) -> None:
    host = make_host()
    assert host.run("sync", "--json") == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["registered"] is False and summary["pushed"] is False
    assert "nothing was pushed" in captured.err  # the words go to stderr, the JSON to stdout
    assert host.register("datahealth=img:1") == 0
    capsys.readouterr()
    assert host.run("sync", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["pushed"] is True and summary["managed_agents"] == ["datahealth"]
    assert host.run("compose", "status", "--json") == 0
    state = json.loads(capsys.readouterr().out)
    assert state["project"] == "bigeye-test" and state["services"] == []


def test_diagnose_reports_without_a_secret(make_host: Any, capsys: Any) -> None:
    host = make_host()
    assert host.register("datahealth=img:1") == 0
    capsys.readouterr()
    key = (host.path / "agent_config" / "mtls.key").read_text()
    ca_key = (host.path / "agent_config" / "mtls_ca.key").read_text()
    for as_json in (True, False):
        code = host.run("diagnose", *(["--json"] if as_json else []))
        out = capsys.readouterr().out
        secrets = [ADMIN, *key.splitlines()[1:-1], *ca_key.splitlines()[1:-1]]
        assert not [s for s in secrets if s and s in out], "a secret in the report"
        if as_json:
            report = json.loads(out)
            assert report["config"]["host_id"] == "prod-agent-01"
            assert report["keys"]["mtls.key"]["mode"] in ("0600", "0640")
            assert report["environment"]["BIGEYE_API_KEY"] == "set"
            assert [a["agent"] for a in report["agents"]] == ["datahealth"]
            assert "orchestrator_check" in report and isinstance(report["problems"], list)
        else:
            assert "mTLS files (modes only, never their content):" in out
        assert code in (0, 1)


def test_completion_scripts(capsys: Any) -> None:
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert "bigeye-agent" in script and "register" in script and "diagnose" in script
    assert main(["completion", "fish"]) == 2
