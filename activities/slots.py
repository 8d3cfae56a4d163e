"""The slot: how many job containers may exist at once, on the host and per agent.

The Docker engine is the source of truth (labelled containers that are created or running),
so the count survives an orchestrator restart. A launch does not list the engine each time: the
gate keeps the last listing plus the runs it admitted since, which can only over-count (a
container that ended since is still in it), so it admits from that view and lists again only
before it would refuse, or when the view is older than `VIEW_SECONDS`. The decision is taken
under a process lock and the admitted run holds a reservation until a listing shows its
container, so creates run side by side and never exceed the slots.

A run that finds no room does not wait here: `admission` says so at once and remembers the
run as a waiter, and the run's workflow waits on a timer, holding neither a slot nor a worker
slot (so one busy agent never delays another's jobs). When a slot frees, waiters are offered
it in the order they arrived: an offer holds the slot for a short while, and the waiter's
workflow is signalled to come back for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiodocker
import structlog

from activities.containers import list_managed
from orchestrator import metrics
from orchestrator.contract import LABEL_AGENT, LABEL_RUN_ID

# A container being removed has ended: its slot is free (counting it would refuse the waiter
# that its removal just woke).
ACTIVE_STATES = frozenset({"created", "running", "restarting", "paused"})
OFFER_SECONDS = 20.0
STALE_SECONDS = 90.0  # a waiter that has not asked for this long is gone (its run ended)
# Another process's creates (a drainer's) only show in a listing: this bounds how long a view
# that does not count them is trusted.
VIEW_SECONDS = 5.0
log = structlog.get_logger("bigeye.orchestrator.slots")


@dataclass(frozen=True)
class Waiter:
    run_id: str  # the run's `run_id` (the contract's), one waiter per run
    agent: str
    agent_max: int
    workflow_id: str
    workflow_run_id: str


Wake = Callable[[Waiter], Awaitable[bool]]  # False: the run is gone (nobody to offer to)


@dataclass
class _Waiting:
    waiter: Waiter
    arrived: int  # first come, first served: kept when the run asks again
    seen: float


class SlotGate:
    def __init__(
        self,
        docker: aiodocker.Docker,
        host_id: str,
        max_jobs: int,
        wake: Wake | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.docker = docker
        self.host_id = host_id
        self.max_jobs = max_jobs
        self.wake = wake
        self.clock = clock
        self._lock = asyncio.Lock()
        self._waiting: dict[str, _Waiting] = {}
        self._arrivals = itertools.count()
        self._offers: dict[str, tuple[str, float]] = {}  # run id → (agent, expires at)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._listed: dict[str, str] | None = None  # the last listing: run id → agent
        self._listed_at = 0.0
        self._listings = 0  # listings begun
        # admitted runs: agent, and how many listings had begun when their create ended
        # (None: still creating); dropped once a listing begun after that shows the container
        self._reserved: dict[str, tuple[str, int | None]] = {}

    async def used(self) -> list[dict[str, Any]]:
        """This host's job containers that hold a slot."""
        containers = await list_managed(self.docker, self.host_id)
        return [c for c in containers if c.get("State") in ACTIVE_STATES]

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @contextlib.asynccontextmanager
    async def admission(self, waiter: Waiter) -> AsyncIterator[bool]:
        """True: there is room, create the container inside the block. False: wait."""
        async with self._lock:
            active, listed = await self._view()
            admitted = self._decide(active, waiter)
            if not admitted and not listed:  # the view may be out of date: ask the engine
                admitted = self._decide((await self._view(fresh=True))[0], waiter)
            if admitted:
                self.forget(waiter.run_id)
                self._reserved[waiter.run_id] = (waiter.agent, None)
            else:
                waiting = self._waiting.get(waiter.run_id)
                if waiting is None:
                    waiting = _Waiting(waiter, next(self._arrivals), self.clock())
                    self._waiting[waiter.run_id] = waiting
                waiting.waiter, waiting.seen = waiter, self.clock()
        if not admitted:
            yield False
            return
        try:
            yield True
        finally:  # held until a listing shows the container (if the block created one)
            self._reserved[waiter.run_id] = (waiter.agent, self._listings)

    def _decide(self, active: dict[str, str], waiter: Waiter) -> bool:
        self._offer(active, caller=waiter.run_id)
        return self._room(active, waiter, own_offer=True)

    def released(self) -> None:
        """A job container stopped or went away: offer its slot now rather than later."""
        if self._waiting:
            self._spawn(self._offer_now())

    def forget(self, run_id: str) -> None:
        self._waiting.pop(run_id, None)
        self._offers.pop(run_id, None)

    async def _offer_now(self) -> None:
        async with self._lock:
            self._offer((await self._view(fresh=True))[0])

    async def _view(self, fresh: bool = False) -> tuple[dict[str, str], bool]:
        """run id → agent of every job container holding a slot, and of every run admitted
        whose container a listing has not shown yet; and whether the engine was listed for it.
        `fresh`: list the engine now."""
        stale = self.clock() - self._listed_at > VIEW_SECONDS
        listing = fresh or self._listed is None or stale
        if listing:
            self._listings += 1
            begun = self._listings
            found: dict[str, str] = {}
            for item in await self.used():
                labels = item.get("Labels") or {}
                run_id = str(labels.get(LABEL_RUN_ID) or item.get("Id"))
                found[run_id] = str(labels.get(LABEL_AGENT))
            self._listed, self._listed_at = found, self.clock()
            for run_id, (_, done_at) in list(self._reserved.items()):
                if done_at is not None and done_at < begun:
                    del self._reserved[run_id]
        active = dict(self._listed or {})
        for run_id, (agent, _) in self._reserved.items():
            active.setdefault(run_id, agent)
        metrics.SLOTS_USED.set(len(active))
        return active, listing

    def _holders(self, active: dict[str, str], exclude: str | None) -> dict[str, str]:
        now = self.clock()
        for run_id, (_, expires) in list(self._offers.items()):
            if expires <= now:
                del self._offers[run_id]
        holders = dict(active)
        for run_id, (agent, _) in self._offers.items():
            if run_id != exclude:
                holders.setdefault(run_id, agent)
        return holders

    def _room(self, active: dict[str, str], waiter: Waiter, *, own_offer: bool) -> bool:
        holders = self._holders(active, waiter.run_id if own_offer else None)
        holders.pop(waiter.run_id, None)
        of_agent = sum(1 for agent in holders.values() if agent == waiter.agent)
        return len(holders) < self.max_jobs and of_agent < waiter.agent_max

    def _offer(self, active: dict[str, str], caller: str | None = None) -> None:
        """Free slots go to the waiters in arrival order, as far as their agents allow.

        The `caller` is asking in person: it needs no signal.
        """
        now = self.clock()
        for waiting in sorted(self._waiting.values(), key=lambda w: w.arrived):
            waiter = waiting.waiter
            if now - waiting.seen > STALE_SECONDS:
                self.forget(waiter.run_id)
                continue
            if waiter.run_id in self._offers or not self._room(active, waiter, own_offer=False):
                continue
            self._offers[waiter.run_id] = (waiter.agent, now + OFFER_SECONDS)
            if self.wake is not None and waiter.run_id != caller:
                self._spawn(self._signal(waiter))

    async def _signal(self, waiter: Waiter) -> None:
        delivered = False
        with contextlib.suppress(Exception):  # a lost offer only expires: the run re-checks
            assert self.wake is not None
            delivered = await self.wake(waiter)
        if not delivered:  # the run has ended (or Temporal is away: it asks again itself)
            self.forget(waiter.run_id)
            log.debug("slot offer not delivered", run_id=waiter.run_id)
            self.released()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
