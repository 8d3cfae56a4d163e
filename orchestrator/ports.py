"""Free loopback ports chosen where outgoing connections cannot take them.

A port the kernel hands out for `bind(0)` comes from its ephemeral range, the same range every
outgoing connection takes its local port from: between the check and the server's own bind,
another process's connection can take it (seen in parallel test runs as "address already in
use"). A port chosen at random below that range is only ever taken by a listener.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOOPBACK = "127.0.0.1"
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LINUX_EPHEMERAL_RANGE = (32768, 60999)
LOWEST_PORT = 10000  # below are many well-known services' defaults
MIN_CHOICE = 1000  # fewer ports than this outside the ephemeral range: let the kernel choose
TRIES = 200


def ephemeral_range(source: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    try:
        low, high = (int(part) for part in source.read_text().split())
    except (OSError, ValueError):
        return LINUX_EPHEMERAL_RANGE
    return low, high


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers set SO_REUSEADDR too, so a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def outside_ephemeral(low: int, high: int) -> range:
    """The larger span of unprivileged ports (from LOWEST_PORT) outside [low, high]."""
    below = range(LOWEST_PORT, max(LOWEST_PORT, low))
    above = range(max(LOWEST_PORT, high + 1), 65536)
    return below if len(below) >= len(above) else above


def free_port(host: str = LOOPBACK, *, exclude: frozenset[int] = frozenset()) -> int:
    """A port free on `host` now, outside the ephemeral range when that leaves enough choice."""
    span = outside_ephemeral(*ephemeral_range())
    if len(span) >= MIN_CHOICE:
        for _ in range(TRIES):
            port = random.choice(span)
            if port not in exclude and port_is_free(port, host):
                return port
    for _ in range(TRIES):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in exclude:
            return port
    raise OSError(f"no free TCP port on {host}")
