"""The HTTP side: read a request, ask `rules`, check a target container, stream the answer.

Downstream is aiohttp's low-level server (no router: nothing is matched or normalised before
`rules.decide` sees the raw request target), with a cap on open connections and deadlines for a
request's head and body. Upstream is one aiohttp client session over the engine's unix socket,
every request under one API version fixed from the engine's `/version` at start-up. Responses
stream through chunk by chunk with no read timeout, so a `logs?follow=1` or a `wait` lasts as
long as the engine keeps it open; when the client goes away the handler is cancelled and the
upstream request closed with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import posixpath
import stat
from collections import OrderedDict
from pathlib import Path
from typing import Any, Final

import aiohttp
import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDict
from yarl import URL

from socketproxy import rules
from socketproxy.agentfile import AgentSetFile
from socketproxy.agentset import KEY_FILES
from socketproxy.config import ProxyConfig

log = structlog.get_logger("bigeye.socketproxy")

CONNECT_TIMEOUT: Final = 10.0
INSPECT_TIMEOUT: Final = 30.0
VERSION_TIMEOUT: Final = 10.0
KEEPALIVE_TIMEOUT: Final = 75.0
HEAD_TIMEOUT: Final = 10.0  # from a request's first byte to its last header line
BODY_TIMEOUT: Final = 10.0  # the whole body, from the moment the handler starts reading it
REFUSED_LINGER: Final = 2.0  # a refused connection is read (and dropped) this long, then closed
MAX_FILTERED_RESPONSE: Final = 1024 * 1024
# Containers this proxy created under the policy: a container's labels never change, so a call
# that names one of them by its full id needs no inspect first (one engine call fewer for each
# start, inspect, logs, wait, stop and remove of a job). The oldest are forgotten beyond this.
KNOWN_CONTAINERS: Final = 4096
LOGGED_PATH_CHARS: Final = 300
# Hop-by-hop headers, and the ones aiohttp sets itself for the downstream response.
_DROPPED_RESPONSE_HEADERS: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "date",
    }
)
_UPSTREAM: Final = "http://docker"


def _message(reason: str) -> bytes:
    return json.dumps({"message": f"docker-socket-proxy: {reason}"}).encode()


def deny_response(reason: str, status: int = 403) -> web.Response:
    # Exactly application/json, as the engine answers errors: aiodocker parses only that.
    return web.Response(
        status=status, body=_message(reason), headers={"Content-Type": "application/json"}
    )


def _raw_response(status: int, phrase: str, reason: str) -> bytes:
    """A whole HTTP/1.1 answer, for a connection aiohttp never handed to the proxy."""
    body = _message(reason)
    head = (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def _headers(request: web.BaseRequest) -> list[tuple[str, str]]:
    return [
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in request.raw_headers
    ]


async def _read_body(request: web.BaseRequest) -> bytes | None:
    """The whole body, or None once it exceeds the cap (chunked bodies included)."""
    declared = request.content_length
    if declared is not None and declared > rules.MAX_BODY_BYTES:
        return None
    if not request.body_exists:
        return b""
    if request.headers.get("Expect", "").lower() == "100-continue" and request.version >= (1, 1):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    buf = bytearray()
    while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > rules.MAX_BODY_BYTES:
            return None


def _parse_api_version(text: Any) -> tuple[int, int] | None:
    if not isinstance(text, str):
        return None
    major, dot, minor = text.partition(".")
    if not dot or not major.isdigit() or not minor.isdigit():
        return None
    return int(major), int(minor)


def _dotted(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


# ---- connections: a cap, and a deadline for the request head ------------------------------


class _Connections:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0


class _Connection(RequestHandler):
    """One client connection: counted against the cap; a request head must arrive in time.

    aiohttp has no deadline for a request's head (it waits as long as bytes trickle in, up to
    the keep-alive timeout), and the proxy's handler only runs once the head is complete. So
    the first byte of a request arms a timer, the handler disarms it, and when it fires the
    client gets a 408 and the connection is closed.
    """

    def __init__(self, manager: web.Server, connections: _Connections, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._connections = connections
        self._counted = False
        self._refused = False
        self._in_request = False
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._connections.open >= self._connections.limit:
            self._refuse(transport)
            return
        self._connections.open += 1
        self._counted = True
        super().connection_made(transport)

    def _refuse(self, transport: asyncio.BaseTransport) -> None:
        self._refused = True
        assert isinstance(transport, asyncio.Transport)
        limit = self._connections.limit
        log.warning("connection refused", reason="too many connections", limit=limit)
        transport.write(
            _raw_response(
                503,
                "Service Unavailable",
                f"too many connections (at most {self._connections.limit})",
            )
        )
        # Half-close and drain what the client already sent: closing with unread data would
        # reset the connection before the client reads the answer.
        if transport.can_write_eof():
            transport.write_eof()
        asyncio.get_running_loop().call_later(REFUSED_LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if not self._in_request and self._head_timer is None and data:
            self._head_timer = asyncio.get_running_loop().call_later(
                HEAD_TIMEOUT, self._head_too_slow
            )
        super().data_received(data)

    def eof_received(self) -> None:
        if self._refused and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        if self._refused:
            return
        if self._counted:
            self._counted = False
            self._connections.open -= 1
        super().connection_lost(exc)

    def request_started(self) -> None:
        self._disarm()
        self._in_request = True

    def request_finished(self) -> None:
        self._in_request = False

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._in_request or self.transport is None:
            return
        log.warning("request denied", reason=f"request head not received within {HEAD_TIMEOUT:g} s")
        self.transport.write(
            _raw_response(
                408,
                "Request Timeout",
                f"the request head did not arrive within {HEAD_TIMEOUT:g} s",
            )
        )
        self.force_close()


class _Server(web.Server):
    """aiohttp's low-level server, with `_Connection` as its protocol."""

    def __init__(self, handler: Any, *, max_connections: int, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.open_connections = _Connections(max_connections)
        self._protocol_kwargs = {
            key: value for key, value in kwargs.items() if key in ("keepalive_timeout",)
        }

    def __call__(self) -> RequestHandler:
        return _Connection(
            self, self.open_connections, loop=self._loop, access_log=None, **self._protocol_kwargs
        )


# ---- the proxy ------------------------------------------------------------------------------


class Proxy:
    """One engine connection pool, the agent set and the policy; `handle` serves a request."""

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self.agent_file = AgentSetFile(
            Path(config.agent_config),
            config.host_dir,
            allow_loopback_registry=config.allow_loopback_registry,
        )
        self.api_version: tuple[int, int] | None = None
        self._version_lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._created: OrderedDict[str, None] = OrderedDict()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.UnixConnector(path=self.config.socket_path, limit=0)
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
                # No total and no read timeout: streams last as long as the engine's answer.
                timeout=aiohttp.ClientTimeout(total=None, sock_read=None, connect=CONNECT_TIMEOUT),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fix_api_version(self) -> tuple[int, int] | str:
        """The one API version every request is forwarded under, or why there is none yet.

        The engine's own (`ApiVersion` of an unversioned `/version`), capped at the newest
        version the proxy's rules were written against; asked once, then fixed.
        """
        async with self._version_lock:
            if self.api_version is not None:
                return self.api_version
            async with asyncio.timeout(VERSION_TIMEOUT):
                async with self.session.get(URL(f"{_UPSTREAM}/version")) as response:
                    payload = await response.read()
                    status = response.status
            try:
                engine = _parse_api_version(json.loads(payload).get("ApiVersion"))
            except (ValueError, AttributeError):
                engine = None
            if status != 200 or engine is None:
                return f"the engine's /version answered {status} without an API version"
            if engine < rules.MIN_API_VERSION:
                return (
                    f"the engine speaks API {_dotted(engine)}; the proxy needs at least "
                    f"{_dotted(rules.MIN_API_VERSION)} (Docker Engine 20.10)"
                )
            self.api_version = min(engine, rules.MAX_API_VERSION)
            log.info(
                "API version fixed",
                engine=_dotted(engine),
                forwarded=_dotted(self.api_version),
            )
            return self.api_version

    def policy(self, api_version: tuple[int, int]) -> rules.Policy:
        return rules.Policy(
            host_id=self.config.host_id,
            host_dir=self.config.host_dir,
            agents=self.agent_file.current(),
            api_version=api_version,
        )

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        protocol = request.protocol
        if isinstance(protocol, _Connection):
            protocol.request_started()
        try:
            return await self._handle(request)
        finally:
            if isinstance(protocol, _Connection):
                protocol.request_finished()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.raw_path.partition("?")[0][:LOGGED_PATH_CHARS]
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                body = await _read_body(request)
        except TimeoutError:
            reason = f"the request body did not arrive within {BODY_TIMEOUT:g} s"
            response = self._deny(request, path, reason, status=408, close=True)
            # Answer and close at once: aiohttp would otherwise linger, reading the rest.
            await response.prepare(request)
            await response.write_eof()
            if request.transport is not None:
                request.transport.close()
            return response
        except Exception as exc:  # a broken chunked body, a short one, a reset: never a 500
            return self._deny(
                request, path, f"the request body cannot be read: {exc}", status=400, close=True
            )
        try:
            version = await self.fix_api_version()
        except TimeoutError:
            return self._unreachable(request, path, "the Docker engine did not answer in time")
        except (aiohttp.ClientConnectionError, OSError) as exc:
            return self._unreachable(request, path, f"cannot reach the Docker engine: {exc}")
        if isinstance(version, str):
            log.error("no API version", reason=version)
            return deny_response(version, status=502)
        try:
            decision = rules.decide(
                rules.ProxyRequest(request.method, request.raw_path, _headers(request), body),
                self.policy(version),
            )
        except Exception as exc:  # a request the rules cannot read is a bad request, never a 500
            log.error("request rules failed", method=request.method[:16], path=path, exc_info=True)
            return self._deny(
                request, path, f"malformed request ({type(exc).__name__})", status=400, close=True
            )
        if isinstance(decision, rules.Deny):
            return self._deny(
                request, path, decision.reason, status=decision.status, close=body is None
            )
        if decision.bind_source is not None:
            problem = self.bind_problem(decision.bind_source)
            if problem is not None:
                return self._deny(request, path, f"container create: {problem}")
        try:
            container_id = None
            if decision.target is not None and decision.target in self._created:
                container_id = decision.target
            elif decision.target is not None:
                checked = await self._check_target(decision, version)
                if isinstance(checked, rules.Deny):
                    return self._deny(request, path, checked.reason)
                if isinstance(checked, web.Response):
                    return checked
                container_id = checked
            return await self._forward(request, decision, container_id, path)
        except TimeoutError:
            return self._unreachable(request, path, "the Docker engine did not answer in time")
        except (aiohttp.ClientConnectionError, OSError) as exc:
            return self._unreachable(request, path, f"cannot reach the Docker engine: {exc}")

    def _unreachable(self, request: web.BaseRequest, path: str, reason: str) -> web.Response:
        log.error("engine unreachable", method=request.method[:16], path=path, error=reason)
        status = 504 if "in time" in reason else 502
        return deny_response(reason, status=status)

    def _deny(
        self,
        request: web.BaseRequest,
        path: str,
        reason: str,
        *,
        status: int = 403,
        close: bool = False,
    ) -> web.Response:
        log.warning(
            "request denied", method=request.method[:16], path=path, status=status, reason=reason
        )
        response = deny_response(reason, status)
        if close:
            response.force_close()  # the rest of the body may still be on the wire
        return response

    def bind_problem(self, source: str) -> str | None:
        """Why the engine must not bind `source` (a host path), checked through the mount.

        Every component below the host directory must be a real directory: the engine would
        create a missing one as root, and a symbolic link leads somewhere on the host that the
        proxy's view of the mount cannot tell. The directory must not hold a key file.
        """
        host_dir = self.config.host_dir
        relative = posixpath.relpath(source, host_dir)
        if relative.startswith("..") or relative == ".":
            return f"config directory {source} is not inside the host directory"
        path = self.config.mounted_host_dir
        for part in relative.split("/"):
            path = posixpath.join(path, part)
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                return (
                    f"config directory {source} does not exist (the engine would create it, "
                    "as root): create it"
                )
            except OSError as exc:
                return f"cannot check config directory {source}: {exc.strerror or exc}"
            if stat.S_ISLNK(info.st_mode):
                return f"config directory {source} is reached through a symbolic link"
            if not stat.S_ISDIR(info.st_mode):
                return f"config directory {source} is not a directory"
        for name in KEY_FILES:
            try:
                os.lstat(posixpath.join(path, name))
            except FileNotFoundError:
                continue
            except OSError as exc:
                return f"cannot check config directory {source}: {exc.strerror or exc}"
            return f"config directory {source} holds {name}: a key is never bound into a job"
        return None

    async def _check_target(
        self, decision: rules.Forward, version: tuple[int, int]
    ) -> str | rules.Deny | web.Response:
        """The container's full id when it is ours, a denial, or the engine's own error."""
        assert decision.target is not None
        url = URL(f"{_UPSTREAM}{decision.version}/containers/{decision.target}/json", encoded=True)
        async with asyncio.timeout(INSPECT_TIMEOUT):
            async with self.session.get(url) as response:
                payload = await response.read()
                content_type = response.headers.get("Content-Type", "application/json")
                status = response.status
        if status != 200:
            # Not found (or an engine error) is the engine's answer, passed on as is.
            return web.Response(status=status, body=payload, headers={"Content-Type": content_type})
        try:
            info: Any = json.loads(payload)
        except ValueError:
            return deny_response("the engine's inspect answer is not JSON", status=502)
        if not isinstance(info, dict):
            return deny_response("the engine's inspect answer is not an object", status=502)
        violation = rules.target_violation(info, self.policy(version))
        if violation is not None:
            return rules.Deny(f"{decision.route}: {violation}")
        return str(info["Id"])

    async def _forward(
        self,
        request: web.BaseRequest,
        decision: rules.Forward,
        container_id: str | None,
        path: str,
    ) -> web.StreamResponse:
        target = decision.upstream_target(container_id)
        headers = CIMultiDict(decision.headers)
        if decision.body is not None:
            headers["Content-Type"] = "application/json"
        async with self.session.request(
            decision.method,
            URL(_UPSTREAM + target, encoded=True),
            data=decision.body if decision.body is not None else None,
            headers=headers,
            allow_redirects=False,
        ) as upstream:
            log.debug(
                "request allowed",
                method=decision.method,
                path=path,
                route=decision.route,
                status=upstream.status,
            )
            if decision.hide_keys:
                return await self._filtered(upstream, decision.hide_keys)
            if decision.route == "container.create":
                return await self._creation(upstream)
            if decision.route == "container.remove" and upstream.status < 300:
                self._created.pop(container_id or "", None)
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in _DROPPED_RESPONSE_HEADERS:
                    response.headers.add(name, value)
            chunked = "chunked" in upstream.headers.get("Transfer-Encoding", "").lower()
            if upstream.content_length is not None and not chunked:
                response.content_length = upstream.content_length
            await response.prepare(request)
            if decision.method == "HEAD":
                await response.write_eof()
                return response
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (aiohttp.ClientError, OSError) as exc:
                # Either side broke mid-stream (headers are sent, no other answer is possible):
                # cut the client's connection rather than end its stream as if complete.
                log.warning(
                    "stream broke", method=decision.method, path=path, error=str(exc) or repr(exc)
                )
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write_eof()
            return response

    async def _creation(self, upstream: aiohttp.ClientResponse) -> web.Response:
        """The engine's answer to a create the policy admitted, passed on; its id remembered."""
        payload = await upstream.content.read(MAX_FILTERED_RESPONSE + 1)
        if len(payload) > MAX_FILTERED_RESPONSE:
            return deny_response("the engine's answer is too large to read", status=502)
        headers = {"Content-Type": upstream.headers.get("Content-Type", "application/json")}
        if upstream.status == 201:
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                created = json.loads(payload).get("Id")
                if isinstance(created, str) and rules.CONTAINER_ID.fullmatch(created):
                    self._created[created] = None
                    while len(self._created) > KNOWN_CONTAINERS:
                        self._created.popitem(last=False)
        return web.Response(status=upstream.status, body=payload, headers=headers)

    async def _filtered(
        self, upstream: aiohttp.ClientResponse, hidden: tuple[str, ...]
    ) -> web.Response:
        """A small JSON answer with keys removed (a network's list of attached containers)."""
        payload = await upstream.content.read(MAX_FILTERED_RESPONSE + 1)
        if len(payload) > MAX_FILTERED_RESPONSE:
            return deny_response("the engine's answer is too large to filter", status=502)
        headers = {"Content-Type": upstream.headers.get("Content-Type", "application/json")}
        if upstream.status != 200:
            return web.Response(status=upstream.status, body=payload, headers=headers)
        try:
            data = json.loads(payload)
        except ValueError:
            return deny_response("the engine's answer is not JSON", status=502)
        if not isinstance(data, dict):
            return deny_response("the engine's answer is not an object", status=502)
        for key in hidden:
            data.pop(key, None)
        return web.Response(status=200, body=json.dumps(data).encode(), headers=headers)


def make_server(proxy: Proxy) -> web.Server:
    return _Server(
        proxy.handle,
        max_connections=proxy.config.max_connections,
        handler_cancellation=True,  # a client gone mid-stream closes the upstream request too
        keepalive_timeout=KEEPALIVE_TIMEOUT,
    )


async def start(
    config: ProxyConfig, host: str | None = None, port: int | None = None
) -> tuple[web.ServerRunner, Proxy, int]:
    """Serve until the runner is cleaned up; returns the port actually bound."""
    proxy = Proxy(config)
    proxy.agent_file.current()  # the agent set's first read, logged at start-up
    try:
        fixed = await proxy.fix_api_version()
        if isinstance(fixed, str):
            log.error("no API version yet", reason=fixed)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        log.warning("the Docker engine does not answer yet; asking again on the first request",
                    error=str(exc) or type(exc).__name__)  # fmt: skip
    runner = web.ServerRunner(make_server(proxy))
    await runner.setup()
    site = web.TCPSite(
        runner,
        host if host is not None else config.listen_host,
        port if port is not None else config.listen_port,
        reuse_address=True,
    )
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else config.listen_port
    return runner, proxy, int(bound)
