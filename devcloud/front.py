"""The mTLS front of the Temporal dev server: TLS in, plain TCP out to the loopback frontend.

It listens on the Docker bridge gateway (what `host.docker.internal` maps to in containers) and
on 127.0.0.1, same port. Every connection's handshake uses the current TLS context: ALPN `h2`,
a client certificate required and verified against the trusted account CA (none yet: every
handshake fails). A new context is built when the account CA becomes trusted. After the
handshake, bytes are copied both ways a chunk at a time; nothing is parsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("devcloud.front")

CHUNK = 64 * 1024
HANDSHAKE_TIMEOUT_SECONDS = 10.0
UPSTREAM_CONNECT_TIMEOUT_SECONDS = 5.0
ALPN = ("h2",)


def build_context(cert_file: Path, key_file: Path, client_ca_pem: str | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(list(ALPN))
    context.verify_mode = ssl.CERT_REQUIRED
    if client_ca_pem:
        context.load_verify_locations(cadata=client_ca_pem)
    return context


def describe_failure(exc: BaseException) -> str:
    """One line saying why a handshake failed."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"{exc.reason}: {exc.verify_message}" if exc.verify_message else str(exc.reason)
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, ConnectionAbortedError | TimeoutError):
        return f"no handshake within {HANDSHAKE_TIMEOUT_SECONDS:.0f}s"
    if isinstance(exc, ConnectionError | EOFError):
        return "connection closed during the handshake"
    return f"{type(exc).__name__}: {exc}"


def _address(sockaddr: Any) -> str:
    if isinstance(sockaddr, tuple) and len(sockaddr) >= 2:
        return f"{sockaddr[0]}:{sockaddr[1]}"
    return str(sockaddr)


def _common_name(peercert: Any) -> str | None:
    for rdn in (peercert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class TemporalFront:
    """TLS-terminating TCP forwarder to `upstream` (the dev server on loopback)."""

    def __init__(
        self,
        upstream: tuple[str, int],
        cert_file: Path,
        key_file: Path,
        client_ca_pem: str | None,
    ) -> None:
        self._upstream = upstream
        self._cert_file = cert_file
        self._key_file = key_file
        self._context = build_context(cert_file, key_file, client_ca_pem)
        self._listeners: list[tuple[socket.socket, asyncio.Task[None]]] = []
        self._connections: set[asyncio.Task[None]] = set()
        self.addresses: list[str] = []

    def trust(self, client_ca_pem: str | None) -> None:
        """New connections verify client certificates against `client_ca_pem` from now on."""
        self._context = build_context(self._cert_file, self._key_file, client_ca_pem)
        log.info("front_client_ca_changed", trusted=client_ca_pem is not None)

    async def start(self, listeners: dict[str, socket.socket]) -> list[str]:
        """Serve on the bound sockets by host (see `devcloud.listeners`); owns them from now."""
        for host, sock in listeners.items():
            address = f"{host}:{sock.getsockname()[1]}"
            task = asyncio.create_task(self._accept(sock, address), name=f"front-{address}")
            self._listeners.append((sock, task))
            self.addresses.append(address)
        log.info("front_listening", addresses=self.addresses, upstream=_address(self._upstream))
        return self.addresses

    async def close(self) -> None:
        for sock, task in self._listeners:
            task.cancel()
            sock.close()
        tasks = [task for _, task in self._listeners] + list(self._connections)
        for task in self._connections:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._listeners.clear()

    async def _accept(self, listener: socket.socket, address: str) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(listener)
            except OSError as exc:
                log.warning("front_accept_failed", listener=address, reason=str(exc))
                await asyncio.sleep(0.1)
                continue
            task = asyncio.create_task(self._serve(conn, _address(peer), address))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    async def _serve(self, conn: socket.socket, peer: str, listener: str) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=CHUNK)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            # The context of this moment: a CA trusted since the last connection applies.
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol,
                conn,
                ssl=self._context,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT_SECONDS,
            )
        except (OSError, EOFError, TimeoutError) as exc:
            log.warning(
                "front_handshake_failed", peer=peer, listener=listener,
                reason=describe_failure(exc),
            )  # fmt: skip
            conn.close()
            return
        client = asyncio.StreamWriter(transport, protocol, reader, loop)
        ssl_object = transport.get_extra_info("ssl_object")
        log.info(
            "front_connection_opened",
            peer=peer,
            listener=listener,
            client=_common_name(transport.get_extra_info("peercert")),
            alpn=ssl_object.selected_alpn_protocol() if ssl_object else None,
        )
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*self._upstream), UPSTREAM_CONNECT_TIMEOUT_SECONDS
            )
        except (OSError, TimeoutError) as exc:
            log.warning("front_upstream_unreachable", peer=peer, reason=str(exc))
            await _close(client)
            return
        try:
            await _relay(reader, client, up_reader, up_writer)
        finally:
            await asyncio.gather(_close(client), _close(up_writer))
            log.info("front_connection_closed", peer=peer, listener=listener)


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    while chunk := await source.read(CHUNK):
        sink.write(chunk)
        await sink.drain()


async def _relay(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    """Both directions until either ends (gRPC does not half-close a connection)."""
    tasks = [
        asyncio.create_task(_copy(client_reader, up_writer)),
        asyncio.create_task(_copy(up_reader, client_writer)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 2)
