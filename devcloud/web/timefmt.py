"""How the pages show moments and durations (the JSON keeps RFC 3339)."""

from __future__ import annotations

from datetime import datetime

from devcloud.health import parse_time


def _moment(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError:
        return None


def when(text: str | None) -> str:
    """`2025-01-01 12:00:05 UTC`, or `—`."""
    moment = _moment(text)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


def _span(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours // 24} days"


def ago(text: str | None, now: datetime) -> str:
    moment = _moment(text)
    return f"{_span((now - moment).total_seconds())} ago" if moment else "never"


def duration(started: str | None, finished: str | None) -> str:
    start, end = _moment(started), _moment(finished)
    return _span((end - start).total_seconds()) if start and end else "—"
