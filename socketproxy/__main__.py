"""`python -m socketproxy` runs the proxy; `python -m socketproxy healthcheck` pings it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import urllib.request

import structlog

from socketproxy import logs
from socketproxy.config import DEFAULT_LISTEN, ConfigError, ProxyConfig, from_env, parse_listen
from socketproxy.server import start

log = structlog.get_logger("bigeye.socketproxy")


async def serve(config: ProxyConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if config.allow_loopback_registry:
        log.warning(
            "images on registries on the engine host's loopback are allowed "
            "(BIGEYE_PROXY_ALLOW_LOOPBACK_REGISTRY=1)"
        )
    try:
        runner, proxy, port = await start(config)
    except OSError as exc:
        print(
            f"docker-socket-proxy: cannot listen on {config.listen_host}:"
            f"{config.listen_port}: {exc}",
            file=sys.stderr,
        )
        return 1
    log.info(
        "listening",
        address=f"{config.listen_host}:{port}",
        socket=config.socket_path,
        host_id=config.host_id,
        host_dir=config.host_dir,
        agent_config=config.agent_config,
        max_connections=config.max_connections,
        allow_loopback_registry=config.allow_loopback_registry,
    )
    await stop.wait()
    log.info("stopping")
    await runner.cleanup()
    await proxy.close()
    return 0


def healthcheck() -> int:
    """Exit 0 when the proxy answers /_ping (and so does the engine behind it)."""
    try:
        _, port = parse_listen(os.environ.get("BIGEYE_PROXY_LISTEN") or DEFAULT_LISTEN)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_ping", timeout=5) as response:
            return 0 if response.status == 200 else 1
    except (OSError, ConfigError) as exc:
        print(f"docker-socket-proxy: unhealthy: {exc}", file=sys.stderr)
        return 1


def main() -> int:
    if sys.argv[1:] == ["healthcheck"]:
        return healthcheck()
    if sys.argv[1:]:
        print("usage: python -m socketproxy [healthcheck]", file=sys.stderr)
        return 2
    try:
        config = from_env(os.environ)
    except ConfigError as exc:
        print(f"docker-socket-proxy: {exc}", file=sys.stderr)
        return 2
    logs.configure()
    if not os.path.exists(config.socket_path):
        log.warning("the Docker socket does not exist yet", socket=config.socket_path)
    return asyncio.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())
