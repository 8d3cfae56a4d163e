"""`bigeye-cloud-dev server`: the local cloud in the foreground until SIGTERM/SIGINT.

It runs the Temporal dev server (loopback only), its mTLS front (bridge gateway + loopback),
the `AgentHeartbeat` worker and the HTTP API with its web UI (`/ui/`), with every piece of state
under the state directory; a restart reuses the previous ports when they are free.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass
from pathlib import Path

import structlog
from aiohttp import web
from temporalio.client import Client
from temporalio.worker import Worker

from devcloud import db, hosts, keys, pki, state
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
    port_is_free,
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


@dataclass(frozen=True)
class Ports:
    api: int
    front: int
    gateway: str | None  # the Docker bridge gateway the front also listens on


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


def pick_shared_port(
    preferred: int | None, hosts: list[str], *, exclude: frozenset[int] = frozenset()
) -> int:
    """A port free on every one of `hosts`: `preferred` when it is, else a fresh one."""
    if preferred and preferred not in exclude and all(port_is_free(preferred, h) for h in hosts):
        return preferred
    for _ in range(50):
        port = pick_port(exclude=exclude)
        if all(port_is_free(port, h) for h in hosts):
            return port
    raise DevcloudError(f"no TCP port free on all of {', '.join(hosts)}")


def pick_ports(state_dir: Path, config: DevServerConfig, gateway: str | None) -> Ports:
    previous = state.read_server_state(state_dir)
    taken = frozenset({config.port, config.ui_port})
    api = pick_port(previous.api_port, exclude=taken)
    front_hosts = [LOOPBACK] + ([gateway] if gateway else [])
    front = pick_shared_port(previous.front_port, front_hosts, exclude=taken | {api})
    return Ports(api=api, front=front, gateway=gateway)


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
        ports = pick_ports(state_dir, config, await bridge_gateway())
        return await _serve_until_stopped(state_dir, config, ports, stop, ready_timeout)
    finally:
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.remove_signal_handler(sig)


def _server_state(config: DevServerConfig, ports: Ports, pid: int | None) -> state.ServerState:
    return state.ServerState(
        temporal_port=config.port,
        temporal_ui_port=config.ui_port,
        temporal_pid=pid,
        api_port=ports.api,
        front_port=ports.front,
    )


async def _serve_until_stopped(
    state_dir: Path,
    config: DevServerConfig,
    ports: Ports,
    stop: asyncio.Event,
    ready_timeout: float,
) -> int:
    temporal = TemporalDevServer(config)
    await temporal.start()
    state.write_server_state(state_dir, _server_state(config, ports, temporal.pid))
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

        async with contextlib.AsyncExitStack() as services:
            worker_task = await _start_services(services, state_dir, config, ports)
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
        await temporal.stop()
        for task in (stopped, exited):
            task.cancel()
        await asyncio.gather(stopped, exited, return_exceptions=True)
        state.write_server_state(state_dir, _server_state(config, ports, None))
        log.info("devcloud_stopped")


async def _start_services(
    services: contextlib.AsyncExitStack,
    state_dir: Path,
    config: DevServerConfig,
    ports: Ports,
) -> asyncio.Task[None]:
    """Store, front, worker and API; endpoints.json once all answer. Returns the worker task."""
    conn = db.connect(state_dir)
    services.callback(conn.close)
    keys.ensure_service_key(conn, state_dir)

    ca = pki.ensure_devcloud_ca(state_dir)
    front_ips = (LOOPBACK,) + ((ports.gateway,) if ports.gateway else ())
    cert_file, key_file = pki.write_front_certificate(state_dir, ca, FRONT_DNS_NAMES, front_ips)
    front = TemporalFront((LOOPBACK, config.port), cert_file, key_file, hosts.trusted_ca_pem(conn))
    services.push_async_callback(front.close)
    # The gateway first: it is what containers use; loopback is for local clients and tests.
    front_hosts = ([ports.gateway] if ports.gateway else []) + [LOOPBACK]
    await front.start(front_hosts, ports.front)
    if not any(a.startswith(f"{LOOPBACK}:") for a in front.addresses):
        raise DevcloudError(f"the mTLS front cannot listen on {LOOPBACK}:{ports.front}")

    client = await Client.connect(config.address, namespace=config.namespace)
    worker = control_plane_worker(client, conn)
    worker_task = asyncio.create_task(worker.run(), name="control-plane-worker")
    services.push_async_callback(_stop_worker, worker, worker_task)

    temporal_address = f"{SERVER_NAME}:{ports.front}"
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
    await web.TCPSite(runner, LOOPBACK, ports.api).start()

    endpoints = state.Endpoints(
        api_url=f"http://{LOOPBACK}:{ports.api}",
        ui_url=f"http://{LOOPBACK}:{ports.api}{UI_PATH}",
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
