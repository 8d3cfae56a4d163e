"""Certificates: devcloud's own CA and front certificate, and trust in the account CA.

devcloud keeps a CA in the state directory (created once, reused on restart) and issues the
mTLS front a fresh server certificate at every start, naming every address it advertises. The
account CA (a host's `agent_config/mtls_ca.pem`) is trusted with the first registered host;
every client certificate must then be issued by it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEVCLOUD_CA_CERT_FILE = "devcloud_ca.pem"
DEVCLOUD_CA_KEY_FILE = "devcloud_ca.key"
FRONT_CERT_FILE = "front.pem"
FRONT_KEY_FILE = "front.key"
CA_VALIDITY = timedelta(days=3650)
LEAF_VALIDITY = timedelta(days=825)
CLOCK_SKEW = timedelta(minutes=5)


class CertificateRejected(ValueError):
    """A certificate devcloud does not accept; `str()` is one line saying why."""


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @property
    def key_pem(self) -> str:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")


# ---- parsing and fingerprints --------------------------------------------------------------


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 hex of the certificate's DER."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def load_certificate(pem: str, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise CertificateRejected(f"{what} is not a PEM certificate") from None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return constraints.ca


def _check_validity(cert: x509.Certificate, what: str, now: datetime) -> None:
    if cert.not_valid_before_utc > now + CLOCK_SKEW:
        raise CertificateRejected(f"{what} is not valid before {cert.not_valid_before_utc}")
    if cert.not_valid_after_utc < now:
        raise CertificateRejected(f"{what} expired at {cert.not_valid_after_utc}")


def verify_issued_by(cert: x509.Certificate, ca: x509.Certificate, now: datetime) -> None:
    """The certificate names the CA as its issuer, carries its signature, and is in date."""
    if cert.issuer != ca.subject:
        raise CertificateRejected(
            f"client certificate issuer {cert.issuer.rfc4514_string()!r} is not the account CA "
            f"{ca.subject.rfc4514_string()!r}"
        )
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        raise CertificateRejected("client certificate is not signed by the account CA") from None
    _check_validity(cert, "client certificate", now)


@dataclass(frozen=True)
class TrustDecision:
    ca_pem: str
    ca_fingerprint: str
    client_cert_fingerprint: str
    newly_trusted: bool


def decide_trust(
    trusted_ca_pem: str | None,
    offered_ca_pem: str,
    client_cert_pem: str,
    now: datetime | None = None,
) -> TrustDecision:
    """Whether a registration's CA and client certificate are acceptable for this account.

    With no trusted CA yet, the offered CA (a CA certificate) becomes trusted; afterwards the
    offered CA must be the trusted one, byte for byte in DER. Either way the client certificate
    must be issued by it.
    """
    now = now or datetime.now(UTC)
    offered = load_certificate(offered_ca_pem, "client_ca_pem")
    client = load_certificate(client_cert_pem, "client_cert_pem")
    if trusted_ca_pem is None:
        if not _is_ca(offered):
            raise CertificateRejected("client_ca_pem is not a CA certificate")
        _check_validity(offered, "client_ca_pem", now)
        ca, newly = offered, True
    else:
        ca = load_certificate(trusted_ca_pem, "the trusted account CA")
        if fingerprint(offered) != fingerprint(ca):
            raise CertificateRejected(
                "client_ca_pem is not the account CA (SHA-256 " + fingerprint(ca) + "); copy the "
                "agent_config/ directory from a registered host"
            )
        newly = False
    verify_issued_by(client, ca, now)
    return TrustDecision(
        ca_pem=ca.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        ca_fingerprint=fingerprint(ca),
        client_cert_fingerprint=fingerprint(client),
        newly_trusted=newly,
    )


# ---- issuing -------------------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bigeye-cloud-dev"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def new_ca(common_name: str, now: datetime | None = None) -> KeyPair:
    now = now or datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert, key)


def issue_leaf(
    ca: KeyPair,
    common_name: str,
    *,
    server: bool,
    dns_names: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    now: datetime | None = None,
) -> KeyPair:
    """A server (serverAuth, with SANs) or client (clientAuth) certificate signed by `ca`."""
    now = now or datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return KeyPair(builder.sign(ca.key, hashes.SHA256()), key)


# ---- files ---------------------------------------------------------------------------------


def _write(path: Path, text: str, mode: int = 0o600) -> None:
    """Atomically; keys 0600, certificates (public) 0644."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} is not an EC private key")
    return key


def ensure_devcloud_ca(state_dir: Path) -> KeyPair:
    """devcloud's CA from the state directory, created on first use."""
    cert_path, key_path = state_dir / DEVCLOUD_CA_CERT_FILE, state_dir / DEVCLOUD_CA_KEY_FILE
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        return KeyPair(cert, _load_key(key_path))
    ca = new_ca("bigeye-cloud-dev CA")
    _write(key_path, ca.key_pem)
    _write(cert_path, ca.cert_pem, 0o644)
    return ca


def write_front_certificate(
    state_dir: Path, ca: KeyPair, dns_names: tuple[str, ...], ips: tuple[str, ...]
) -> tuple[Path, Path]:
    """A fresh server certificate for the front naming every advertised address: (cert, key)."""
    leaf = issue_leaf(ca, "bigeye-cloud-dev temporal front", server=True,
                      dns_names=dns_names, ips=ips)  # fmt: skip
    cert_path, key_path = state_dir / FRONT_CERT_FILE, state_dir / FRONT_KEY_FILE
    _write(key_path, leaf.key_pem)
    _write(cert_path, leaf.cert_pem + ca.cert_pem, 0o644)
    return cert_path, key_path
