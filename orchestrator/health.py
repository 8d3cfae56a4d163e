"""`/healthz`, `/readyz` and `/metrics` on BIGEYE_HEALTH_ADDR (never published outside)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from orchestrator.version import VERSION


@dataclass
class HealthState:
    polling: bool = False
    docker_version: str | None = None


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


async def serve_health(addr: str, state: HealthState) -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": VERSION})

    async def readyz(_: web.Request) -> web.Response:
        ready = state.polling and state.docker_version is not None
        body = {"ready": ready, "polling": state.polling, "docker": state.docker_version}
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(_: web.Request) -> web.Response:
        lines = [
            "# TYPE bigeye_orchestrator_polling gauge",
            f"bigeye_orchestrator_polling {int(state.polling)}",
            "# TYPE bigeye_orchestrator_info gauge",
            f'bigeye_orchestrator_info{{version="{VERSION}"}} 1',
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = split_addr(addr)
    await web.TCPSite(runner, host, port).start()
    return runner
