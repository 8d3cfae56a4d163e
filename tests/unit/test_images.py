"""Image references and registry credentials."""

from __future__ import annotations

from pathlib import Path

import pytest

from activities.images import registry_auth, split_reference
from orchestrator.hostconfig import RegistryConfig


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


def test_registry_auth_reads_the_password_file_for_images_on_that_registry(tmp_path: Path) -> None:
    (tmp_path / "agent_config").mkdir()
    (tmp_path / "agent_config" / "docker_token").write_text("s3cret\n")
    registry = RegistryConfig(
        server="docker.io", username="bigeyedata", password_file="agent_config/docker_token"
    )
    auth = registry_auth("docker.io/bigeyedata/datahealth:1", registry, tmp_path)
    assert auth == {"username": "bigeyedata", "password": "s3cret", "serveraddress": "docker.io"}
    assert registry_auth("bigeye-demo-agent:dev", registry, tmp_path) is None
    assert registry_auth("quay.io/x/y:1", registry, tmp_path) is None


def test_no_registry_section_means_anonymous_pulls(tmp_path: Path) -> None:
    assert registry_auth("docker.io/bigeyedata/datahealth:1", None, tmp_path) is None
    partial = RegistryConfig(server="docker.io", username="u")
    assert registry_auth("docker.io/bigeyedata/datahealth:1", partial, tmp_path) is None
