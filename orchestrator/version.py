"""The orchestrator's version: the installed distribution's, so images and labels agree."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("bigeye-agent-orchestrator")
except PackageNotFoundError:  # a source checkout that was never installed
    VERSION = "0.0.0+unknown"
