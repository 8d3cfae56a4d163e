"""activities/slots.py: who may create a job container now, and who is offered a freed slot.

The engine's list of containers is faked here (the integration tests use the real one).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from activities import slots
from activities.slots import OFFER_SECONDS, STALE_SECONDS, VIEW_SECONDS, SlotGate, Waiter


class World:
    """The containers the engine would list, a clock, and the offers signalled."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.containers: dict[str, tuple[str, str]] = {}  # run id → (agent, state)
        self.now = 1000.0
        self.woken: list[str] = []
        self.closed: set[str] = set()  # runs whose workflow has closed: no signal reaches them
        self.listings = 0

        async def list_managed(docker: Any, host_id: str) -> list[dict[str, Any]]:
            self.listings += 1
            return [
                {"Id": run_id, "State": state, "Labels": {
                    "com.bigeye.orchestrator.run-id": run_id,
                    "com.bigeye.orchestrator.agent": agent}}
                for run_id, (agent, state) in self.containers.items()
            ]  # fmt: skip

        monkeypatch.setattr(slots, "list_managed", list_managed)

    async def wake(self, waiter: Waiter) -> bool:
        self.woken.append(waiter.run_id)
        return waiter.run_id not in self.closed

    def gate(self, max_jobs: int) -> SlotGate:
        return SlotGate(None, "h1", max_jobs, wake=self.wake, clock=lambda: self.now)  # type: ignore[arg-type]


def waiter(run_id: str, agent: str = "datahealth", agent_max: int = 1) -> Waiter:
    return Waiter(run_id, agent, agent_max, f"agent-job-{run_id}", f"temporal-{run_id}")


async def ask(gate: SlotGate, world: World, who: Waiter) -> bool:
    """One launch attempt: admitted runs create their container inside the admission."""
    async with gate.admission(who) as admitted:
        if admitted:
            world.containers[who.run_id] = (who.agent, "running")
    return admitted


async def settle(gate: SlotGate) -> None:
    while gate._tasks:
        await asyncio.gather(*list(gate._tasks))


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    return World(monkeypatch)


async def test_runs_are_admitted_up_to_the_hosts_slots(world: World) -> None:
    gate = world.gate(2)
    agents = ("datahealth", "lineage_plus", "external_monitors")
    admitted = [await ask(gate, world, waiter(f"r{i}", agents[i], 5)) for i in range(3)]
    assert admitted == [True, True, False]
    assert gate.waiting == 1


async def test_an_agent_is_held_to_its_max_concurrent_while_others_start(world: World) -> None:
    gate = world.gate(8)
    assert await ask(gate, world, waiter("a1"))
    assert not await ask(gate, world, waiter("a2"))
    assert await ask(gate, world, waiter("b1", "external_monitors"))  # another agent: room


async def test_a_freed_slot_is_offered_to_the_first_waiter_and_held_for_it(world: World) -> None:
    gate = world.gate(1)
    assert await ask(gate, world, waiter("r0", "lineage_plus", 5))
    for run_id in ("r1", "r2", "r3"):
        assert not await ask(gate, world, waiter(run_id, "lineage_plus", 5))
    world.containers["r0"] = ("lineage_plus", "exited")
    gate.released()
    await settle(gate)
    assert world.woken == ["r1"]
    # a newcomer cannot take the slot held for r1; r2 asking again keeps its place
    assert not await ask(gate, world, waiter("r9", "lineage_plus", 5))
    assert not await ask(gate, world, waiter("r2", "lineage_plus", 5))
    assert await ask(gate, world, waiter("r1", "lineage_plus", 5))
    world.containers["r1"] = ("lineage_plus", "removing")  # being removed: ended
    gate.released()
    await settle(gate)
    assert world.woken == ["r1", "r2"]


async def test_an_offer_not_taken_expires_and_goes_to_the_next(world: World) -> None:
    gate = world.gate(1)
    assert await ask(gate, world, waiter("r0"))
    assert not await ask(gate, world, waiter("r1"))
    assert not await ask(gate, world, waiter("r2"))
    del world.containers["r0"]
    gate.released()
    await settle(gate)
    assert world.woken == ["r1"]
    world.now += OFFER_SECONDS + 1  # r1 never came back (its run was canceled)
    assert await ask(gate, world, waiter("r2"))


async def test_an_offer_that_cannot_be_delivered_goes_to_the_next_waiter(world: World) -> None:
    gate = world.gate(1)
    assert await ask(gate, world, waiter("r0"))
    assert not await ask(gate, world, waiter("r1"))
    assert not await ask(gate, world, waiter("r2"))
    world.closed.add("r1")
    del world.containers["r0"]
    gate.released()
    await settle(gate)
    assert world.woken == ["r1", "r2"]
    assert await ask(gate, world, waiter("r2"))
    assert gate.waiting == 0


async def test_a_waiter_that_stopped_asking_is_forgotten(world: World) -> None:
    gate = world.gate(1)
    assert await ask(gate, world, waiter("r0"))
    assert not await ask(gate, world, waiter("r1"))
    world.now += STALE_SECONDS + 1
    del world.containers["r0"]
    gate.released()
    await settle(gate)
    assert world.woken == [] and gate.waiting == 0


async def test_the_first_waiter_of_a_full_agent_does_not_block_another_agents_waiter(
    world: World,
) -> None:
    gate = world.gate(2)
    assert await ask(gate, world, waiter("a1"))  # datahealth: max 1
    assert await ask(gate, world, waiter("b1", "external_monitors", 5))
    assert not await ask(gate, world, waiter("a2"))
    assert not await ask(gate, world, waiter("b2", "external_monitors", 5))
    del world.containers["b1"]
    gate.released()
    await settle(gate)
    assert world.woken == ["b2"]  # a2 waits for its agent, not for the host


async def test_launches_with_room_do_not_list_the_engine_each_time(world: World) -> None:
    gate = world.gate(8)
    for i in range(5):
        assert await ask(gate, world, waiter(f"r{i}", "datahealth", 8))
    assert world.listings == 1
    world.now += VIEW_SECONDS + 1  # an old view is listed again (another process may create)
    assert await ask(gate, world, waiter("r5", "datahealth", 8))
    assert world.listings == 2


async def test_a_view_that_would_refuse_is_checked_against_the_engine_first(world: World) -> None:
    gate = world.gate(1)
    assert await ask(gate, world, waiter("r0"))
    del world.containers["r0"]  # it ended and was removed without a word to the gate
    assert await ask(gate, world, waiter("r1"))
    assert world.listings == 2 and gate.waiting == 0


async def test_creates_run_side_by_side_and_never_exceed_the_slots(world: World) -> None:
    gate = world.gate(2)
    creating, both_inside = asyncio.Event(), asyncio.Event()
    inside: list[str] = []

    async def launch(who: Waiter) -> bool:
        async with gate.admission(who) as admitted:
            if admitted:
                inside.append(who.run_id)
                if len(inside) == 2:
                    both_inside.set()
                await creating.wait()  # a slow create: its container is not listed yet
                world.containers[who.run_id] = (who.agent, "running")
        return admitted

    first = [asyncio.create_task(launch(waiter(f"r{i}", "datahealth", 5))) for i in range(2)]
    async with asyncio.timeout(5):  # both create at once: the lock is not held across a create
        await both_inside.wait()
    assert not await launch(waiter("r2", "datahealth", 5))  # listed: none shows, both count
    creating.set()
    assert await asyncio.gather(*first) == [True, True]
    assert not await launch(waiter("r3", "datahealth", 5))


async def test_a_failed_create_holds_its_slot_only_until_the_next_listing(world: World) -> None:
    gate = world.gate(1)
    with pytest.raises(RuntimeError):
        async with gate.admission(waiter("r0")) as admitted:
            assert admitted
            raise RuntimeError("the engine refused the create")
    assert await ask(gate, world, waiter("r1"))  # the refusal listed the engine: r0 has none
