"""keys: the account CA and client certificate; reuse byte for byte; broken sets refused."""

from __future__ import annotations

import hashlib
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bigeye_agent import keys
from bigeye_agent.messages import CliError

OWNER = (os.getuid(), os.getgid())


def test_generated_ca_and_client_certificate() -> None:
    now = datetime(2026, 11, 27, 19, 30, tzinfo=UTC)
    material = keys.generate(now)
    ca = x509.load_pem_x509_certificate(material.ca_cert)
    client = x509.load_pem_x509_certificate(material.client_cert)

    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert ca.not_valid_after_utc - now >= timedelta(days=3650)
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]

    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "bigeye-agent-orchestrator"
    )
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not client.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    client.verify_directly_issued_by(ca)
    assert client.not_valid_before_utc <= now <= client.not_valid_after_utc

    der = ca.public_bytes(serialization.Encoding.DER)
    assert keys.fingerprint(material.ca_cert) == hashlib.sha256(der).hexdigest()
    assert b"ENCRYPTED" not in material.client_key


def test_write_modes_and_load_round_trip(tmp_path: Path) -> None:
    material = keys.generate()
    keys.write(tmp_path, material, OWNER)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {
        "mtls.pem": 0o644,
        "mtls.key": 0o600,
        "mtls_ca.pem": 0o644,
        "mtls_ca.key": 0o600,
    }
    assert keys.load(tmp_path) == material
    assert keys.present(tmp_path) == list(keys.KEY_SET)


def test_existing_files_load_byte_for_byte(tmp_path: Path) -> None:
    material = keys.generate()
    # files written by some other tool: odd trailing whitespace, other modes
    for name, data in material.by_name().items():
        (tmp_path / name).write_bytes(data + b"\n\n")
    loaded = keys.load(tmp_path)
    assert loaded.client_key == material.client_key + b"\n\n"


def test_a_key_that_does_not_match_is_refused(tmp_path: Path) -> None:
    one, other = keys.generate(), keys.generate()
    keys.write(tmp_path, one, OWNER)
    (tmp_path / "mtls.key").write_bytes(other.client_key)
    with pytest.raises(CliError, match=r"mtls\.key is not the private key of mtls\.pem"):
        keys.load(tmp_path)


def test_a_client_certificate_of_another_ca_is_refused(tmp_path: Path) -> None:
    one, other = keys.generate(), keys.generate()
    keys.write(tmp_path, one, OWNER)
    (tmp_path / "mtls.pem").write_bytes(other.client_cert)
    (tmp_path / "mtls.key").write_bytes(other.client_key)
    with pytest.raises(CliError, match=r"mtls\.pem is not signed by mtls_ca\.pem"):
        keys.load(tmp_path)


@pytest.mark.parametrize(
    ("name", "data", "what"),
    [
        ("mtls.pem", b"not a certificate", "PEM certificate"),
        ("mtls_ca.key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "key"),
    ],
)
def test_unreadable_files_are_one_line(tmp_path: Path, name: str, data: bytes, what: str) -> None:
    keys.write(tmp_path, keys.generate(), OWNER)
    (tmp_path / name).write_bytes(data)
    with pytest.raises(CliError, match=what) as info:
        keys.load(tmp_path)
    assert "\n" not in str(info.value)
    assert "copy the agent_config/ directory from a registered host" in str(info.value)


def test_present_reports_partial_sets(tmp_path: Path) -> None:
    assert keys.present(tmp_path / "missing") == []
    (tmp_path / "mtls.pem").write_text("x")
    assert keys.present(tmp_path) == ["mtls.pem"]
