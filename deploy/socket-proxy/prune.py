"""Build step of the proxy image: keep only the project modules the proxy runs.

The project's wheel holds every package of the repository (the orchestrator, the CLI, the local
cloud). The proxy imports all it needs when it starts (`socketproxy.__main__` and
`socketproxy.server`, nothing lazily), so every project file that is not loaded then is removed,
and the image is checked to hold no third-party package the proxy does not import.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import socketproxy.__main__
import socketproxy.server

PROJECT = ("activities", "bigeye_agent", "devcloud", "orchestrator", "socketproxy", "workflows")
NOT_IN_THE_PROXY = ("temporalio", "aiodocker", "prometheus_client", "cryptography", "shtab")

site = Path(socketproxy.__file__).resolve().parent.parent
loaded = {
    Path(module.__file__).resolve()
    for module in list(sys.modules.values())
    if getattr(module, "__file__", None)
}
kept, removed = [], 0
for package in PROJECT:
    root = site / package
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_file() and (package == "socketproxy" or path.resolve() in loaded):
            kept.append(path.relative_to(site).as_posix())
        elif path.is_file():
            path.unlink()
            removed += 1
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()
present = [name for name in NOT_IN_THE_PROXY if importlib.util.find_spec(name) is not None]
if present:
    sys.exit(f"prune: the proxy image must not hold {', '.join(present)}")
print(f"prune: kept {len(kept)} project files, removed {removed}: {' '.join(sorted(kept))}")
