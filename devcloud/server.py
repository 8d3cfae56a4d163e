"""`bigeye-cloud-dev server`: the local cloud in the foreground until SIGTERM/SIGINT.

It runs the Temporal dev server (loopback only), its mTLS front (bridge gateway + loopback),
the `AgentHeartbeat` worker and the HTTP API with its web UI (`/ui/`), with every piece of state
under the state directory; a restart reuses the previous ports when they are free.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
from pathlib import Path

import structlog
from aiohttp import web
from temporalio.client import Client
from temporalio.worker import Worker

from devcloud import db, hosts, keys, listeners, pki, state
from devcloud.api import ApiContext, build_app
from devcloud.control_plane import control_plane_worker
from devcloud.docker_bridge import bridge_gateway
from devcloud.errors import DevcloudError
from devcloud.front import TemporalFront
from devcloud.temporal_server import (
    LOOPBACK,
    DevServerConfig,
    TemporalDevServer,
    find_temporal_binary,
    pick_port,
    port_taken,
    stop_orphan,
    supports_flag,
)
from devcloud.web.app import UI_PATH, mount_ui
from orchestrator.contract import DEFAULT_NAMESPACE

log = structlog.get_logger("devcloud.server")

READY_TIMEOUT_SECONDS = 90.0
SERVER_NAME = "host.docker.internal"
FRONT_DNS_NAMES = (SERVER_NAME, "localhost")
API_SHUTDOWN_SECONDS = 3.0
WORKER_SHUTDOWN_SECONDS = 5.0
TEMPORAL_START_TRIES = 3


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
        previous = state.read_server_state(state_dir)
        bound = listeners.reserve(
            gateway=await bridge_gateway(),
            previous_api=previous.api_port,
            previous_front=previous.front_port,
            exclude=frozenset({config.port, config.ui_port}),
        )
        try:
            return await _serve_until_stopped(state_dir, config, bound, stop, ready_timeout)
        finally:
            bound.close()  # the services close what they took; this covers an early exit
    finally:
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.remove_signal_handler(sig)


def _server_state(
    config: DevServerConfig, bound: listeners.Listeners, pid: int | None
) -> state.ServerState:
    return state.ServerState(
        temporal_port=config.port,
        temporal_ui_port=config.ui_port,
        temporal_pid=pid,
        api_port=bound.api_port,
        front_port=bound.front_port,
    )


def _other_ports(config: DevServerConfig, exclude: frozenset[int]) -> DevServerConfig:
    port = pick_port(exclude=exclude)
    return dataclasses.replace(config, port=port, ui_port=pick_port(exclude=exclude | {port}))


async def _start_temporal(
    state_dir: Path,
    config: DevServerConfig,
    bound: listeners.Listeners,
    stopped: asyncio.Task[bool],
    ready_timeout: float,
) -> TemporalDevServer | None:
    """The dev server once it answers; None when a signal came first. Its ports can be taken
    between the choice and its own bind (it cannot be handed a socket): it is then started
    again on other ports."""
    held = frozenset({bound.api_port, bound.front_port})
    for attempt in range(1, TEMPORAL_START_TRIES + 1):
        temporal = TemporalDevServer(config)
        await temporal.start()
        state.write_server_state(state_dir, _server_state(config, bound, temporal.pid))
        ready = asyncio.create_task(temporal.wait_ready(ready_timeout))
        await asyncio.wait({ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            await asyncio.gather(ready, return_exceptions=True)
            await temporal.stop()
            return None
        try:
            ready.result()
        except DevcloudError:
            await temporal.stop()
            taken = port_taken(temporal.output_tail())
            if not taken or attempt == TEMPORAL_START_TRIES:
                raise
            log.warning(
                "temporal_port_taken", port=config.port, ui_port=config.ui_port, attempt=attempt
            )
            config = _other_ports(config, held | {config.port, config.ui_port})
            continue
        return temporal
    raise AssertionError("unreachable: the last attempt returns or raises")


async def _serve_until_stopped(
    state_dir: Path,
    config: DevServerConfig,
    bound: listeners.Listeners,
    stop: asyncio.Event,
    ready_timeout: float,
) -> int:
    stopped = asyncio.create_task(stop.wait())
    temporal: TemporalDevServer | None = None
    exited: asyncio.Task[int] | None = None
    try:
        temporal = await _start_temporal(state_dir, config, bound, stopped, ready_timeout)
        if temporal is None:
            log.info("devcloud_stopping", reason="signal before ready")
            return 0
        config = temporal.config
        exited = asyncio.create_task(temporal.wait())

        async with contextlib.AsyncExitStack() as services:
            worker_task = await _start_services(services, state_dir, config, bound)
            await asyncio.wait({stopped, exited, worker_task}, return_when=asyncio.FIRST_COMPLETED)
            if exited.done() and not stop.is_set():
                raise DevcloudError(
                    f"temporal dev server {temporal.describe_exit()} unexpectedly: "
                    f"{temporal.output_tail() or 'no output'}"
                )
            if worker_task.done() and not stop.is_set():
                worker_task.result()  # its error, if it failed
                raise DevcloudError("the AgentHeartbeat worker stopped unexpectedly")
            log.info("devcloud_stopping", reason="signal")
        return 0
    finally:
        state.remove_endpoints(state_dir)
        if temporal is not None:
            await temporal.stop()
        tasks = [task for task in (stopped, exited) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        state.write_server_state(state_dir, _server_state(config, bound, None))
        log.info("devcloud_stopped")


async def _start_services(
    services: contextlib.AsyncExitStack,
    state_dir: Path,
    config: DevServerConfig,
    bound: listeners.Listeners,
) -> asyncio.Task[None]:
    """Store, front, worker and API; endpoints.json once all answer. Returns the worker task."""
    conn = db.connect(state_dir)
    services.callback(conn.close)
    keys.ensure_service_key(conn, state_dir)

    ca = pki.ensure_devcloud_ca(state_dir)
    front_ips = (LOOPBACK,) + ((bound.gateway,) if bound.gateway else ())
    cert_file, key_file = pki.write_front_certificate(state_dir, ca, FRONT_DNS_NAMES, front_ips)
    front = TemporalFront((LOOPBACK, config.port), cert_file, key_file, hosts.trusted_ca_pem(conn))
    services.push_async_callback(front.close)
    # The gateway first: it is what containers use; loopback is for local clients and tests.
    await front.start(bound.front)

    client = await Client.connect(config.address, namespace=config.namespace)
    worker = control_plane_worker(client, conn)
    worker_task = asyncio.create_task(worker.run(), name="control-plane-worker")
    services.push_async_callback(_stop_worker, worker, worker_task)

    temporal_address = f"{SERVER_NAME}:{bound.front_port}"
    ctx = ApiContext(
        conn=conn,
        client=client,
        temporal_address=temporal_address,
        namespace=config.namespace,
        server_name=SERVER_NAME,
        server_ca_pem=ca.cert_pem,
        on_trusted_ca=front.trust,
    )
    app = build_app(ctx)
    mount_ui(app, ctx)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=API_SHUTDOWN_SECONDS)
    await runner.setup()
    services.push_async_callback(runner.cleanup)
    await web.SockSite(runner, bound.api).start()

    endpoints = state.Endpoints(
        api_url=f"http://{LOOPBACK}:{bound.api_port}",
        ui_url=f"http://{LOOPBACK}:{bound.api_port}{UI_PATH}",
        temporal_address=temporal_address,
        temporal_plain_address=config.address,
        namespace=config.namespace,
        temporal_server_name=SERVER_NAME,
        temporal_server_ca_file=str(state_dir / pki.DEVCLOUD_CA_CERT_FILE),
        temporal_front_addresses=list(front.addresses),
    )
    state.write_endpoints(state_dir, endpoints)
    services.callback(state.remove_endpoints, state_dir)
    log.info(
        "devcloud_ready",
        endpoints=str(state.endpoints_path(state_dir)),
        **endpoints.model_dump(mode="json"),
    )
    return worker_task


async def _stop_worker(worker: Worker, task: asyncio.Task[None]) -> None:
    if not task.done():
        with contextlib.suppress(Exception):
            await asyncio.wait_for(worker.shutdown(), WORKER_SHUTDOWN_SECONDS)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
