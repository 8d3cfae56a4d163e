"""The CLI's side of the HTTP API: the running server's `api_url` and its service key."""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from devcloud import keys, state
from devcloud.errors import DevcloudError

CONNECT_TIMEOUT_SECONDS = 10.0
ORCHESTRATOR = "/api/v1/agent-orchestrator"


class ApiRejected(DevcloudError):
    """The API answered with an error status; `str()` is its message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ApiClient:
    def __init__(self, base_url: str, key: str) -> None:
        self._base_url = base_url.rstrip("/")
        self._key = key
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def for_state_dir(cls, state_dir: Path) -> ApiClient:
        """The running local cloud's API with the server's admin service key."""
        endpoints = state.require_endpoints(state_dir)
        key = keys.read_service_key(state_dir)
        if not endpoints.api_url or not key:
            raise DevcloudError(
                f"the local cloud in {state_dir} has no HTTP API; restart it with: "
                f"bigeye-cloud-dev server --state-dir {state_dir}"
            )
        return cls(endpoints.api_url, key)

    async def __aenter__(self) -> ApiClient:
        # No total timeout: `?wait=true` lasts as long as the run.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_SECONDS)
        self._session = aiohttp.ClientSession(
            timeout=timeout, headers={"Authorization": f"apikey {self._key}"}
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        """The answer's JSON (None for an empty body); ApiRejected on 4xx/5xx."""
        assert self._session is not None, "use `async with ApiClient(...)`"
        url = f"{self._base_url}{path}"
        try:
            async with self._session.request(method, url, json=body, params=params) as response:
                text = await response.text()
                status = response.status
        except aiohttp.ClientError as exc:
            raise DevcloudError(f"cannot reach the local cloud's API at {url}: {exc}") from None
        data = _json(text)
        if status >= 400:
            message = data.get("message") if isinstance(data, dict) else None
            raise ApiRejected(status, str(message or f"HTTP {status}: {text.strip()[:200]}"))
        return data


def _json(text: str) -> Any:
    try:
        return json.loads(text) if text.strip() else None
    except ValueError:
        return None
