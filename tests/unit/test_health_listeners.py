"""orchestrator/health.py: where the health and metrics endpoints listen, and what a port that
cannot be had says (a real socket on loopback holds it)."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest

from orchestrator.cli import healthcheck
from orchestrator.health import HealthState, listening_at, serve_health, stop_health, why
from orchestrator.settings import SettingsError


@pytest.fixture
def held() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock
    sock.close()


async def test_port_zero_listens_on_a_port_the_system_chose_and_says_which() -> None:
    runners = await serve_health("127.0.0.1:0", HealthState(), "127.0.0.1:0")
    try:
        health, scrape = (listening_at(r) for r in runners)
        assert health != scrape and not health.endswith(":0") and not scrape.endswith(":0")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{health}/healthz") as response:
                assert response.status == 200
            async with session.get(f"http://{scrape}/metrics") as response:
                assert response.status == 200
    finally:
        await stop_health(runners)


async def test_a_health_port_in_use_is_one_line_naming_the_setting(held: socket.socket) -> None:
    taken = f"127.0.0.1:{held.getsockname()[1]}"
    with pytest.raises(SettingsError) as caught:
        await serve_health(taken, HealthState())
    assert str(caught.value) == (
        f"BIGEYE_HEALTH_ADDR {taken}: cannot listen there (Address already in use; "
        "set it to a free port, or stop what holds this one)"
    )


async def test_an_address_not_of_this_machine_says_so() -> None:
    addr = "192.0.2.1:9464"  # TEST-NET-1: never this machine's
    with pytest.raises(SettingsError) as caught:
        await serve_health(addr, HealthState())
    assert str(caught.value) == (
        f"BIGEYE_HEALTH_ADDR {addr}: cannot listen there (Cannot assign requested address; "
        "set it to an address of this machine)"
    )


def test_a_name_that_does_not_resolve_is_said_in_words() -> None:
    # what the resolver raises (resolving a name here would leave loopback): a negative errno
    unresolved = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert why(unresolved) == "Name or service not known; set it to an address of this machine"


async def test_a_metrics_port_in_use_closes_the_health_listener_it_opened(
    held: socket.socket,
) -> None:
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    health_port = free.getsockname()[1]
    free.close()
    taken = f"127.0.0.1:{held.getsockname()[1]}"
    with pytest.raises(SettingsError) as caught:
        await serve_health(f"127.0.0.1:{health_port}", HealthState(), taken)
    assert str(caught.value).startswith(f"BIGEYE_METRICS_ADDR {taken}: cannot listen there")
    again = socket.socket()
    try:
        again.bind(("127.0.0.1", health_port))  # fails if the health listener were left open
    finally:
        again.close()


@pytest.mark.parametrize("given", ["127.0.0.1:0", "no-port", "127.0.0.1:x"])
def test_healthcheck_needs_a_fixed_port(given: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert healthcheck({"BIGEYE_HEALTH_ADDR": given}) == 1
    assert capsys.readouterr().err == (
        "orchestrator not ready: healthcheck needs BIGEYE_HEALTH_ADDR with a fixed port, "
        f"not {given!r}\n"
    )


async def test_healthcheck_follows_readiness() -> None:
    state = HealthState(polling=True, docker_ok=True, docker_version="27.0")
    runners = await serve_health("127.0.0.1:0", state)
    env = {"BIGEYE_HEALTH_ADDR": listening_at(runners[0])}
    try:
        assert await asyncio.to_thread(healthcheck, env) == 1  # no heartbeat delivered yet
        state.heartbeat_ok = True
        assert await asyncio.to_thread(healthcheck, env) == 0
    finally:
        await stop_health(runners)
