from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import structlog
from structlog.testing import capture_logs

from devcloud import listeners
from devcloud.errors import DevcloudError
from orchestrator.ports import LOOPBACK, free_port

NOT_HERE = "192.0.2.1"  # TEST-NET-1: no machine has it
ALSO_LOOPBACK = "127.0.0.2"  # bindable on Linux, like a bridge gateway of this machine


@pytest.fixture
def reserved() -> Iterator[list[listeners.Listeners]]:
    made: list[listeners.Listeners] = []
    yield made
    for bound in made:
        bound.close()


def accepts(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=2):
        return True


def test_both_listen_before_anything_serves_them(reserved):
    bound = listeners.reserve(
        gateway=None, previous_api=None, previous_front=None, exclude=frozenset()
    )
    reserved.append(bound)
    assert bound.api_port != bound.front_port
    assert accepts(LOOPBACK, bound.api_port) and accepts(LOOPBACK, bound.front_port)
    assert bound.gateway is None and list(bound.front) == [LOOPBACK]


def test_the_previous_ports_are_kept_when_free(reserved):
    api, front = free_port(), free_port()
    while front == api:
        front = free_port()
    bound = listeners.reserve(
        gateway=None, previous_api=api, previous_front=front, exclude=frozenset()
    )
    reserved.append(bound)
    assert (bound.api_port, bound.front_port) == (api, front)


def test_a_previous_port_now_taken_or_excluded_gives_way(reserved):
    with socket.socket() as held:
        held.bind((LOOPBACK, 0))
        held.listen()
        taken = held.getsockname()[1]
        excluded = free_port()
        bound = listeners.reserve(
            gateway=None, previous_api=taken, previous_front=excluded, exclude=frozenset({excluded})
        )
        reserved.append(bound)
        assert bound.api_port != taken and bound.front_port not in (excluded, bound.api_port)


def test_the_front_listens_on_the_gateway_first_on_the_same_port(reserved):
    bound = listeners.reserve(
        gateway=ALSO_LOOPBACK, previous_api=None, previous_front=None, exclude=frozenset()
    )
    reserved.append(bound)
    assert list(bound.front) == [ALSO_LOOPBACK, LOOPBACK] and bound.gateway == ALSO_LOOPBACK
    assert accepts(ALSO_LOOPBACK, bound.front_port) and accepts(LOOPBACK, bound.front_port)


def test_a_port_taken_on_the_gateway_only_moves_the_front_to_another(reserved):
    with socket.socket() as held:
        held.bind((ALSO_LOOPBACK, 0))
        held.listen()
        taken = held.getsockname()[1]
        bound = listeners.reserve(
            gateway=ALSO_LOOPBACK, previous_api=None, previous_front=taken, exclude=frozenset()
        )
        reserved.append(bound)
        assert bound.front_port != taken and bound.gateway == ALSO_LOOPBACK


def test_a_gateway_this_machine_lacks_leaves_loopback_serving(reserved, monkeypatch):
    # A fresh logger: the module's may be cached under another test's logging configuration.
    monkeypatch.setattr(listeners, "log", structlog.get_logger("devcloud.listeners"))
    with capture_logs() as logged:
        bound = listeners.reserve(
            gateway=NOT_HERE, previous_api=None, previous_front=None, exclude=frozenset()
        )
    reserved.append(bound)
    assert list(bound.front) == [LOOPBACK] and bound.gateway is None
    [warning] = [e for e in logged if e["event"] == "front_listen_failed"]
    assert warning["address"] == f"{NOT_HERE}:{bound.front_port}"


def test_no_port_at_all_is_one_clear_error(monkeypatch):
    with socket.socket() as held:
        held.bind((LOOPBACK, 0))
        held.listen()
        taken = held.getsockname()[1]
        monkeypatch.setattr(listeners, "pick_port", lambda **_: taken)
        with pytest.raises(DevcloudError, match=r"no TCP port free on 127\.0\.0\.1 for the API"):
            listeners.reserve(
                gateway=None, previous_api=None, previous_front=None, exclude=frozenset()
            )


def test_closing_releases_every_port():
    bound = listeners.reserve(
        gateway=ALSO_LOOPBACK, previous_api=None, previous_front=None, exclude=frozenset()
    )
    ports = [
        (LOOPBACK, bound.api_port),
        (ALSO_LOOPBACK, bound.front_port),
        (LOOPBACK, bound.front_port),
    ]
    bound.close()
    for host, port in ports:
        with socket.socket() as again:
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            again.bind((host, port))
