"""The UI as an aiohttp sub-application at `/ui/` of the HTTP API's application."""

from __future__ import annotations

import structlog
from aiohttp import web

from devcloud import api
from devcloud.web import pages
from devcloud.web.guard import (
    Handler,
    loopback_names_only,
    security_headers,
    session_required,
)
from devcloud.web.negotiation import wants_json
from devcloud.web.state import UI_STATE, UiState, current_session
from devcloud.web.templates import BASE, render

log = structlog.get_logger("devcloud.web")

UI_PATH = f"{BASE}/"


@web.middleware
async def errors_as_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An API refusal (unknown run, run already finished, …) as a page or `{"message"}`."""
    try:
        return await handler(request)
    except api.ApiError as exc:
        status, message = exc.status, exc.message
    except web.HTTPException:
        raise
    except Exception as exc:
        log.exception("ui_error", method=request.method, path=request.path)
        status, message = 500, f"internal error: {type(exc).__name__}"
    if wants_json(request):
        return web.json_response({"message": message}, status=status)
    page = render("error.html", title=str(status), status=status, message=message,
                  session=current_session(request))  # fmt: skip
    return web.Response(text=page, status=status, content_type="text/html")


def build_ui(ctx: api.ApiContext) -> web.Application:
    ui = web.Application(
        middlewares=[security_headers, loopback_names_only, errors_as_pages, session_required]
    )
    ui[UI_STATE] = UiState(ctx)
    routes = [
        web.get("/", pages.index),
        web.get("/login", pages.login_page),
        web.post("/login", pages.login),
        web.post("/logout", pages.logout),
        web.get("/settings/agents/hosts", pages.hosts_page),
        web.get("/jobs", pages.jobs_page),
        web.post("/jobs/run", pages.run_now),
        web.get("/runs/{run_id}", pages.run_page),
        web.post("/runs/{run_id}/cancel", pages.cancel),
        web.get("/static/app.css", pages.stylesheet),
        web.get("/static/app.js", pages.script),
    ]
    ui.add_routes(routes)
    return ui


async def _to_ui(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther(UI_PATH)


def mount_ui(app: web.Application, ctx: api.ApiContext) -> None:
    """Serve the UI at `/ui/` of `app` (the HTTP API's application); `/` leads there."""
    app.add_subapp(BASE, build_ui(ctx))
    app.router.add_get("/", _to_ui)
