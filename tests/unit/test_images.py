"""Image references and registry credentials."""

from __future__ import annotations

from pathlib import Path

import pytest

from activities.agents import RegistryLogin, registry_login
from activities.images import pull_failed, registry_auth, split_reference
from orchestrator.hostconfig import HostConfig


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("docker.io/bigeyedata/lineage-plus:1.2", ("docker.io/bigeyedata/lineage-plus", "1.2")),
        ("bigeye-demo-agent:dev", ("bigeye-demo-agent", "dev")),
        ("bigeye-demo-agent", ("bigeye-demo-agent", "latest")),
        ("registry.local:5000/agent", ("registry.local:5000/agent", "latest")),
        ("registry.local:5000/agent:7", ("registry.local:5000/agent", "7")),
        ("docker.io/x/y@sha256:" + "a" * 64, ("docker.io/x/y@sha256:" + "a" * 64, None)),
    ],
)
def test_split_reference(image: str, expected: tuple[str, str | None]) -> None:
    assert split_reference(image) == expected


def login(image: str, registry: dict[str, str] | None, root: Path) -> RegistryLogin | None:
    host = HostConfig.model_validate({"registry": registry} if registry else {})
    return registry_login(image, host, root)


def test_registry_auth_reads_the_password_file_for_images_on_that_registry(tmp_path: Path) -> None:
    (tmp_path / "agent_config").mkdir()
    (tmp_path / "agent_config" / "docker_token").write_text("s3cret\n")
    registry = {
        "server": "docker.io",
        "username": "bigeyedata",
        "password_file": "agent_config/docker_token",
    }
    found = login("docker.io/bigeyedata/datahealth:1", registry, tmp_path)
    assert found is not None and "s3cret" not in found.model_dump_json()  # never in a plan
    auth = registry_auth(found)
    assert auth == {"username": "bigeyedata", "password": "s3cret", "serveraddress": "docker.io"}
    assert login("bigeye-demo-agent:dev", registry, tmp_path) is None
    assert login("quay.io/x/y:1", registry, tmp_path) is None


def test_no_registry_section_means_anonymous_pulls(tmp_path: Path) -> None:
    assert login("docker.io/bigeyedata/datahealth:1", None, tmp_path) is None
    partial = {"server": "docker.io", "username": "u"}
    assert login("docker.io/bigeyedata/datahealth:1", partial, tmp_path) is None
    assert registry_auth(None) is None


@pytest.mark.parametrize(
    ("detail", "permanent"),
    [
        ("manifest for x:1 not found: manifest unknown", True),
        ("pull access denied for x, repository does not exist", True),
        ("unauthorized: authentication required", True),
        ("invalid reference format", True),
        ('Get "https://127.0.0.1:9/v2/": dial tcp 127.0.0.1:9: connect: connection refused', False),
        ("received unexpected HTTP status: 503 Service Unavailable", False),
    ],
)
def test_pull_errors_that_a_retry_cannot_fix_are_permanent(detail: str, permanent: bool) -> None:
    error = pull_failed("x:1", detail)
    assert error.permanent is permanent
    assert str(error) == f"pull of x:1 failed: {detail}"
