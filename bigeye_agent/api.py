"""The client of Bigeye's agent-orchestrator HTTP API (docs/devcloud-api.md), over urllib.

Every request carries `Authorization: apikey <key>`. Transport problems and answers that are
not JSON become one-line `CliError`s here; what a status means is up to each call.
"""

from __future__ import annotations

import getpass
import http.client
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bigeye_agent import messages as m
from bigeye_agent.logs import get_logger
from bigeye_agent.messages import CliError

log = get_logger(__name__)

DEFAULT_URL = "https://app.bigeye.com"
TIMEOUT_SECONDS = 60.0
VERIFY = "/api/v1/personal-api-keys/verify"
ME = "/api/v1/personal-api-keys/me"
ACCOUNT = "/api/v1/agent-orchestrator/account"
HOSTS = "/api/v1/agent-orchestrator/hosts"


def base_url(flag: str | None, env: Mapping[str, str], configured: str | None = None) -> str:
    """--bigeye-url, else BIGEYE_URL, else orchestrator.bigeye_url, else Bigeye's address."""
    url = (flag or env.get("BIGEYE_URL") or configured or DEFAULT_URL).strip()
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise CliError(m.BAD_URL, url=url)
    return url.rstrip("/")


def api_key(
    env: Mapping[str, str],
    prompt: Callable[[str], str] = getpass.getpass,
    interactive: bool | None = None,
) -> str:
    """BIGEYE_API_KEY, else a prompt on the terminal (no terminal: a one-line error)."""
    key = env.get("BIGEYE_API_KEY")
    if key is None:
        if not (sys.stdin.isatty() if interactive is None else interactive):
            raise CliError(m.NO_API_KEY)
        key = prompt("Bigeye admin Personal API Key: ")
    key = key.strip()
    if not key:
        raise CliError(m.EMPTY_API_KEY)
    return key


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any  # parsed JSON, or None for an empty body

    def message(self) -> str:
        if isinstance(self.body, dict) and isinstance(self.body.get("message"), str):
            return str(self.body["message"]).splitlines()[0] if self.body["message"] else "-"
        return "no message"


@dataclass(frozen=True)
class Account:
    hosts: int
    client_ca_fingerprint: str | None


@dataclass(frozen=True)
class Registration:
    host_id: str
    address: str
    namespace: str
    server_name: str | None
    server_ca_pem: str


class BigeyeApi:
    def __init__(self, url: str, key: str, timeout: float = TIMEOUT_SECONDS) -> None:
        self.url = url.rstrip("/")
        self._key = key
        self._timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> Answer:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"apikey {self._key}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except urllib.error.URLError as exc:
            raise CliError(m.CANNOT_CONNECT, url=self.url, detail=_reason(exc.reason)) from None
        except (OSError, http.client.HTTPException) as exc:
            raise CliError(m.CANNOT_CONNECT, url=self.url, detail=_reason(exc)) from None
        log.debug("bigeye api", method=method, path=path, status=status)
        if not raw.strip():
            return Answer(status, None)
        try:
            return Answer(status, json.loads(raw))
        except (ValueError, UnicodeDecodeError):
            raise CliError(
                m.NOT_JSON, url=self.url, method=method, path=path, status=status
            ) from None

    def _fail(self, method: str, path: str, answer: Answer) -> CliError:
        """The error for a status no call expects (401 and 403 mean the same everywhere)."""
        if answer.status == 401:
            return CliError(m.KEY_REJECTED, url=self.url)
        if answer.status == 403:
            return CliError(m.NOT_ADMIN, role="not admin")
        return CliError(
            m.UNEXPECTED_ANSWER,
            method=method,
            path=path,
            status=answer.status,
            detail=answer.message(),
        )

    def verify_key(self) -> None:
        answer = self.request("GET", VERIFY)
        if answer.status not in (200, 204):
            raise self._fail("GET", VERIFY, answer)

    def role(self) -> str:
        answer = self.request("GET", ME)
        if answer.status != 200:
            raise self._fail("GET", ME, answer)
        role = answer.body.get("role") if isinstance(answer.body, dict) else None
        if not isinstance(role, str):
            raise CliError(m.BAD_ANSWER, method="GET", path=ME, field="role")
        return role

    def require_admin(self) -> None:
        role = self.role()
        if role != "admin":
            raise CliError(m.NOT_ADMIN, role=role)

    def account(self) -> Account:
        answer = self.request("GET", ACCOUNT)
        if answer.status != 200:
            raise self._fail("GET", ACCOUNT, answer)
        body = answer.body if isinstance(answer.body, dict) else {}
        hosts, fingerprint = body.get("hosts"), body.get("client_ca_fingerprint")
        if not isinstance(hosts, int) or isinstance(hosts, bool) or hosts < 0:
            raise CliError(m.BAD_ANSWER, method="GET", path=ACCOUNT, field="hosts")
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise CliError(m.BAD_ANSWER, method="GET", path=ACCOUNT, field="client_ca_fingerprint")
        return Account(hosts, fingerprint or None)

    def register_host(self, request: dict[str, Any]) -> Registration:
        answer = self.request("POST", HOSTS, request)
        if answer.status == 409:
            raise CliError(m.ALREADY_REGISTERED, host_id=request["host_id"])
        if answer.status in (400, 422):
            raise CliError(m.REGISTER_REJECTED, host_id=request["host_id"], detail=answer.message())
        if answer.status not in (200, 201):
            raise self._fail("POST", HOSTS, answer)
        return _registration(answer.body, request["host_id"])

    def put_agents(self, host_id: str, agents: list[str], installed: list[str]) -> None:
        path = f"{HOSTS}/{urllib.parse.quote(host_id, safe='')}/agents"
        body = {"managed_agents": agents, "installed_agents": installed}
        answer = self.request("PUT", path, body)
        if answer.status == 404:
            raise CliError(m.HOST_UNKNOWN, host_id=host_id, url=self.url)
        if answer.status != 200:
            raise self._fail("PUT", path, answer)


def _reason(reason: object) -> str:
    text = str(reason).strip() or type(reason).__name__
    return text.splitlines()[0]


def _registration(body: Any, host_id: str) -> Registration:
    def bad(field: str) -> CliError:
        return CliError(m.BAD_ANSWER, method="POST", path=HOSTS, field=field)

    if not isinstance(body, dict):
        raise bad("body")
    temporal = body.get("temporal")
    if not isinstance(temporal, dict):
        raise bad("temporal")
    address, namespace = temporal.get("address"), temporal.get("namespace") or "default"
    server_name = temporal.get("server_name")
    ca = body.get("server_ca_pem")
    if not isinstance(address, str) or not address:
        raise bad("temporal.address")
    if not isinstance(namespace, str):
        raise bad("temporal.namespace")
    if server_name is not None and not isinstance(server_name, str):
        raise bad("temporal.server_name")
    if not isinstance(ca, str) or "BEGIN CERTIFICATE" not in ca:
        raise bad("server_ca_pem")
    return Registration(
        host_id=str(body.get("host_id") or host_id),
        address=address,
        namespace=namespace,
        server_name=server_name or None,
        server_ca_pem=ca,
    )
