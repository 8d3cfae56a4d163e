"""Every failure line of bigeye-agent is in messages.py, and every one is in docs/migration.md."""

from __future__ import annotations

import re
from pathlib import Path

from bigeye_agent import messages
from orchestrator.contract import AGENT_TYPES

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "bigeye_agent"
GUIDE = ROOT / "docs" / "migration.md"


def constants() -> dict[str, str]:
    return {
        name: value
        for name, value in vars(messages).items()
        if name.isupper() and isinstance(value, str)
    }


def as_documented(template: str) -> str:
    return re.sub(r"\{(\w+)\}", r"<\1>", template)


def test_every_message_is_in_the_troubleshooting_table() -> None:
    guide = GUIDE.read_text()
    table = guide[guide.index("## 7. Troubleshooting") :]
    missing = [
        name for name, text in constants().items() if f"`{as_documented(text)}`" not in table
    ]
    assert not missing, f"add these messages to {GUIDE.name}'s troubleshooting table: {missing}"


def test_every_message_is_used_and_errors_only_use_messages() -> None:
    sources = {
        path.name: path.read_text() for path in PACKAGE.glob("*.py") if path.name != "messages.py"
    }
    code = "\n".join(sources.values())
    unused = [name for name in constants() if not re.search(rf"\bm(essages)?\.{name}\b", code)]
    assert not unused, f"messages never printed: {unused}"
    for name, text in sources.items():
        inline = re.findall(r"CliError\(\s*[rfb]?[\"']", text)
        assert not inline, f"{name}: put the failure text in messages.py, not inline"
        printed = re.findall(r"print\([^)]*file=sys\.stderr", text)
        assert len(printed) <= 2, f"{name}: failures go through CliError"


def test_messages_are_one_line_and_format_cleanly() -> None:
    for name, text in constants().items():
        assert "\n" not in text, name
        fields = {f: "x" for f in re.findall(r"\{(\w+)\}", text)}
        assert "\n" not in text.format(**fields), name


def test_required_wording() -> None:
    assert messages.NOT_ENABLED == (
        "Docker Compose mode is not enabled — re-run bigeye-agent register"
    )
    assert "copy the agent_config/ directory from a registered host" in messages.KEYS_COPY
    assert messages.ALREADY_REGISTERED.startswith("Host is already registered")
    assert messages.KEY_REJECTED.startswith("the API key was rejected")
    assert messages.NOT_ADMIN.startswith("an admin Personal API Key is required")
    assert "sudo usermod -aG docker $USER, then log in again" in messages.DOCKER_PERMISSION
    assert "install the Docker Compose V2 plugin" in messages.COMPOSE_NOT_V2
    assert "at most 256" in messages.INVALID_HOST_ID
    for agent in AGENT_TYPES:
        assert agent in messages.UNKNOWN_AGENT


def test_the_guide_covers_the_operator_steps() -> None:
    guide = GUIDE.read_text()
    for needle in (
        "bigeye-agent register --host-id",
        "bigeye-agent compose status",
        "bigeye-agent compose logs -s bigeye-agent-orchestrator",
        "agent_config/",
        "bigeye-agent compose down",
        "cp bigeye_agent.yml.bak-<ts> bigeye_agent.yml",
    ):
        assert needle in guide, needle
