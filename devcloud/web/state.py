"""What the UI's handlers share: the API's context, the sessions and the login throttle."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from devcloud.api import ApiContext
from devcloud.web.sessions import SESSION_COOKIE, Session, SessionStore
from devcloud.web.throttle import LoginThrottle


@dataclass
class UiState:
    api: ApiContext
    sessions: SessionStore = field(default_factory=SessionStore)
    throttle: LoginThrottle = field(default_factory=LoginThrottle)


UI_STATE = web.AppKey("devcloud_ui_state", UiState)


def ui_state(request: web.Request) -> UiState:
    return request.app[UI_STATE]


def current_session(request: web.Request) -> Session | None:
    return ui_state(request).sessions.get(request.cookies.get(SESSION_COOKIE))


def session_of(request: web.Request) -> Session:
    """The session of a request that the guard let through to a page."""
    session = current_session(request)
    if session is None:
        raise web.HTTPUnauthorized()
    return session
