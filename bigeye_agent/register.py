"""`bigeye-agent register`: move a host to Docker Compose mode under the orchestrator.

The steps of design §7, in order: every check before anything is written; the mTLS files;
the registration; the non-destructive edit of bigeye_agent.yml (after a backup); the stack.
"""

from __future__ import annotations

import getpass
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bigeye_agent import access, api, checks, compose, configfile, discovery, files, keys, sync
from bigeye_agent import messages as m
from bigeye_agent.compose_file import COMPOSE_FILE_NAME, ORCHESTRATOR_SERVICE
from bigeye_agent.logs import get_logger
from bigeye_agent.messages import CliError
from orchestrator.hostconfig import (
    CONFIG_FILE_NAME,
    HostConfig,
    agent_config_dir,
    parse_host_config,
    read_yaml,
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
    added: dict[str, dict[str, str]]  # agents to add to the agent set: their entries
    installed: list[discovery.Found]
    existing_stack: tuple[Path, str] | None
    url: str
    client: api.BigeyeApi
    material: keys.Material | None  # None: generate (the account's first host)
    instance_id: str  # kept in bigeye_agent.yml; new on the first register


def run_checks(
    opts: RegisterOptions,
    env: Mapping[str, str],
    out: Print,
    prompt: Callable[[str], str] = getpass.getpass,
    interactive: bool | None = None,
) -> _Checked:
    """Step 1: Docker, arguments, the file, the key set, the API key — before any write."""
    old_text, config = checks.read_host_config(opts.host_dir)
    data = read_yaml(old_text, opts.host_dir / CONFIG_FILE_NAME) if old_text else {}
    checks.check_not_kubernetes(env, data if isinstance(data, dict) else {})
    version = checks.check_compose_v2(env)
    checks.check_docker_access(env)
    socket = checks.docker_socket(env)
    out(f"Docker Compose {version} found; docker ps works; the engine's socket is {socket}")
    checks.check_host_id(opts.host_id)
    overrides = checks.parse_agents(opts.agents)
    checks.check_host_dir(opts.host_dir)
    installed = find_installed(opts.host_dir, old_text, out)
    added = agents_to_add(installed, overrides)
    stack = compose.existing_stack(opts.host_dir, env)
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
    configfile.edited(
        opts.host_dir, old_text, _updates(opts, config, url, added, instance_id, stand_in)
    )
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
    return _Checked(old_text, config, added, installed, stack, url, client, material, instance_id)


def find_installed(host_dir: Path, text: str | None, out: Print) -> list[discovery.Found]:
    """The installed agent set, said line by line."""
    found = sync.installed_set(host_dir, text)
    if found:
        out("found installed agents:")
        for agent in found:
            out(f"  {agent.describe()}")
    return found


def agents_to_add(
    installed: Sequence[discovery.Found], overrides: Mapping[str, str]
) -> dict[str, dict[str, str]]:
    """Agent-set entries for found batch agents not in it yet; --agent TYPE=IMAGE wins."""
    added: dict[str, dict[str, str]] = {}
    for agent in installed:
        if agent.managed and not agent.in_agent_set and agent.image:
            entry = {"image": agent.image}
            if agent.config_dir:
                entry["config_dir"] = agent.config_dir
            added[agent.agent] = entry
    for name, image in overrides.items():
        added.setdefault(name, {})["image"] = image
    return added


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
    added: Mapping[str, Mapping[str, str]],
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
        updates["agents"] = {agent: dict(entry) for agent, entry in added.items()}
    return updates


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
    agent_set = [
        *checked.config.agents,
        *(a for a in checked.added if a not in checked.config.agents),
    ]
    installed = [a.agent for a in checked.installed if not a.managed]
    reg = checked.client.register_host(
        {
            "host_id": opts.host_id,
            "instance_id": instance_id,
            "managed_agents": agent_set,
            "installed_agents": installed,
            "client_cert_pem": material.client_cert.decode(),
            "client_ca_pem": material.ca_cert.decode(),
            "cli_version": VERSION,
        }
    )
    managed = ", ".join(agent_set) or "none yet"
    alone = f"; installed, running on their own: {', '.join(installed)}" if installed else ""
    out(f"registered host {opts.host_id} with {checked.url} (managed agents: {managed}{alone})")
    written = _write_server_ca(host_dir, reg.server_ca_pem)
    if written:
        out(f"wrote {written}")

    temporal = {"address": reg.address, "namespace": reg.namespace, "server_name": reg.server_name}
    updates = _updates(opts, checked.config, checked.url, checked.added, instance_id, temporal)
    new_text, done = configfile.write_edit(host_dir, checked.old_text, updates)
    out(done)
    config = parse_host_config(new_text, host_dir / CONFIG_FILE_NAME)
    owner = files.owner_of(host_dir)
    for agent in checked.added:
        directory = host_dir / agent_config_dir(agent, config.agents[agent])
        if directory.parent.is_dir() and files.make_dir(directory, owner):
            out(f"created {directory} for the {agent} agent's configuration files")

    rootless = checks.engine_is_rootless(env)
    identity = access.orchestrator_identity(host_dir, rootless)
    for line in access.grant_reads(host_dir, identity, _registry_password(config)):
        out(f"changed {line}")
    if checked.existing_stack is not None:
        compose.keep_existing_stack(host_dir, checked.existing_stack, out)
    out(f"wrote {compose.render(host_dir, config, env, reg.server_name, rootless)}")
    out(identity.describe(host_dir))
    compose.apply(host_dir, env, "compose up", out)
    out(f"started the stack: {' '.join(compose.compose_argv(host_dir, env, 'up', '-d'))}")
    _next_steps(host_dir, opts.host_id, config, out)


def _registry_password(config: HostConfig) -> tuple[str, ...]:
    registry = config.registry
    return (registry.password_file,) if registry and registry.password_file else ()


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
