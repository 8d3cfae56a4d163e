"""`/healthz`, `/readyz` and `/metrics` on BIGEYE_HEALTH_ADDR (and `/metrics` on
BIGEYE_METRICS_ADDR when set, for scraping from outside the container).

Ready means: the worker polls, Docker answered (through the proxy) at the last look, and the
last heartbeat reached Bigeye. The image's HEALTHCHECK asks `/readyz`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from orchestrator import metrics
from orchestrator.settings import SettingsError
from orchestrator.version import VERSION

SDK_SCRAPE_TIMEOUT = aiohttp.ClientTimeout(total=2)


@dataclass
class HealthState:
    polling: bool = False
    docker_version: str | None = None
    docker_ok: bool = False
    heartbeat_ok: bool = False
    sdk_metrics_url: str | None = None  # the Temporal SDK's own Prometheus page

    @property
    def ready(self) -> bool:
        return self.polling and self.docker_ok and self.heartbeat_ok

    def readiness(self) -> dict[str, object]:
        return {
            "ready": self.ready,
            "polling": self.polling,
            "docker": self.docker_version if self.docker_ok else None,
            "heartbeat_delivered": self.heartbeat_ok,
        }


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


async def metrics_page(state: HealthState) -> bytes:
    """Ours, then the Temporal SDK's (same text format, distinct names)."""
    metrics.POLLING.set(int(state.polling))
    metrics.READY.set(int(state.ready))
    page = metrics.render()
    if state.sdk_metrics_url:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
            async with (
                aiohttp.ClientSession(timeout=SDK_SCRAPE_TIMEOUT) as session,
                session.get(state.sdk_metrics_url) as response,
            ):
                if response.status == 200:
                    page += b"\n" + await response.read()
    return page


async def serve_health(
    addr: str, state: HealthState, metrics_addr: str | None = None
) -> list[web.AppRunner]:
    metrics.INFO.labels(VERSION, VERSION).set(1)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": VERSION})

    async def readyz(_: web.Request) -> web.Response:
        return web.json_response(state.readiness(), status=200 if state.ready else 503)

    async def metrics_view(_: web.Request) -> web.Response:
        body = await metrics_page(state)
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    runners = [await _start(app, addr, "BIGEYE_HEALTH_ADDR")]
    if metrics_addr:
        scrape = web.Application()
        scrape.router.add_get("/metrics", metrics_view)
        try:
            runners.append(await _start(scrape, metrics_addr, "BIGEYE_METRICS_ADDR"))
        except SettingsError:
            await stop_health(runners)
            raise
    return runners


async def _start(app: web.Application, addr: str, setting: str) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = split_addr(addr)
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise SettingsError(f"{setting} {addr}: cannot listen there ({why(exc)})") from None
    return runner


def why(exc: OSError) -> str:
    """The system's reason and the fix: aiohttp's own message repeats the address."""
    if isinstance(exc, socket.gaierror):  # its errno is negative: not for os.strerror
        return f"{exc.strerror}; set it to an address of this machine"
    if exc.errno == errno.EADDRINUSE:
        return f"{os.strerror(exc.errno)}; set it to a free port, or stop what holds this one"
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return f"{reason}; set it to an address of this machine"


def listening_at(runner: web.AppRunner) -> str:
    """Where a runner listens: the port the system chose when the setting said port 0."""
    host, port = runner.addresses[0][:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def stop_health(runners: list[web.AppRunner]) -> None:
    for runner in runners:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await runner.cleanup()
