from __future__ import annotations

import socket

import pytest

from orchestrator import ports


def test_the_ephemeral_range_is_read_from_the_kernel(tmp_path):
    source = tmp_path / "range"
    source.write_text("40000\t50000\n")
    assert ports.ephemeral_range(source) == (40000, 50000)
    source.write_text("garbage")
    assert ports.ephemeral_range(source) == ports.LINUX_EPHEMERAL_RANGE
    assert ports.ephemeral_range(tmp_path / "missing") == ports.LINUX_EPHEMERAL_RANGE


def test_ports_are_chosen_from_the_larger_span_outside_the_ephemeral_range():
    assert ports.outside_ephemeral(32768, 60999) == range(10000, 32768)
    assert ports.outside_ephemeral(11000, 30000) == range(30001, 65536)
    assert len(ports.outside_ephemeral(1024, 65535)) == 0


def test_a_free_port_is_outside_the_ephemeral_range_and_free():
    low, high = ports.ephemeral_range()
    for _ in range(20):
        port = ports.free_port()
        assert not low <= port <= high
        with socket.socket() as sock:
            sock.bind((ports.LOOPBACK, port))


def test_a_port_held_by_a_listener_or_excluded_is_never_chosen(monkeypatch):
    with socket.socket() as held:
        # a port no other process holds (a fixed one might be another test's)
        held.bind((ports.LOOPBACK, ports.free_port()))
        held.listen()
        taken = held.getsockname()[1]
        monkeypatch.setattr(ports, "ephemeral_range", lambda: (taken + 2, 65535))
        monkeypatch.setattr(ports, "LOWEST_PORT", taken)
        monkeypatch.setattr(ports, "MIN_CHOICE", 2)
        # `taken` is held, the next excluded: nothing is left outside the range, so the kernel
        # chooses
        port = ports.free_port(exclude=frozenset({taken + 1}))
        assert port not in (taken, taken + 1)


def test_without_room_outside_the_ephemeral_range_the_kernel_chooses(monkeypatch):
    monkeypatch.setattr(ports, "ephemeral_range", lambda: (1024, 65535))
    port = ports.free_port()
    assert 1024 <= port <= 65535
    assert ports.port_is_free(port)


def test_port_is_free_sees_a_listener():
    with socket.socket() as held:
        held.bind((ports.LOOPBACK, 0))
        held.listen()
        assert not ports.port_is_free(held.getsockname()[1])


def test_no_free_port_at_all_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(ports, "ephemeral_range", lambda: (1024, 65535))
    with pytest.raises(OSError, match=r"no free TCP port on 127\.0\.0\.1"):
        ports.free_port(exclude=frozenset(range(65536)))
