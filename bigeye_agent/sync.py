"""`bigeye-agent sync`: apply an edited bigeye_agent.yml to the stack and to Bigeye.

Re-renders docker-compose.bigeye.yml, pushes the agent set (the managed agents, and the
installed ones that run on their own), then `docker compose up -d` so that changed settings
apply. The orchestrator re-reads the agent set for every job, so a changed agent needs no
restart. On a host that is not registered it only validates and reports the set.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bigeye_agent import api, checks, compose, discovery, keys
from orchestrator.hostconfig import CONFIG_FILE_NAME, read_yaml

Print = Callable[[str], None]


def installed_set(host_dir: Path, text: str | None) -> list[discovery.Found]:
    data = read_yaml(text, host_dir / CONFIG_FILE_NAME) if text else {}
    key_dir = host_dir / keys.AGENT_CONFIG_DIR
    dirs = [p.name for p in key_dir.iterdir() if p.is_dir()] if key_dir.is_dir() else []
    return discovery.discover(data if isinstance(data, dict) else {}, dirs)


def sync(
    host_dir: Path,
    env: Mapping[str, str],
    bigeye_url: str | None = None,
    out: Print = print,
    prompt: Callable[[str], str] = getpass.getpass,
    interactive: bool | None = None,
) -> dict[str, Any]:
    """What was applied (or found, on a host not registered), also for `sync --json`."""
    text, config = checks.read_host_config(host_dir)
    found = installed_set(host_dir, text)
    managed = list(config.agents)
    installed = [agent.agent for agent in found if not agent.managed]
    out(f"agent set: managed {', '.join(managed) or 'none'}; installed, running on their own: "
        f"{', '.join(installed) or 'none'}")  # fmt: skip
    for agent in found:
        if agent.managed and not agent.in_agent_set:
            out(f"  {agent.agent} is installed but not in the agent set ({agent.why}): add it "
                f"with bigeye-agent install {agent.agent}")  # fmt: skip
    host_id = config.orchestrator.host_id
    registered = text is not None and config.docker_compose_enabled and host_id is not None
    summary: dict[str, Any] = {
        "host_id": host_id,
        "managed_agents": managed,
        "installed_agents": installed,
        "not_in_agent_set": [a.agent for a in found if a.managed and not a.in_agent_set],
        "registered": registered,
        "pushed": False,
    }
    if not registered:
        out("this host is not registered, so nothing was pushed: run bigeye-agent register")
        return summary
    assert host_id is not None
    url = api.base_url(bigeye_url, env, config.orchestrator.bigeye_url)
    client = api.BigeyeApi(url, api.api_key(env, prompt, interactive))

    out(f"wrote {compose.render(host_dir, config, env, config.orchestrator.temporal.server_name)}")
    client.put_agents(host_id, managed, installed)
    out(f"pushed the agent set of {host_id} to {url}")
    compose.apply(host_dir, env, "sync", out)
    out(f"applied: {' '.join(compose.compose_argv(host_dir, env, 'up', '-d'))}")
    summary.update(pushed=True, bigeye_url=url)
    return summary
