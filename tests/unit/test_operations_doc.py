"""docs/operations.md describes every log event and every metric the orchestrator emits."""

from __future__ import annotations

import ast
from pathlib import Path

from orchestrator import metrics

ROOT = Path(__file__).resolve().parents[2]
GUIDE = (ROOT / "docs" / "operations.md").read_text()
LEVELS = {"info", "warning", "error", "debug"}


def log_events() -> set[str]:
    """The literal event names of the daemon's log calls (and of its outage reports)."""
    found: set[str] = set()
    for path in [*(ROOT / "orchestrator").glob("*.py"), *(ROOT / "activities").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in LEVELS:
                first = node.args[0]
                options = [first.body, first.orelse] if isinstance(first, ast.IfExp) else [first]
            elif isinstance(func, ast.Name) and func.id == "Outage":
                options = list(node.args[1:])
            else:
                continue
            found |= {o.value for o in options if isinstance(o, ast.Constant)
                      and isinstance(o.value, str)}  # fmt: skip
    return found


def test_every_log_event_is_in_the_guide() -> None:
    events = log_events()
    assert len(events) > 30
    missing = sorted(e for e in events if f"`{e}`" not in GUIDE)
    assert not missing, f"describe these log events in docs/operations.md: {missing}"


def test_every_metric_is_in_the_guide() -> None:
    names = {
        sample_family.name + ("_total" if sample_family.type == "counter" else "")
        for sample_family in metrics.REGISTRY.collect()
    }
    missing = sorted(n for n in names if f"`{n}`" not in GUIDE)
    assert not missing, f"describe these metrics in docs/operations.md: {missing}"
