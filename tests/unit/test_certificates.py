"""orchestrator/certificates.py: what is wrong with the mTLS files, naming the file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from bigeye_agent.keys import VALIDITY, generate
from orchestrator.certificates import check_tls

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
CERT, KEY = Path("agent_config/mtls.pem"), Path("agent_config/mtls.key")
SERVER, ACCOUNT = Path("agent_config/bigeye_workflows_ca.pem"), Path("agent_config/mtls_ca.pem")


def problems(**override: object) -> list[str]:
    account = generate(NOW)
    server = generate(NOW)  # any CA certificate will do for the server's
    given: dict[str, object] = {
        "cert": account.client_cert, "key": account.client_key, "server_ca": server.ca_cert,
        "account_ca": account.ca_cert, "now": NOW,
    }  # fmt: skip
    given.update(override)
    found = check_tls(CERT, given["cert"], KEY, given["key"], SERVER, given["server_ca"],  # type: ignore[arg-type]
                      ACCOUNT, given["account_ca"], now=given["now"])  # type: ignore[arg-type]  # fmt: skip
    return [f"{'' if p.fatal else 'warning: '}{p}" for p in found]


def test_a_sound_set_has_no_problem() -> None:
    assert problems() == []


def test_an_expired_certificate_and_one_about_to_expire() -> None:
    later = NOW + VALIDITY + timedelta(days=1)
    assert f"{CERT}: expired on" in problems(now=later)[0]
    soon = NOW + VALIDITY - timedelta(days=10)
    expiring = problems(now=soon)
    assert expiring and all(line.startswith("warning: ") for line in expiring)
    assert "expires on" in expiring[0] and "(in 10 days)" in expiring[0]


def test_a_key_of_another_certificate() -> None:
    other = generate(NOW)
    (line,) = problems(key=other.client_key)
    assert line == f"{KEY}: is not the private key of mtls.pem: copy both from one host"


def test_a_client_certificate_of_another_account() -> None:
    other = generate(NOW)
    (line,) = problems(account_ca=other.ca_cert)
    assert line.startswith(f"{CERT}: is not signed by mtls_ca.pem (the account CA)")


def test_a_server_ca_that_is_no_ca_and_missing_or_damaged_files() -> None:
    account = generate(NOW)
    assert problems(server_ca=account.client_cert) == [
        f"{SERVER}: is not a CA certificate: re-run bigeye-agent register to fetch it again"
    ]
    assert problems(key=None)[0].startswith(f"{KEY}: missing")
    assert problems(cert=b"-----BEGIN CERTIFICATE-----\nnope\n")[0].startswith(
        f"{CERT}: not a PEM certificate"
    )
