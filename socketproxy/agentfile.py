"""The agent set, read from `bigeye_agent.yml` and re-read when the file changes.

The proxy sees the host directory through a read-only mount of the directory (not of the file,
so that an atomic replace by `bigeye-agent sync` is seen). `current()` is called for every
request: it re-reads the file when its stat changed, and at most once a second otherwise (an edit
that keeps the size within one timestamp tick). The file is read with the project's one loader
(`orchestrator.hostconfig.load_host_config`), so the proxy and the orchestrator never disagree on
a value.

- No file at start-up: an empty agent set (every pull, image inspect and create is denied) and
  one line saying so.
- A file that cannot be read or is invalid: the last good agent set stays, and one line says why
  (once per distinct problem).
- An empty file is a write in progress (`write_text` truncates first): the last set stays.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import structlog

from orchestrator.hostconfig import ConfigError, load_host_config
from socketproxy.agentset import AgentSet

log = structlog.get_logger("bigeye.socketproxy")

RECHECK_SECONDS: Final = 1.0
_Stat = tuple[int, int, int, int, int]


_MISSING: Final = (0, 0, -1, 0, 0)
_UNREADABLE: Final = (0, 0, -2, 0, 0)


def _stat(path: Path) -> _Stat:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return _MISSING
    except OSError:
        return _UNREADABLE  # load_host_config says why
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


class AgentSetFile:
    def __init__(
        self,
        path: Path,
        host_dir: str,
        *,
        allow_loopback_registry: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.host_dir = host_dir
        self.allow_loopback_registry = allow_loopback_registry
        self._clock = clock
        self._agents = AgentSet()
        self._seen_stat: _Stat | None = None  # the file as last read (None: read it again)
        self._checked_at: float | None = None
        self._problem: str | None = None
        self._ever_loaded = False

    def current(self) -> AgentSet:
        """The agent set in force now (re-read first when the file may have changed)."""
        now = self._clock()
        stat = _stat(self.path)
        due = self._checked_at is None or now - self._checked_at >= RECHECK_SECONDS
        if stat != self._seen_stat or due:
            self._checked_at = now
            self._reload(stat)
        return self._agents

    def _reload(self, stat: _Stat) -> None:
        self._seen_stat = stat
        if stat == _MISSING:
            if not self._ever_loaded:
                self._note(
                    "no agent set: bigeye_agent.yml not found; every image pull, image inspect "
                    "and container create is denied until it appears"
                )
            else:
                self._note("bigeye_agent.yml is gone; keeping the last agent set read")
            return
        if stat[2] == 0:
            return  # being written: `write_text` truncates before it writes
        try:
            host = load_host_config(self.path)
        except ConfigError as exc:
            kept = "keeping the last agent set read" if self._ever_loaded else "no agent set"
            self._note(f"bigeye_agent.yml cannot be used ({kept}): {exc}")
            return
        agents = AgentSet.from_host_config(
            host, self.host_dir, allow_loopback_registry=self.allow_loopback_registry
        )
        if _stat(self.path) != stat:
            self._seen_stat = None  # changed while it was read: read it again next time
        self._problem = None
        if agents != self._agents or not self._ever_loaded:
            log.info(
                "agent set read",
                path=str(self.path),
                agents={name: rule.image for name, rule in agents.agents.items()},
            )
            for refusal in agents.refusals:
                log.warning("agent refused", reason=refusal)
        self._agents = agents
        self._ever_loaded = True

    def _note(self, problem: str) -> None:
        if problem != self._problem:
            self._problem = problem
            log.warning(problem, path=str(self.path))
