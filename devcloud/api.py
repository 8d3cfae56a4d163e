"""The registration and jobs HTTP API (docs/devcloud-api.md), on aiohttp.web."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError
from temporalio.client import Client

from devcloud import hosts, jobs, keys, pki, runs
from devcloud.health import format_time

log = structlog.get_logger("devcloud.api")

PREFIX = "/api/v1"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class ApiContext:
    conn: sqlite3.Connection
    client: Client  # the plain loopback frontend
    temporal_address: str  # as advertised to hosts (the mTLS front)
    namespace: str
    server_name: str
    server_ca_pem: str
    on_trusted_ca: Callable[[str], None]  # the account CA became trusted


CONTEXT = web.AppKey("devcloud_api_context", ApiContext)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _message(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


# ---- middlewares ---------------------------------------------------------------------------


def _is_api(request: web.Request) -> bool:
    # The web UI (devcloud.web) shares this application: its pages have their own login.
    return request.path.startswith(f"{PREFIX}/")


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error is `{"message": "<one line>"}`."""
    if not _is_api(request):
        return await handler(request)
    try:
        return await handler(request)
    except ApiError as exc:
        return _message(exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _message(exc.status, exc.reason)
    except Exception as exc:
        log.exception("api_error", method=request.method, path=request.path)
        return _message(500, f"internal error: {type(exc).__name__}: {exc}")


def _role(request: web.Request) -> keys.Role | None:
    key = keys.parse_authorization(request.headers.get("Authorization"))
    return keys.role_of(request.app[CONTEXT].conn, key) if key else None


@web.middleware
async def api_key_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _is_api(request) and _role(request) is None:
        raise ApiError(401, "missing or unknown API key (Authorization: apikey <key>)")
    return await handler(request)


def _require_admin(request: web.Request) -> None:
    if _role(request) != "admin":
        raise ApiError(403, "an admin API key is required")


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the request body must be JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def _invalid(exc: ValidationError) -> ApiError:
    parts = []
    for item in exc.errors():
        where = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return ApiError(400, "; ".join(parts))


# ---- keys and account ----------------------------------------------------------------------


async def verify_key(request: web.Request) -> web.StreamResponse:
    return web.Response(status=204)


async def who_am_i(request: web.Request) -> web.StreamResponse:
    return web.json_response({"role": _role(request)})


async def account(request: web.Request) -> web.StreamResponse:
    return web.json_response(hosts.account_summary(request.app[CONTEXT].conn))


# ---- hosts ---------------------------------------------------------------------------------


async def register_host(request: web.Request) -> web.StreamResponse:
    _require_admin(request)
    ctx = request.app[CONTEXT]
    try:
        body = hosts.RegisterHost.model_validate(await _json_object(request))
    except ValidationError as exc:
        raise _invalid(exc) from None
    try:
        host, trust = hosts.register_host(ctx.conn, body)
    except hosts.HostAlreadyRegistered:
        raise ApiError(409, "Host is already registered") from None
    except pki.CertificateRejected as exc:
        raise ApiError(400, str(exc)) from None
    if trust.newly_trusted:
        ctx.on_trusted_ca(trust.ca_pem)
    log.info(
        "host_registered",
        host_id=host.host_id,
        instance_id=host.instance_id,
        managed_agents=host.managed_agents,
        installed_agents=host.installed_agents,
        client_cert=trust.client_cert_fingerprint,
        account_ca_newly_trusted=trust.newly_trusted,
    )
    return web.json_response(
        {
            "host_id": host.host_id,
            "temporal": {
                "address": ctx.temporal_address,
                "namespace": ctx.namespace,
                "server_name": ctx.server_name,
            },
            "server_ca_pem": ctx.server_ca_pem,
        }
    )


def hosts_listing(ctx: ApiContext) -> list[dict[str, Any]]:
    """`GET hosts`, `hosts --json` and the web UI's Hosts tab."""
    now = datetime.now(UTC)
    return [host.listing(now) for host in hosts.list_hosts(ctx.conn)]


async def list_hosts(request: web.Request) -> web.StreamResponse:
    return web.json_response(hosts_listing(request.app[CONTEXT]))


async def set_agents(request: web.Request) -> web.StreamResponse:
    _require_admin(request)
    try:
        body = hosts.ManagedAgents.model_validate(await _json_object(request))
    except ValidationError as exc:
        raise _invalid(exc) from None
    host_id = request.match_info["host_id"]
    try:
        host = hosts.set_managed_agents(
            request.app[CONTEXT].conn,
            host_id,
            list(body.managed_agents),
            None if body.installed_agents is None else list(body.installed_agents),
        )
    except hosts.UnknownHost:
        raise ApiError(404, f"unknown host {host_id}") from None
    log.info("host_agents_set", host_id=host_id, managed_agents=host.managed_agents,
             installed_agents=host.installed_agents)  # fmt: skip
    return web.json_response(host.listing())


# ---- jobs and runs -------------------------------------------------------------------------


def jobs_listing(ctx: ApiContext) -> list[dict[str, Any]]:
    """`GET jobs`, `jobs --json` and the web UI's Jobs page."""
    return [job.listing() for job in jobs.list_jobs(ctx.conn)]


async def list_jobs(request: web.Request) -> web.StreamResponse:
    return web.json_response(jobs_listing(request.app[CONTEXT]))


class RunRequest(BaseModel):
    """`POST /api/v1/agent-orchestrator/runs` (unknown keys are ignored)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    host_id: str
    agent: str
    job_id: str | None = None
    parameters: dict[str, Any] | None = None
    timeout_seconds: int | None = None
    queue_wait_seconds: int | None = None


async def create_run(request: web.Request) -> web.StreamResponse:
    _require_admin(request)
    try:
        body = RunRequest.model_validate(await _json_object(request))
    except ValidationError as exc:
        raise _invalid(exc) from None
    run = await start_job_run(request.app[CONTEXT], body)
    return web.json_response(run.view(), status=201)


async def start_job_run(ctx: ApiContext, body: RunRequest) -> jobs.Run:
    """Check host and agent, save the job, start its run; ApiError when refused."""
    host = hosts.get_host(ctx.conn, body.host_id)
    if host is None:
        raise ApiError(400, f"unknown host {body.host_id}")
    if body.agent not in host.managed_agents:
        managed = ", ".join(host.managed_agents) or "none"
        raise ApiError(400, f"host {host.host_id} does not manage agent {body.agent} "
                            f"(managed: {managed})")  # fmt: skip
    if body.queue_wait_seconds is not None and body.queue_wait_seconds < 0:
        raise ApiError(400, "queue_wait_seconds must be at least 0")
    job_id = body.job_id or f"{host.host_id}-{body.agent}"
    try:
        job = jobs.save_job(ctx.conn, job_id, host.host_id, body.agent, body.parameters)
    except jobs.JobConflict as exc:
        raise ApiError(400, str(exc)) from None
    run_id = runs.new_run_id()
    try:
        handle = await runs.start_run(
            ctx.client,
            host_id=host.host_id,
            agent=job.agent,
            job_id=job.job_id,
            run_id=run_id,
            parameters=job.parameters,
            timeout_seconds=body.timeout_seconds,
            queue_wait_seconds=(
                runs.QUEUE_WAIT_SECONDS
                if body.queue_wait_seconds is None
                else body.queue_wait_seconds
            ),
        )
    except runs.RunAlreadyActive as exc:
        raise ApiError(409, str(exc)) from None
    run = jobs.Run(
        run_id=run_id,
        job_id=job.job_id,
        host_id=host.host_id,
        agent=job.agent,
        workflow_id=handle.id,
        temporal_run_id=handle.first_execution_run_id or handle.result_run_id,
        namespace=ctx.client.namespace,
        requested_at=format_time(datetime.now(UTC)),
    )
    jobs.insert_run(ctx.conn, run)
    return run


async def current_run(ctx: ApiContext, run: jobs.Run, *, wait: bool = False) -> jobs.Run:
    """The run with its status from Temporal (cached in the row once final)."""
    if run.final:
        return run
    handle = runs.handle_of(ctx.client, run.workflow_id, run.temporal_run_id)
    state = await (runs.wait_for_outcome(handle) if wait else runs.read_state(handle))
    if state.final:
        jobs.finish_run(ctx.conn, run.run_id, state.status, state.result, state.error)
        return jobs.get_run(ctx.conn, run.run_id) or run
    return replace(run, status=state.status)


def find_run(ctx: ApiContext, run_id: str) -> jobs.Run:
    run = jobs.get_run(ctx.conn, run_id)
    if run is None:
        raise ApiError(404, f"unknown run {run_id}")
    return run


async def current_runs(ctx: ApiContext) -> list[jobs.Run]:
    """Every run, oldest first, with its current status: `GET runs` and `runs --json`."""
    return list(await asyncio.gather(*(current_run(ctx, run) for run in jobs.list_runs(ctx.conn))))


async def list_runs(request: web.Request) -> web.StreamResponse:
    current = await current_runs(request.app[CONTEXT])
    return web.json_response([run.view() for run in current])


async def get_run(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    wait = request.query.get("wait", "").lower() in ("1", "true", "yes")
    run = find_run(ctx, request.match_info["run_id"])
    return web.json_response((await current_run(ctx, run, wait=wait)).view())


async def cancel_job_run(ctx: ApiContext, run_id: str) -> jobs.Run:
    """Ask an active run to cancel; ApiError 404 (unknown) or 409 (already finished)."""
    run = await current_run(ctx, find_run(ctx, run_id))
    if run.final:
        raise ApiError(409, f"run {run.run_id} has already finished ({run.status})")
    handle = runs.handle_of(ctx.client, run.workflow_id, run.temporal_run_id)
    try:
        await runs.request_cancel(handle, run.run_id)
    except runs.RunAlreadyFinished as exc:
        raise ApiError(409, str(exc)) from None
    return run


async def cancel_run(request: web.Request) -> web.StreamResponse:
    _require_admin(request)
    run = await cancel_job_run(request.app[CONTEXT], request.match_info["run_id"])
    return web.json_response(run.view(), status=202)


# ---- the application -----------------------------------------------------------------------


def build_app(ctx: ApiContext) -> web.Application:
    app = web.Application(middlewares=[errors_as_json, api_key_auth])
    app[CONTEXT] = ctx
    orchestrator = f"{PREFIX}/agent-orchestrator"
    app.router.add_get(f"{PREFIX}/personal-api-keys/verify", verify_key)
    app.router.add_get(f"{PREFIX}/personal-api-keys/me", who_am_i)
    app.router.add_get(f"{orchestrator}/account", account)
    app.router.add_post(f"{orchestrator}/hosts", register_host)
    app.router.add_get(f"{orchestrator}/hosts", list_hosts)
    app.router.add_put(f"{orchestrator}/hosts/{{host_id}}/agents", set_agents)
    app.router.add_get(f"{orchestrator}/jobs", list_jobs)
    app.router.add_post(f"{orchestrator}/runs", create_run)
    app.router.add_get(f"{orchestrator}/runs", list_runs)
    app.router.add_get(f"{orchestrator}/runs/{{run_id}}", get_run)
    app.router.add_post(f"{orchestrator}/runs/{{run_id}}/cancel", cancel_run)
    return app
