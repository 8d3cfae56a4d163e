"""What is wrong with the mTLS files, one line per problem, naming the file (pure: bytes in).

Used by `bigeye-orchestrator check` (inside the stack) and `bigeye-agent diagnose` (on the
host). Never prints a key's content: only what a certificate says of itself (subject, dates,
fingerprints) and whether the pieces belong together.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

EXPIRY_WARNING: Final = timedelta(days=30)


@dataclass(frozen=True)
class Problem:
    path: Path
    text: str
    fatal: bool = True  # False: a warning (expiring soon)

    def __str__(self) -> str:
        return f"{self.path}: {self.text}"


def _certificate(path: Path, data: bytes | None) -> x509.Certificate | Problem:
    if data is None:
        return Problem(path, "missing: copy the agent_config/ directory from a registered host")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        return Problem(path, "not a PEM certificate: copy it again from a registered host")


def _key(path: Path, data: bytes | None) -> PrivateKeyTypes | Problem:
    if data is None:
        return Problem(path, "missing: copy the agent_config/ directory from a registered host")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        return Problem(path, "not an unencrypted PEM private key: copy it again")


def validity(path: Path, cert: x509.Certificate, now: datetime) -> list[Problem]:
    until = cert.not_valid_after_utc
    if cert.not_valid_before_utc > now:
        return [Problem(path, f"not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC: "
                              "check this machine's clock")]  # fmt: skip
    if until <= now:
        return [Problem(path, f"expired on {until:%Y-%m-%d}: renew the certificate")]
    if until - now <= EXPIRY_WARNING:
        days = (until - now).days
        return [Problem(path, f"expires on {until:%Y-%m-%d} (in {days} days): renew it soon",
                        fatal=False)]  # fmt: skip
    return []


def _public(cert_or_key: x509.Certificate | PrivateKeyTypes) -> bytes:
    public = cert_or_key.public_key()
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_tls(
    cert_path: Path,
    cert: bytes | None,
    key_path: Path,
    key: bytes | None,
    server_ca_path: Path,
    server_ca: bytes | None,
    account_ca_path: Path | None = None,
    account_ca: bytes | None = None,
    now: datetime | None = None,
) -> list[Problem]:
    """The client certificate, its key, the server CA and (when given) the account CA."""
    now = now or datetime.now(UTC)
    problems: list[Problem] = []
    client = _certificate(cert_path, cert)
    private = _key(key_path, key)
    server = _certificate(server_ca_path, server_ca)
    for item in (client, private, server):
        if isinstance(item, Problem):
            problems.append(item)
    if isinstance(client, x509.Certificate):
        problems += validity(cert_path, client, now)
        if not isinstance(private, Problem) and _public(private) != _public(client):
            text = f"is not the private key of {cert_path.name}: copy both from one host"
            problems.append(Problem(key_path, text))
    if isinstance(server, x509.Certificate):
        problems += validity(server_ca_path, server, now)
        if not _is_ca(server):
            text = "is not a CA certificate: re-run bigeye-agent register to fetch it again"
            problems.append(Problem(server_ca_path, text))
    if account_ca_path is not None and account_ca is not None:
        account = _certificate(account_ca_path, account_ca)
        if isinstance(account, Problem):
            problems.append(account)
        elif isinstance(client, x509.Certificate):
            problems += validity(account_ca_path, account, now)
            try:
                client.verify_directly_issued_by(account)
            except (ValueError, TypeError, InvalidSignature):
                problems.append(Problem(cert_path, f"is not signed by {account_ca_path.name} "
                                                   "(the account CA): copy agent_config/ from a "
                                                   "registered host of this account"))  # fmt: skip
    return problems


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None
