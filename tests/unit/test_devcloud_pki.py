"""Trust in the account CA and devcloud's own certificates."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from devcloud import pki

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def account():
    ca = pki.new_ca("account CA")
    return ca, pki.issue_leaf(ca, "host-1", server=False)


def test_first_registration_trusts_its_ca(account):
    ca, client = account
    decision = pki.decide_trust(None, ca.cert_pem, client.cert_pem)
    assert decision.newly_trusted
    assert decision.ca_fingerprint == pki.fingerprint(ca.cert)
    assert decision.client_cert_fingerprint == pki.fingerprint(client.cert)
    assert len(decision.ca_fingerprint) == 64


def test_later_registration_with_the_same_ca(account):
    ca, _ = account
    other_host = pki.issue_leaf(ca, "host-2", server=False)
    decision = pki.decide_trust(ca.cert_pem, ca.cert_pem, other_host.cert_pem)
    assert not decision.newly_trusted


def test_another_ca_is_refused_once_one_is_trusted(account):
    ca, _ = account
    rogue = pki.new_ca("account CA")  # same name, other key
    with pytest.raises(pki.CertificateRejected, match="not the account CA"):
        pki.decide_trust(
            ca.cert_pem, rogue.cert_pem, pki.issue_leaf(rogue, "h", server=False).cert_pem
        )


def test_client_cert_of_a_ca_with_the_same_name_fails_the_signature_check(account):
    ca, _ = account
    impostor = pki.new_ca("account CA")
    forged = pki.issue_leaf(impostor, "host-1", server=False)
    assert forged.cert.issuer == ca.cert.subject
    with pytest.raises(pki.CertificateRejected, match="not signed by the account CA"):
        pki.decide_trust(ca.cert_pem, ca.cert_pem, forged.cert_pem)
    with pytest.raises(pki.CertificateRejected, match="not signed by the account CA"):
        pki.decide_trust(None, ca.cert_pem, forged.cert_pem)


def test_client_cert_of_another_issuer_name(account):
    ca, _ = account
    other = pki.new_ca("other CA")
    with pytest.raises(pki.CertificateRejected, match="issuer"):
        pki.decide_trust(ca.cert_pem, ca.cert_pem,
                         pki.issue_leaf(other, "h", server=False).cert_pem)  # fmt: skip


def test_a_leaf_cannot_become_the_account_ca(account):
    _, client = account
    with pytest.raises(pki.CertificateRejected, match="not a CA"):
        pki.decide_trust(None, client.cert_pem, client.cert_pem)


def test_expired_client_certificate(account):
    ca, _ = account
    old = pki.issue_leaf(ca, "h", server=False, now=NOW - timedelta(days=2000))
    with pytest.raises(pki.CertificateRejected, match="expired"):
        pki.decide_trust(ca.cert_pem, ca.cert_pem, old.cert_pem)


def test_garbage_is_not_a_certificate(account):
    ca, _ = account
    with pytest.raises(pki.CertificateRejected, match="client_cert_pem is not a PEM"):
        pki.decide_trust(None, ca.cert_pem, "hello")
    with pytest.raises(pki.CertificateRejected, match="client_ca_pem is not a PEM"):
        pki.decide_trust(None, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
                         "x")  # fmt: skip


def test_devcloud_ca_is_created_once_and_reused(tmp_path):
    ca = pki.ensure_devcloud_ca(tmp_path)
    assert (tmp_path / "devcloud_ca.key").stat().st_mode & 0o777 == 0o600
    again = pki.ensure_devcloud_ca(tmp_path)
    assert again.cert_pem == ca.cert_pem and again.key_pem == ca.key_pem


def test_front_certificate_names_every_advertised_address(tmp_path):
    ca = pki.ensure_devcloud_ca(tmp_path)
    cert_file, key_file = pki.write_front_certificate(
        tmp_path, ca, ("host.docker.internal", "localhost"), ("127.0.0.1", "172.17.0.1")
    )
    assert key_file.stat().st_mode & 0o777 == 0o600
    leaf = x509.load_pem_x509_certificates(cert_file.read_bytes())[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["host.docker.internal", "localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("172.17.0.1"),
    ]
    leaf.verify_directly_issued_by(ca.cert)
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in usage
    assert isinstance(leaf.signature_hash_algorithm, hashes.SHA256)
