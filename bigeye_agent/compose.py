"""`bigeye-agent compose …`: `docker compose` for the host's stack file and project.

Also renders `docker-compose.bigeye.yml` for `register` and `sync` (compose_file does the
rendering; this module picks its inputs from the host).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import yaml

from bigeye_agent import checks, compose_file, files
from bigeye_agent import messages as m
from bigeye_agent.compose_file import COMPOSE_FILE_NAME, ORCHESTRATOR_SERVICE, PROXY_SERVICE
from bigeye_agent.logs import get_logger
from bigeye_agent.messages import CliError
from orchestrator.hostconfig import HostConfig
from orchestrator.version import VERSION

log = get_logger(__name__)

Print = Callable[[str], None]


def project(env: Mapping[str, str]) -> str:
    return compose_file.project_name(dict(env))


def compose_argv(host_dir: Path, env: Mapping[str, str], *args: str) -> list[str]:
    return ["docker", "compose", "-f", str(host_dir / COMPOSE_FILE_NAME), "-p", project(env), *args]


def run(
    host_dir: Path, env: Mapping[str, str], args: Sequence[str], retry: str, *, check: bool = True
) -> int:
    """`docker compose … ARGS` with the terminal's stdout/stderr; fails unless it exits 0."""
    argv = compose_argv(host_dir, env, *args)
    log.debug("running", argv=argv)
    try:
        code = subprocess.run(argv, env=dict(env), check=False).returncode
    except FileNotFoundError:
        raise CliError(m.DOCKER_MISSING) from None
    if code != 0 and check:
        raise CliError(m.COMPOSE_FAILED, command=" ".join(args), code=code, retry=retry)
    return code


def require_enabled(host_dir: Path) -> HostConfig:
    """The host's settings, when it runs in Docker Compose mode (else NOT_ENABLED)."""
    text, config = checks.read_host_config(host_dir)
    if text is None or not config.docker_compose_enabled:
        raise CliError(m.NOT_ENABLED)
    if not (host_dir / COMPOSE_FILE_NAME).is_file():
        raise CliError(m.NOT_ENABLED)
    return config


def status(host_dir: Path, env: Mapping[str, str]) -> None:
    require_enabled(host_dir)
    run(host_dir, env, ["ps"], "compose status")


def logs(host_dir: Path, env: Mapping[str, str], service: str | None, follow: bool) -> None:
    require_enabled(host_dir)
    args = ["logs", *(["-f"] if follow else []), *([service] if service else [])]
    run(host_dir, env, args, "compose logs")


def up(host_dir: Path, env: Mapping[str, str]) -> None:
    require_enabled(host_dir)
    run(host_dir, env, ["up", "-d"], "compose up")


def down(host_dir: Path, env: Mapping[str, str]) -> None:
    require_enabled(host_dir)
    run(host_dir, env, ["down"], "compose down")


def images(host_dir: Path) -> list[str]:
    """The image of every service in the stack file."""
    path = host_dir / COMPOSE_FILE_NAME
    try:
        data = yaml.safe_load(files.read_bytes(path)) or {}
    except yaml.YAMLError as exc:
        detail = str(exc).splitlines()[0]
        raise CliError(m.EXISTING_COMPOSE_INVALID, path=path, detail=detail) from None
    services = data.get("services") if isinstance(data, dict) else None
    found = [s.get("image") for s in (services or {}).values() if isinstance(s, dict)]
    return [image for image in found if isinstance(image, str) and image]


def upgrade(host_dir: Path, env: Mapping[str, str], out: Print = print) -> None:
    """Pull, then recreate the orchestrator and the proxy; job containers keep running."""
    require_enabled(host_dir)
    if run(host_dir, env, ["pull"], "compose upgrade", check=False) != 0:
        for image in images(host_dir):
            if checks.docker(["image", "inspect", image], env).returncode != 0:
                raise CliError(m.PULL_FAILED_MISSING, image=image)
        out(m.PULL_FAILED_LOCAL)
    recreate = ["up", "-d", "--force-recreate", ORCHESTRATOR_SERVICE, PROXY_SERVICE]
    run(host_dir, env, recreate, "compose upgrade")


def render(
    host_dir: Path, config: HostConfig, env: Mapping[str, str], server_name: str | None
) -> Path:
    """Write docker-compose.bigeye.yml for this host (atomically, owned by the dir's owner)."""
    host_id = config.orchestrator.host_id
    if host_id is None:
        raise CliError(m.NOT_REGISTERED)
    try:
        carried, carried_top = compose_file.existing_services(host_dir)
    except yaml.YAMLError as exc:
        detail = str(exc).splitlines()[0]
        name = next(
            (n for n in compose_file.EXISTING_COMPOSE_FILES if (host_dir / n).is_file()), "?"
        )
        raise CliError(m.EXISTING_COMPOSE_INVALID, path=host_dir / name, detail=detail) from None
    uid, gid = files.owner_of(host_dir)
    inputs = compose_file.ComposeInputs(
        host_dir=host_dir,
        host_id=host_id,
        project=project(env),
        orchestrator_image=env.get("BIGEYE_ORCHESTRATOR_IMAGE")
        or config.orchestrator.image
        or f"{compose_file.ORCHESTRATOR_REPOSITORY}:{VERSION}",
        proxy_image=env.get("BIGEYE_PROXY_IMAGE") or f"{compose_file.PROXY_REPOSITORY}:{VERSION}",
        uid=uid,
        gid=gid,
        socket_gid=compose_file.socket_gid(),
        tls=True,
        tls_server_name=server_name,
        carried_services=carried,
        carried_top_level=carried_top,
    )
    path = host_dir / COMPOSE_FILE_NAME
    files.atomic_write(path, compose_file.render(inputs).encode(), 0o644, (uid, gid))
    return path
