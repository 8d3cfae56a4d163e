"""`bigeye-agent install [AGENT] [--image I] [--config-dir D] [--yes]`: add a batch agent.

The agent goes into the agent set (`agents:` of bigeye_agent.yml, backed up and spliced like
`register` does), with the image and config directory the host already uses for it when it
has one, else Bigeye's published image and `agent_config/<agent>`. On a terminal it asks for
what the flags leave open (Enter keeps the default); elsewhere the flags are the answers. On a
registered host it then does what `sync` does.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bigeye_agent import checks, configfile, discovery, files
from bigeye_agent import messages as m
from bigeye_agent.messages import CliError
from bigeye_agent.sync import installed_set, sync
from orchestrator.contract import AGENT_TYPES
from orchestrator.hostconfig import agent_config_dir

Print = Callable[[str], None]
Ask = Callable[[str], str]


@dataclass(frozen=True)
class InstallOptions:
    host_dir: Path
    agent: str | None = None
    image: str | None = None
    config_dir: str | None = None
    yes: bool = False
    bigeye_url: str | None = None


def _valid_dir(value: str) -> str:
    path = PurePosixPath(value.strip())
    if (
        path.is_absolute()
        or ".." in path.parts
        or not path.parts
        or path.parts == ("agent_config",)
    ):
        raise CliError(m.INSTALL_BAD_CONFIG_DIR, value=value)
    return str(path)


def install(
    opts: InstallOptions,
    env: Mapping[str, str],
    out: Print = print,
    ask: Ask = input,
    prompt: Callable[[str], str] = getpass.getpass,
    interactive: bool | None = None,
) -> None:
    host_dir = opts.host_dir
    interactive = sys.stdin.isatty() if interactive is None else interactive
    asking = interactive and not opts.yes
    checks.check_host_dir(host_dir)
    old_text, _ = checks.read_host_config(host_dir)
    found = {agent.agent: agent for agent in installed_set(host_dir, old_text)}

    named = opts.agent
    if named is None:
        if not asking:
            raise CliError(m.INSTALL_WHICH)
        named = ask(f"agent to install ({', '.join(AGENT_TYPES)}): ").strip()
    agent = discovery.canonical(named)
    if agent not in AGENT_TYPES:
        raise CliError(m.INSTALL_UNKNOWN, agent=named)
    known = found.get(agent)
    image = opts.image or (known.image if known else None) or discovery.PUBLISHED_IMAGES[agent]
    if asking and opts.image is None:
        image = ask(f"image [{image}]: ").strip() or image
    if not image.strip() or any(ch.isspace() for ch in image.strip()):
        raise CliError(m.INSTALL_BAD_IMAGE, value=image)
    default_dir = (known.config_dir if known else None) or f"agent_config/{agent}"
    config_dir = opts.config_dir or default_dir
    if asking and opts.config_dir is None:
        config_dir = ask(f"config directory [{config_dir}]: ").strip() or config_dir
    config_dir = _valid_dir(config_dir)

    entry = {"image": image.strip()}
    if config_dir != f"agent_config/{agent}":
        entry["config_dir"] = config_dir
    new_text, done = configfile.write_edit(host_dir, old_text, {"agents": {agent: entry}})
    out(done)
    new_config = configfile.parse(new_text, host_dir)
    directory = host_dir / agent_config_dir(agent, new_config.agents[agent])
    owner = files.owner_of(host_dir)
    relative = directory.relative_to(host_dir)
    for part in [*reversed(relative.parents[:-1]), relative]:  # agent_config/, then its child
        if files.make_dir(host_dir / part, owner):
            out(f"created {host_dir / part}")
    out(f"{agent} is in the agent set: image {entry['image']}, config {config_dir}")

    if new_config.docker_compose_enabled and new_config.orchestrator.host_id:
        sync(host_dir, env, opts.bigeye_url, out, prompt, interactive)
    else:
        out("this host is not registered yet, so nothing was pushed: run bigeye-agent register")
