"""The bench's arithmetic and its table: pure, so the figures it prints are tested."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0…100): always one of the measured values."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil without floats drifting
    return ordered[int(rank) - 1]


def render_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A markdown table; every column but the first is right-aligned (they are figures)."""
    aligns = ["---"] + ["---:"] * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(aligns) + "|"]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells, table has {len(headers)} columns")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


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


TABLE_HEADERS = ("figure", "where", "baseline", "ours", "ours vs baseline", "target")


def table(rows: Sequence[Row]) -> str:
    return render_table(TABLE_HEADERS, [_cells(row) for row in rows])


def _cells(row: Row) -> list[str]:
    base = f"{fmt(row.baseline, row.unit)} ({row.baseline_name})" if row.baseline_name else "—"
    return [row.figure, row.where, base, fmt(row.ours, row.unit), row.comparison(), row.target]
