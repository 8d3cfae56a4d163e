"""HTML for browsers, JSON for `Accept: application/json`."""

from __future__ import annotations

from aiohttp import web

_HTML_TYPES = ("text/html", "application/xhtml+xml")


def _quality(part: str) -> tuple[str, float]:
    media, *params = (p.strip() for p in part.split(";"))
    q = 1.0
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value)
            except ValueError:
                q = 0.0
    return media.lower(), q


def wants_json(request: web.Request) -> bool:
    """Whether the client ranks `application/json` above HTML (a browser's `*/*` does not)."""
    json_q = html_q = 0.0
    for part in request.headers.get("Accept", "").split(","):
        if not part.strip():
            continue
        media, q = _quality(part)
        if media == "application/json":
            json_q = max(json_q, q)
        elif media in _HTML_TYPES:
            html_q = max(html_q, q)
    return json_q > 0 and json_q > html_q
