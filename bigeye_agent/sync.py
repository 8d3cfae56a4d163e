"""`bigeye-agent sync`: apply an edited bigeye_agent.yml to the stack and to Bigeye.

Re-renders docker-compose.bigeye.yml, pushes the agent set (the host's managed agents), then
`docker compose up -d` so that changed settings apply. The orchestrator re-reads the agent set
for every job, so a changed agent needs no restart.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable, Mapping
from pathlib import Path

from bigeye_agent import api, checks, compose
from bigeye_agent import messages as m
from bigeye_agent.messages import CliError

Print = Callable[[str], None]


def sync(
    host_dir: Path,
    env: Mapping[str, str],
    bigeye_url: str | None = None,
    out: Print = print,
    prompt: Callable[[str], str] = getpass.getpass,
    interactive: bool | None = None,
) -> None:
    text, config = checks.read_host_config(host_dir)
    if text is None or not config.docker_compose_enabled:
        raise CliError(m.NOT_ENABLED)
    host_id = config.orchestrator.host_id
    if host_id is None:
        raise CliError(m.NOT_REGISTERED)
    url = api.base_url(bigeye_url, env, config.orchestrator.bigeye_url)
    client = api.BigeyeApi(url, api.api_key(env, prompt, interactive))

    out(f"wrote {compose.render(host_dir, config, env, config.orchestrator.temporal.server_name)}")
    agents = list(config.agents)
    client.put_agents(host_id, agents)
    out(f"managed agents of {host_id} at {url}: {', '.join(agents) or 'none'}")
    compose.run(host_dir, env, ["up", "-d"], "sync")
    out(f"applied: {' '.join(compose.compose_argv(host_dir, env, 'up', '-d'))}")
