"""The UI's handlers: login and logout, Hosts, Jobs ("Run now"), Run ("Cancel").

Each page reads its data with the functions behind the HTTP API (`devcloud.api`), which is
what the CLI's `--json` prints, and answers that data as JSON when asked.
"""

from __future__ import annotations

from typing import Any, Final

import structlog
from aiohttp import web

from devcloud import api, keys
from devcloud.web import assets, page_models
from devcloud.web.guard import public
from devcloud.web.negotiation import wants_json
from devcloud.web.page_models import FormState
from devcloud.web.params_form import (
    FormRejected,
    parameters_from_form,
    submitted_values,
    validate,
)
from devcloud.web.sessions import SESSION_COOKIE
from devcloud.web.state import current_session, session_of, ui_state
from devcloud.web.templates import BASE, render
from orchestrator.contract import AGENT_TYPES

log = structlog.get_logger("devcloud.web")

HOSTS_PATH: Final = f"{BASE}/settings/agents/hosts"
LOGIN_PATH: Final = f"{BASE}/login"
JOBS_PATH: Final = f"{BASE}/jobs"
HOSTS_REFRESH_MS: Final = 3000
JOBS_REFRESH_MS: Final = 3000
RUN_REFRESH_MS: Final = 1500
# One message for an unknown key and a member key: the form tells nothing about a key.
LOGIN_REFUSED: Final = "Login refused: that is not an admin Personal API Key of this cloud."


def _page(name: str, status: int = 200, **context: Any) -> web.Response:
    return web.Response(text=render(name, **context), status=status, content_type="text/html")


def see_other(location: str) -> web.Response:
    """303 as a response (not raised), so that cookies can ride on it."""
    return web.Response(status=303, headers={"Location": location})


def _client(request: web.Request) -> str:
    return request.remote or "unknown"


# ---- login and logout ----------------------------------------------------------------------


@public
async def login_page(request: web.Request) -> web.StreamResponse:
    if current_session(request) is not None:
        raise web.HTTPSeeOther(HOSTS_PATH)
    return _page("login.html", title="Log in", error=None)


def _login_refused(request: web.Request, status: int, message: str) -> web.Response:
    if wants_json(request):
        return web.json_response({"message": message}, status=status)
    return _page("login.html", status=status, title="Log in", error=message)


@public
async def login(request: web.Request) -> web.StreamResponse:
    state = ui_state(request)
    client = _client(request)
    wait = state.throttle.retry_after(client)
    if wait > 0:
        log.warning("ui_login_throttled", client=client)
        throttled = _login_refused(
            request, 429, f"Too many failed logins: try again in {int(wait) + 1} s."
        )
        throttled.headers["Retry-After"] = str(int(wait) + 1)
        return throttled
    form = await request.post()
    key = form.get("key")
    role = keys.role_of(state.api.conn, key.strip()) if isinstance(key, str) and key else None
    if role != "admin":
        state.throttle.failed(client)
        log.warning("ui_login_refused", client=client)
        return _login_refused(request, 401, LOGIN_REFUSED)
    state.throttle.succeeded(client)
    state.sessions.delete(request.cookies.get(SESSION_COOKIE))  # a fresh token at every login
    token, session = state.sessions.create(role)
    log.info("ui_login", client=client)
    response: web.Response
    if wants_json(request):
        response = web.json_response({"role": role, "csrf_token": session.csrf_token})
    else:
        response = see_other(HOSTS_PATH)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        path=BASE,
        max_age=int(state.sessions.lifetime_seconds),
        httponly=True,
        samesite="Strict",
        # no `secure`: the UI is plain HTTP on loopback, where a Secure cookie is not kept
    )
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    ui_state(request).sessions.delete(request.cookies.get(SESSION_COOKIE))
    log.info("ui_logout", client=_client(request))
    response: web.Response = (
        web.json_response({"message": "logged out"})
        if wants_json(request)
        else see_other(LOGIN_PATH)
    )
    response.del_cookie(SESSION_COOKIE, path=BASE)
    return response


async def index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther(HOSTS_PATH)


# ---- Settings → Agents → Hosts ------------------------------------------------------------


async def hosts_page(request: web.Request) -> web.StreamResponse:
    listing = api.hosts_listing(ui_state(request).api)
    if wants_json(request):
        return web.json_response(listing)
    return _page(
        "hosts.html",
        title="Hosts",
        nav="hosts",
        session=session_of(request),
        refresh_ms=HOSTS_REFRESH_MS,
        refresh_url=HOSTS_PATH,
        hosts=listing,
        health_labels=page_models.HEALTH_LABELS,
    )


# ---- Jobs ---------------------------------------------------------------------------------


async def jobs_data(request: web.Request) -> dict[str, Any]:
    """`{"jobs": <jobs --json>, "runs": <runs --json>}`."""
    ctx = ui_state(request).api
    return {
        "jobs": api.jobs_listing(ctx),
        "runs": [run.view() for run in await api.current_runs(ctx)],
    }


async def _jobs_html(
    request: web.Request,
    *,
    status: int = 200,
    refused: FormState | None = None,
    page_error: str | None = None,
) -> web.Response:
    data = await jobs_data(request)
    ctx = ui_state(request).api
    groups = page_models.jobs_page(api.hosts_listing(ctx), data["jobs"], data["runs"], refused)
    return _page(
        "jobs.html",
        status=status,
        title="Jobs",
        nav="jobs",
        session=session_of(request),
        csrf=session_of(request).csrf_token,
        refresh_ms=JOBS_REFRESH_MS,
        refresh_url=JOBS_PATH,
        forms_on_page=True,
        groups=groups,
        page_error=page_error,
        health_labels=page_models.HEALTH_LABELS,
    )


async def jobs_page(request: web.Request) -> web.StreamResponse:
    if wants_json(request):
        return web.json_response(await jobs_data(request))
    return await _jobs_html(request)


def _text(form: Any, name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""


async def run_now(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    host_id, agent = _text(form, "host_id"), _text(form, "agent")
    job_id = _text(form, "job_id") or f"{host_id}-{agent}"
    new = _text(form, "new") == "1"  # a new job's form: its job id is an input
    key = f"{host_id}/{agent}/{'' if new else job_id}"
    try:
        parameters = parameters_from_form(agent, fields)
        validate(job_id, agent, parameters)
        run = await api.start_job_run(
            ui_state(request).api,
            api.RunRequest(host_id=host_id, agent=agent, job_id=job_id, parameters=parameters),
        )
    except FormRejected as exc:
        status, message = 400, str(exc)
    except api.ApiError as exc:
        status, message = exc.status, exc.message
    else:
        log.info("ui_run_started", host_id=host_id, agent=agent, job_id=run.job_id,
                 run_id=run.run_id)  # fmt: skip
        if wants_json(request):
            return web.json_response(run.view(), status=201)
        raise web.HTTPSeeOther(f"{BASE}/runs/{run.run_id}")
    log.info("ui_run_refused", host_id=host_id, agent=agent, job_id=job_id, reason=message)
    if wants_json(request):
        return web.json_response({"message": message}, status=status)
    known_agent = agent in AGENT_TYPES
    typed = submitted_values(agent, fields) if known_agent else {}
    refused = FormState(key, job_id, typed, message)
    # a form of an unknown agent is on no page: the error goes above them all
    page_error = None if known_agent else message
    return await _jobs_html(request, status=status, refused=refused, page_error=page_error)


# ---- Run ----------------------------------------------------------------------------------


async def run_page(request: web.Request) -> web.StreamResponse:
    ctx = ui_state(request).api
    run = (await api.current_run(ctx, api.find_run(ctx, request.match_info["run_id"]))).view()
    if wants_json(request):
        return web.json_response(run)
    active = run["status"] in page_models.ACTIVE_STATUSES
    notice = "Cancel requested." if request.query.get("cancel") == "requested" else None
    return _page(
        "run.html",
        title=f"Run {run['run_id']}",
        nav="jobs",
        session=session_of(request),
        csrf=session_of(request).csrf_token,
        refresh_ms=RUN_REFRESH_MS if active else 0,
        refresh_url=request.path_qs,
        run=run,
        active=active,
        notice=notice,
        result_rows=page_models.result_rows(run),
        log_tail=list((run.get("result") or {}).get("log_tail") or []),
    )


async def cancel(request: web.Request) -> web.StreamResponse:
    run = await api.cancel_job_run(ui_state(request).api, request.match_info["run_id"])
    log.info("ui_cancel_requested", run_id=run.run_id, job_id=run.job_id)
    if wants_json(request):
        return web.json_response(run.view(), status=202)
    raise web.HTTPSeeOther(f"{BASE}/runs/{run.run_id}?cancel=requested")


# ---- assets -------------------------------------------------------------------------------


@public
async def stylesheet(request: web.Request) -> web.StreamResponse:
    return web.Response(text=assets.STYLESHEET, content_type="text/css")


@public
async def script(request: web.Request) -> web.StreamResponse:
    return web.Response(text=assets.SCRIPT, content_type="text/javascript")
