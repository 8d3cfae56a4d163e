"""The API's and the mTLS front's listening sockets, bound before the Temporal server starts.

Ports are chosen and bound in one step and held until the services take them over: a port only
checked for freeness could be taken during the seconds the Temporal server needs to come up.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from dataclasses import dataclass, field

import structlog

from devcloud.errors import DevcloudError
from devcloud.temporal_server import pick_port
from orchestrator.ports import LOOPBACK

log = structlog.get_logger("devcloud.listeners")

TRIES = 50


def listening_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass
class Listeners:
    api: socket.socket
    front: dict[str, socket.socket]  # by host, loopback last
    # kept as numbers: the state file is written after the services closed the sockets
    api_port: int = field(init=False)
    front_port: int = field(init=False)

    def __post_init__(self) -> None:
        self.api_port = int(self.api.getsockname()[1])
        self.front_port = int(self.front[LOOPBACK].getsockname()[1])

    @property
    def gateway(self) -> str | None:
        return next((host for host in self.front if host != LOOPBACK), None)

    def close(self) -> None:
        for sock in (self.api, *self.front.values()):
            sock.close()


def _candidates(preferred: int | None, exclude: frozenset[int]) -> list[int | None]:
    """`preferred` first when there is one, then fresh ports (None: choose one then)."""
    first: list[int | None] = [preferred] if preferred and preferred not in exclude else []
    return first + [None] * TRIES


def _bind_api(preferred: int | None, exclude: frozenset[int]) -> socket.socket:
    for candidate in _candidates(preferred, exclude):
        port = candidate or pick_port(exclude=exclude)
        with contextlib.suppress(OSError):
            return listening_socket(LOOPBACK, port)
    raise DevcloudError(f"no TCP port free on {LOOPBACK} for the API")


def _bind_front(
    preferred: int | None, gateway: str | None, exclude: frozenset[int]
) -> dict[str, socket.socket]:
    """The same port on the gateway (what containers use) and on loopback. A gateway address
    this machine does not have is left out with a warning: loopback still serves local
    clients."""
    for candidate in _candidates(preferred, exclude):
        port = candidate or pick_port(exclude=exclude)
        bound: dict[str, socket.socket] = {}
        try:
            if gateway:
                try:
                    bound[gateway] = listening_socket(gateway, port)
                except OSError as exc:
                    if exc.errno != errno.EADDRNOTAVAIL:
                        raise
                    log.warning("front_listen_failed", address=f"{gateway}:{port}", reason=str(exc))
                    gateway = None
            bound[LOOPBACK] = listening_socket(LOOPBACK, port)
            return bound
        except OSError:
            for sock in bound.values():
                sock.close()
    hosts = ", ".join(([gateway] if gateway else []) + [LOOPBACK])
    raise DevcloudError(f"no TCP port free on all of {hosts} for the mTLS front")


def reserve(
    *,
    gateway: str | None,
    previous_api: int | None,
    previous_front: int | None,
    exclude: frozenset[int],
) -> Listeners:
    """Listening sockets for the API and the front, on their previous ports when free."""
    api = _bind_api(previous_api, exclude)
    try:
        taken = exclude | {int(api.getsockname()[1])}
        front = _bind_front(previous_front, gateway, taken)
    except BaseException:
        api.close()
        raise
    return Listeners(api=api, front=front)
