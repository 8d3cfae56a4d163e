"""The one error type the CLI turns into a one-line message and exit code 1."""

from __future__ import annotations


class DevcloudError(RuntimeError):
    """A failure the user can act on; `str()` is one line saying what and, where known, the fix."""
