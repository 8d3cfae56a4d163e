"""The HTTP side: read a request, ask `rules`, check a target container, stream the answer.

Downstream is aiohttp's low-level server (no router: nothing is matched or normalised before
`rules.decide` sees the raw request target). Upstream is one aiohttp client session over the
engine's unix socket. Responses stream through chunk by chunk with no read timeout, so a
`logs?follow=1` or a `wait` lasts as long as the engine keeps it open; when the client goes
away the handler is cancelled and the upstream request closed with it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Final

import aiohttp
import structlog
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from socketproxy import rules
from socketproxy.config import ProxyConfig

log = structlog.get_logger("bigeye.socketproxy")

CONNECT_TIMEOUT: Final = 10.0
INSPECT_TIMEOUT: Final = 30.0
KEEPALIVE_TIMEOUT: Final = 75.0
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


def deny_response(reason: str, status: int = 403) -> web.Response:
    # Exactly application/json, as the engine answers errors: aiodocker parses only that.
    body = json.dumps({"message": f"docker-socket-proxy: {reason}"}).encode()
    return web.Response(status=status, body=body, headers={"Content-Type": "application/json"})


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


class Proxy:
    """One engine connection pool and the policy; `handle` is the low-level request handler."""

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self.policy = rules.Policy(host_id=config.host_id, host_dir=config.host_dir)
        self._session: aiohttp.ClientSession | None = None

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

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.raw_path.partition("?")[0][:LOGGED_PATH_CHARS]
        body = await _read_body(request)
        decision = rules.decide(
            rules.ProxyRequest(request.method, request.raw_path, _headers(request), body),
            self.policy,
        )
        if isinstance(decision, rules.Deny):
            return self._deny(request, path, decision.reason, oversized=body is None)
        try:
            container_id = None
            if decision.target is not None:
                checked = await self._check_target(decision)
                if isinstance(checked, rules.Deny):
                    return self._deny(request, path, checked.reason)
                if isinstance(checked, web.Response):
                    return checked
                container_id = checked
            return await self._forward(request, decision, container_id, path)
        except TimeoutError:
            log.error("engine did not answer in time", method=request.method, path=path)
            return deny_response("the Docker engine did not answer in time", status=504)
        except (aiohttp.ClientConnectionError, OSError) as exc:
            log.error("engine unreachable", method=request.method, path=path, error=str(exc))
            return deny_response(f"cannot reach the Docker engine: {exc}", status=502)

    def _deny(
        self, request: web.BaseRequest, path: str, reason: str, *, oversized: bool = False
    ) -> web.Response:
        log.warning("request denied", method=request.method[:16], path=path, reason=reason)
        response = deny_response(reason)
        if oversized:
            response.force_close()  # the rest of the body is still on the wire
        return response

    async def _check_target(self, decision: rules.Forward) -> str | rules.Deny | web.Response:
        """The container's full id when it is ours, a denial, or the engine's own error."""
        assert decision.target is not None
        url = URL(f"{_UPSTREAM}/containers/{decision.target}/json", encoded=True)
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
        violation = rules.target_violation(info, self.policy)
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


def make_server(proxy: Proxy) -> web.Server:
    return web.Server(
        proxy.handle,
        handler_cancellation=True,  # a client gone mid-stream closes the upstream request too
        access_log=None,
        keepalive_timeout=KEEPALIVE_TIMEOUT,
    )


async def start(
    config: ProxyConfig, host: str | None = None, port: int | None = None
) -> tuple[web.ServerRunner, Proxy, int]:
    """Serve until the runner is cleaned up; returns the port actually bound."""
    proxy = Proxy(config)
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
