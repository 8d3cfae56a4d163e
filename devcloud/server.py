"""`bigeye-cloud-dev server`: the local cloud in the foreground until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import structlog

from devcloud import state
from devcloud.errors import DevcloudError
from devcloud.temporal_server import (
    DevServerConfig,
    TemporalDevServer,
    find_temporal_binary,
    pick_port,
    stop_orphan,
    supports_flag,
)
from orchestrator.contract import DEFAULT_NAMESPACE

log = structlog.get_logger("devcloud.server")

READY_TIMEOUT_SECONDS = 90.0


def _install_stop_handlers(stop: asyncio.Event) -> list[signal.Signals]:
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
        installed.append(sig)
    return installed


def server_config(state_dir: Path, namespace: str = DEFAULT_NAMESPACE) -> DevServerConfig:
    """The dev server's command line, reusing the previous run's ports when they are free."""
    binary = find_temporal_binary()
    previous = state.read_server_state(state_dir)
    port = pick_port(previous.temporal_port)
    ui_port = pick_port(previous.temporal_ui_port, exclude=frozenset({port}))
    return DevServerConfig(
        binary=binary,
        db_file=state_dir / state.TEMPORAL_DB_FILE,
        port=port,
        ui_port=ui_port,
        namespace=namespace,
        headless=supports_flag(binary, "--headless"),
    )


def serve(state_dir: Path, *, ready_timeout: float = READY_TIMEOUT_SECONDS) -> int:
    """Run until stopped by a signal (0) or until the Temporal server dies (1)."""
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    with state.server_lock(state_dir):
        state.remove_endpoints(state_dir)  # stale: a previous server was killed
        stop_orphan(
            state.read_server_state(state_dir).temporal_pid,
            state_dir / state.TEMPORAL_DB_FILE,
        )
        config = server_config(state_dir)
        return asyncio.run(_serve(state_dir, config, ready_timeout))


async def _serve(state_dir: Path, config: DevServerConfig, ready_timeout: float) -> int:
    stop = asyncio.Event()
    signals = _install_stop_handlers(stop)
    try:
        return await _serve_until_stopped(state_dir, config, stop, ready_timeout)
    finally:
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.remove_signal_handler(sig)


async def _serve_until_stopped(
    state_dir: Path, config: DevServerConfig, stop: asyncio.Event, ready_timeout: float
) -> int:
    temporal = TemporalDevServer(config)
    await temporal.start()
    state.write_server_state(
        state_dir,
        state.ServerState(
            temporal_port=config.port, temporal_ui_port=config.ui_port, temporal_pid=temporal.pid
        ),
    )
    stopped = asyncio.create_task(stop.wait())
    exited = asyncio.create_task(temporal.wait())
    try:
        ready = asyncio.create_task(temporal.wait_ready(ready_timeout))
        await asyncio.wait({ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            await asyncio.gather(ready, return_exceptions=True)
            log.info("devcloud_stopping", reason="signal before ready")
            return 0
        ready.result()  # DevcloudError when the server died or never answered

        endpoints = state.Endpoints(
            api_url=None,  # the HTTP API comes with a later part
            temporal_address=config.address,  # later: the mTLS front
            temporal_plain_address=config.address,
            namespace=config.namespace,
        )
        state.write_endpoints(state_dir, endpoints)
        log.info(
            "devcloud_ready",
            endpoints=str(state.endpoints_path(state_dir)),
            **endpoints.model_dump(mode="json"),
        )

        await asyncio.wait({stopped, exited}, return_when=asyncio.FIRST_COMPLETED)
        if exited.done() and not stop.is_set():
            raise DevcloudError(
                f"temporal dev server {temporal.describe_exit()} unexpectedly: "
                f"{temporal.output_tail() or 'no output'}"
            )
        log.info("devcloud_stopping", reason="signal")
        return 0
    finally:
        state.remove_endpoints(state_dir)
        await temporal.stop()
        for task in (stopped, exited):
            task.cancel()
        await asyncio.gather(stopped, exited, return_exceptions=True)
        state.write_server_state(
            state_dir,
            state.ServerState(temporal_port=config.port, temporal_ui_port=config.ui_port),
        )
        log.info("devcloud_stopped")
