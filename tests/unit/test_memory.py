"""orchestrator/memory.py: freed heap given back to the system."""

from __future__ import annotations

from pathlib import Path

from orchestrator import memory


def resident_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_memory_freed_after_a_burst_is_given_back() -> None:
    memory.release_freed_memory()
    before = resident_kib()
    # a burst of buffers (as a burst of jobs leaves), then freed; one still in use above them
    # keeps glibc from shrinking its heap by itself
    burst = [bytearray(4096) for _ in range(25_000)]
    still_used = bytearray(4096)
    grown = resident_kib()
    del burst
    kept = resident_kib()
    memory.release_freed_memory()
    assert memory._trim is not None  # glibc, as in the image and on Debian
    assert grown - before > 50_000
    assert kept - before > 50_000  # freed, but still resident
    assert resident_kib() < kept - 40_000, (before, grown, kept, resident_kib())
    assert len(still_used) == 4096
