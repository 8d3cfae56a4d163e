"""The bench's arithmetic and its table: pure, so the figures it prints are tested."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (p50 of [1, 2, 3, 4] is 2): every figure is a measured one."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Row:
    """One line of the table: ours and the baseline measured in the same run."""

    figure: str
    where: str  # "in-process" (Docker socket direct) or "stack" (through the socket proxy)
    baseline_name: str
    baseline: float | None
    ours: float
    unit: str
    target: str
    kind: str = "ratio"  # "ratio": ours / baseline; "delta": ours - baseline; "plain"

    def comparison(self) -> str:
        if self.baseline is None or self.kind == "plain":
            return "—"
        if self.kind == "delta":
            delta = self.ours - self.baseline
            return f"{delta:+.{_digits(self.unit, delta)}f} {self.unit}"
        if self.baseline == 0:
            return "—"
        return f"{self.ours / self.baseline:.2f}x"


def _digits(unit: str, value: float) -> int:
    if unit == "ms":
        return 0 if abs(value) >= 10 else 1  # a sub-10 ms figure keeps its tenth
    return 0 if unit in ("MB", "MiB", "lines") else 2


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    return f"{value:.{_digits(unit, value)}f} {unit}"


def table(rows: Sequence[Row]) -> str:
    lines = [
        "| figure | where | baseline | ours | ours vs baseline | target |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        base = f"{fmt(row.baseline, row.unit)} ({row.baseline_name})" if row.baseline_name else "—"
        lines.append(
            f"| {row.figure} | {row.where} | {base} | {fmt(row.ours, row.unit)} | "
            f"{row.comparison()} | {row.target} |"
        )
    return "\n".join(lines)
