"""The UI's middlewares: response headers, loopback host names, the session and CSRF checks.

A page needs a session (made by logging in with an admin key); without one, HTML requests are
sent to the login page and JSON requests get 401, with no data either way. A POST must come
from this origin (Origin and Sec-Fetch-Site, when the browser sends them) and carry the
session's CSRF token; the cookie is also SameSite=Strict.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Final

import structlog
from aiohttp import web
from yarl import URL

from devcloud.web.negotiation import wants_json
from devcloud.web.state import current_session
from devcloud.web.templates import BASE

log = structlog.get_logger("devcloud.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CSRF_FIELD: Final = "csrf_token"
CSRF_HEADER: Final = "X-CSRF-Token"
LOCAL_HOST_NAMES: Final = frozenset({"127.0.0.1", "localhost", "::1"})

SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # not no-referrer: with it, browsers send `Origin: null` on this origin's own form posts
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Vary": "Accept, Cookie",
}

# Handlers that answer without a session: the login page and the static assets.
PUBLIC: set[Handler] = set()


def public(handler: Handler) -> Handler:
    PUBLIC.add(handler)
    return handler


def refuse(request: web.Request, status: int, message: str) -> web.Response:
    if wants_json(request):
        return web.json_response({"message": message}, status=status)
    return web.Response(status=status, text=message)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(SECURITY_HEADERS)
        raise
    response.headers.update(SECURITY_HEADERS)
    return response


@web.middleware
async def loopback_names_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Another host name pointing at 127.0.0.1 (DNS rebinding) is not this origin."""
    try:
        name = URL(f"http://{request.host}").host
    except ValueError:
        name = None
    if name not in LOCAL_HOST_NAMES:
        return refuse(request, 421, "this UI answers on 127.0.0.1 or localhost only")
    return await handler(request)


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        return False
    return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")


async def _csrf_token(request: web.Request) -> str:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        value = (await request.post()).get(CSRF_FIELD)
        return value if isinstance(value, str) else ""
    return ""


@web.middleware
async def session_required(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "POST" and not _same_origin(request):
        log.warning("ui_cross_site_post_refused", path=request.path,
                    origin=request.headers.get("Origin"))  # fmt: skip
        return refuse(request, 403, "cross-site request refused")
    if request.match_info.handler in PUBLIC:
        return await handler(request)
    session = current_session(request)
    if session is None:
        if wants_json(request):
            return web.json_response({"message": f"log in first ({BASE}/login)"}, status=401)
        raise web.HTTPSeeOther(f"{BASE}/login")
    if request.method == "POST":
        token = await _csrf_token(request)
        if not hmac.compare_digest(token.encode(), session.csrf_token.encode()):
            log.warning("ui_csrf_refused", path=request.path)
            return refuse(request, 403, "missing or wrong CSRF token: reload the page")
    return await handler(request)
