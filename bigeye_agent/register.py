"""`bigeye-agent register`: move a host to Docker Compose mode under the orchestrator.

The steps of design §7, in order: every check before anything is written; the mTLS files;
the registration; the non-destructive edit of bigeye_agent.yml (after a backup); the stack.
"""

from __future__ import annotations

import getpass
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bigeye_agent import api, checks, compose, files, keys, yamledit
from bigeye_agent import messages as m
from bigeye_agent.compose_file import COMPOSE_FILE_NAME, ORCHESTRATOR_SERVICE
from bigeye_agent.logs import get_logger
from bigeye_agent.messages import CliError
from orchestrator.hostconfig import (
    CONFIG_FILE_NAME,
    ConfigError,
    HostConfig,
    agent_config_dir,
    parse_host_config,
)
from orchestrator.version import VERSION

log = get_logger(__name__)

Print = Callable[[str], None]


@dataclass(frozen=True)
class RegisterOptions:
    host_dir: Path
    host_id: str
    bigeye_url: str | None = None
    agents: Sequence[str] = field(default_factory=tuple)


@dataclass
class _Checked:
    """What the checks established: nothing has been written yet."""

    old_text: str | None
    config: HostConfig
    added: dict[str, str]
    url: str
    client: api.BigeyeApi
    material: keys.Material | None  # None: generate (the account's first host)
    instance_id: str  # kept in bigeye_agent.yml; new on the first register


def backup_name(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{CONFIG_FILE_NAME}.bak-{stamp}"


def run_checks(
    opts: RegisterOptions,
    env: Mapping[str, str],
    out: Print,
    prompt: Callable[[str], str] = getpass.getpass,
    interactive: bool | None = None,
) -> _Checked:
    """Step 1: Docker, arguments, the file, the key set, the API key — before any write."""
    version = checks.check_compose_v2(env)
    checks.check_docker_access(env)
    out(f"Docker Compose {version} found; docker ps works")
    checks.check_host_id(opts.host_id)
    added = checks.parse_agents(opts.agents)
    checks.check_host_dir(opts.host_dir)
    old_text, config = checks.read_host_config(opts.host_dir)
    key_dir = opts.host_dir / keys.AGENT_CONFIG_DIR
    have = keys.present(key_dir)
    if have and len(have) < len(keys.KEY_SET):
        missing = [name for name in keys.KEY_SET if name not in have]
        raise CliError(
            m.KEYS_PARTIAL, directory=key_dir, present=", ".join(have), missing=", ".join(missing)
        )
    material = keys.load(key_dir) if have else None
    url = api.base_url(opts.bigeye_url, env, config.orchestrator.bigeye_url)
    # the edit of step 4, tried now with stand-in values: a file it cannot splice fails here
    stand_in = {"address": "bigeye.invalid:443", "namespace": "default", "server_name": None}
    instance_id = config.orchestrator.instance_id or str(uuid.uuid4())
    _edited(opts.host_dir, old_text, _updates(opts, config, url, added, instance_id, stand_in))
    client = api.BigeyeApi(url, api.api_key(env, prompt, interactive))
    client.verify_key()
    client.require_admin()
    account = client.account()
    out(f"API key accepted by {url} (admin)")
    if material is None and account.hosts > 0:
        raise CliError(m.KEYS_COPY, directory=key_dir, hosts=account.hosts)
    if material is not None and account.client_ca_fingerprint:
        found = keys.fingerprint(material.ca_cert)
        expected = account.client_ca_fingerprint.replace(":", "").lower()
        if found != expected:
            raise CliError(
                m.KEYS_OTHER_ACCOUNT, path=key_dir / keys.CA_CERT, found=found, expected=expected
            )
    return _Checked(old_text, config, added, url, client, material, instance_id)


def _write_keys(host_dir: Path, checked: _Checked, out: Print) -> keys.Material:
    """Step 2: reuse the key set byte for byte, or generate it for the account's first host."""
    owner = files.owner_of(host_dir)
    key_dir = host_dir / keys.AGENT_CONFIG_DIR
    files.make_dir(key_dir, owner)
    if checked.material is None:
        material = keys.generate()
        keys.write(key_dir, material, owner)
        names = ", ".join(keys.KEY_SET)
        out(f"generated the account CA and client certificate in {key_dir}: {names}")
        return material
    given = [n for n in keys.KEY_SET if files.give_to(key_dir / n, owner)]
    out(f"reusing the mTLS files in {key_dir} unchanged")
    if given:
        out(f"gave {', '.join(given)} to uid {owner[0]} (the orchestrator runs as that user)")
    return checked.material


def _write_server_ca(host_dir: Path, pem: str) -> Path | None:
    path = host_dir / keys.AGENT_CONFIG_DIR / keys.SERVER_CA
    data = pem.encode()
    if path.is_file() and files.read_bytes(path) == data:
        return None
    files.atomic_write(path, data, 0o644, files.owner_of(host_dir))
    return path


def _updates(
    opts: RegisterOptions,
    config: HostConfig,
    url: str,
    added: Mapping[str, str],
    instance_id: str,
    temporal: Mapping[str, Any],
) -> dict[str, Any]:
    """What register sets in bigeye_agent.yml (as a nested mapping of the changed leaves)."""
    orchestrator: dict[str, Any] = {
        "host_id": opts.host_id,
        "instance_id": instance_id,
        "temporal": dict(temporal),
    }
    if url != api.DEFAULT_URL or config.orchestrator.bigeye_url:
        orchestrator["bigeye_url"] = url
    updates: dict[str, Any] = {"docker_compose_enabled": True, "orchestrator": orchestrator}
    if added:
        updates["agents"] = {agent: {"image": image} for agent, image in added.items()}
    return updates


def _edited(host_dir: Path, old_text: str | None, updates: dict[str, Any]) -> str:
    """The spliced file, verified by re-parsing (nothing is written here)."""
    path = host_dir / CONFIG_FILE_NAME
    try:
        new_text = yamledit.apply(old_text or "", updates)
        yamledit.verify(old_text or "", new_text, updates)
        parse_host_config(new_text, path)
    except (yamledit.YamlEditError, ConfigError) as exc:
        raise CliError(m.YAML_EDIT_FAILED, path=path, detail=exc) from None
    return new_text


def _edit_config(host_dir: Path, old_text: str | None, updates: dict[str, Any]) -> tuple[str, str]:
    """Step 4: (new text, what was done) — backed up, spliced, verified, replaced atomically."""
    path = host_dir / CONFIG_FILE_NAME
    new_text = _edited(host_dir, old_text, updates)
    if old_text is None:
        files.atomic_write(path, new_text.encode(), 0o644, files.owner_of(host_dir))
        return new_text, f"wrote {path}"
    if new_text == old_text:
        return new_text, f"{path} already had these settings: left unchanged"
    backup = host_dir / backup_name()
    suffix = 1
    while backup.exists():
        suffix += 1
        backup = host_dir / f"{backup_name()}-{suffix}"
    files.copy_file(path, backup)
    target = path.resolve()  # a symlinked file stays a symlink: its target is replaced
    info = target.stat()
    files.atomic_write(target, new_text.encode(), info.st_mode & 0o7777, (info.st_uid, info.st_gid))
    return new_text, f"backed up {path.name} as {backup.name}; updated {path}"


def register(
    opts: RegisterOptions,
    env: Mapping[str, str],
    out: Print = print,
    prompt: Callable[[str], str] = getpass.getpass,
    interactive: bool | None = None,
) -> None:
    host_dir = opts.host_dir
    checked = run_checks(opts, env, out, prompt, interactive)

    material = _write_keys(host_dir, checked, out)

    instance_id = checked.instance_id
    agent_set = {name: agent.image for name, agent in checked.config.agents.items()}
    agent_set.update(checked.added)
    reg = checked.client.register_host(
        {
            "host_id": opts.host_id,
            "instance_id": instance_id,
            "managed_agents": list(agent_set),
            "client_cert_pem": material.client_cert.decode(),
            "client_ca_pem": material.ca_cert.decode(),
            "cli_version": VERSION,
        }
    )
    managed = ", ".join(agent_set) or "none yet"
    out(f"registered host {opts.host_id} with {checked.url} (managed agents: {managed})")
    written = _write_server_ca(host_dir, reg.server_ca_pem)
    if written:
        out(f"wrote {written}")

    temporal = {"address": reg.address, "namespace": reg.namespace, "server_name": reg.server_name}
    updates = _updates(opts, checked.config, checked.url, checked.added, instance_id, temporal)
    new_text, done = _edit_config(host_dir, checked.old_text, updates)
    out(done)
    config = parse_host_config(new_text, host_dir / CONFIG_FILE_NAME)
    owner = files.owner_of(host_dir)
    for agent in checked.added:
        directory = host_dir / agent_config_dir(agent, config.agents[agent])
        if directory.parent.is_dir() and files.make_dir(directory, owner):
            out(f"created {directory} for the {agent} agent's configuration files")

    out(f"wrote {compose.render(host_dir, config, env, reg.server_name)}")
    compose.run(host_dir, env, ["up", "-d"], "compose up")
    out(f"started the stack: {' '.join(compose.compose_argv(host_dir, env, 'up', '-d'))}")
    _next_steps(host_dir, opts.host_id, config, out)


def _next_steps(host_dir: Path, host_id: str, config: HostConfig, out: Print) -> None:
    where = "" if Path.cwd() == host_dir else f" --dir {host_dir}"
    out("")
    out("Next, check that the orchestrator is healthy and polling:")
    out(f"  bigeye-agent compose status{where}")
    out(f"  bigeye-agent compose logs -s {ORCHESTRATOR_SERVICE}{where}")
    if not config.agents:
        out("No agent is installed yet: add one with")
        out(f"  bigeye-agent register --host-id {host_id} --agent TYPE=IMAGE{where}")
    log.debug("registered", host_id=host_id, compose_file=str(host_dir / COMPOSE_FILE_NAME))
