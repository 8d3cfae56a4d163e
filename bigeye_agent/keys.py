"""The mTLS files in `agent_config/`: an account CA and the client certificate it signs.

The names are the ones Bigeye's agents already use. The account's first host generates them;
every other host reuses a copy, byte for byte, because Bigeye trusts exactly one account CA.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bigeye_agent import files
from bigeye_agent import messages as m
from bigeye_agent.messages import CliError

AGENT_CONFIG_DIR = "agent_config"
CLIENT_CERT = "mtls.pem"
CLIENT_KEY = "mtls.key"
CA_CERT = "mtls_ca.pem"
CA_KEY = "mtls_ca.key"
SERVER_CA = "bigeye_workflows_ca.pem"
KEY_SET = (CLIENT_CERT, CLIENT_KEY, CA_CERT, CA_KEY)
PRIVATE = (CLIENT_KEY, CA_KEY)

CLIENT_COMMON_NAME = "bigeye-agent-orchestrator"
CA_COMMON_NAME = "Bigeye agent orchestrator account CA"
VALIDITY = timedelta(days=3650)
BACKDATE = timedelta(minutes=5)  # tolerate a little clock skew between host and Bigeye


@dataclass(frozen=True)
class Material:
    """The four key-set files, as bytes."""

    client_cert: bytes
    client_key: bytes
    ca_cert: bytes
    ca_key: bytes

    def by_name(self) -> dict[str, bytes]:
        return {
            CLIENT_CERT: self.client_cert,
            CLIENT_KEY: self.client_key,
            CA_CERT: self.ca_cert,
            CA_KEY: self.ca_key,
        }


def present(directory: Path) -> list[str]:
    """Which of the key-set files exist in `directory`."""
    return [name for name in KEY_SET if (directory / name).exists()]


def _pem_key(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def generate(now: datetime | None = None) -> Material:
    """A new account CA (EC P-256, 10 years) and a client certificate signed by it."""
    now = now or datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME)])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CLIENT_COMMON_NAME)]))
        .issuer_name(ca_name)
        .public_key(client_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(client_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return Material(
        client_cert=client.public_bytes(pem),
        client_key=_pem_key(client_key),
        ca_cert=ca.public_bytes(pem),
        ca_key=_pem_key(ca_key),
    )


def _certificate(path: Path, data: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise CliError(m.KEYS_UNREADABLE, path=path, what="PEM certificate", detail=exc) from None


def _private_key(path: Path, data: bytes) -> CertificateIssuerPrivateKeyTypes:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CliError(
            m.KEYS_UNREADABLE, path=path, what="unencrypted PEM private key", detail=detail
        ) from None
    return key  # type: ignore[return-value]


def _same_public_key(key: CertificateIssuerPrivateKeyTypes, cert: x509.Certificate) -> bool:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki)


def load(directory: Path) -> Material:
    """The complete key set of `directory`, checked to belong together."""
    data = {name: files.read_bytes(directory / name) for name in KEY_SET}
    client = _certificate(directory / CLIENT_CERT, data[CLIENT_CERT])
    ca = _certificate(directory / CA_CERT, data[CA_CERT])
    client_key = _private_key(directory / CLIENT_KEY, data[CLIENT_KEY])
    ca_key = _private_key(directory / CA_KEY, data[CA_KEY])
    if not _same_public_key(client_key, client):
        raise CliError(m.KEYS_MISMATCH, path=directory / CLIENT_KEY, certificate=CLIENT_CERT)
    if not _same_public_key(ca_key, ca):
        raise CliError(m.KEYS_MISMATCH, path=directory / CA_KEY, certificate=CA_CERT)
    try:
        client.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise CliError(m.KEYS_NOT_SIGNED, path=directory / CLIENT_CERT) from None
    return Material(data[CLIENT_CERT], data[CLIENT_KEY], data[CA_CERT], data[CA_KEY])


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 hex of the certificate's DER (how Bigeye names the account CA)."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def write(directory: Path, material: Material, owner: files.Owner) -> list[Path]:
    """Write the key set (keys 0600, certificates 0644); returns the paths written."""
    written = []
    for name, data in material.by_name().items():
        path = directory / name
        files.atomic_write(path, data, 0o600 if name in PRIVATE else 0o644, owner)
        written.append(path)
    return written
