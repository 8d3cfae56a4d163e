"""yamledit: only the changed keys' characters change; every other byte stays as it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bigeye_agent.yamledit import YamlEditError, apply, flow, verify
from orchestrator.hostconfig import parse_host_config

TEMPORAL = {"address": "t.example:443", "namespace": "default", "server_name": None}
REGISTER = {
    "docker_compose_enabled": True,
    "orchestrator": {"host_id": "h1", "instance_id": "i-1", "temporal": TEMPORAL},
}
REGISTER_TAIL = (
    "docker_compose_enabled: true\n"
    "orchestrator:\n"
    "{i}host_id: h1\n"
    "{i}instance_id: i-1\n"
    "{i}temporal: {{address: 't.example:443', namespace: default, server_name: null}}\n"
)


def edit(text: str, updates: dict[str, Any]) -> str:
    new = apply(text, updates)
    verify(text, new, updates)
    parse_host_config(new, Path("bigeye_agent.yml"))
    return new


def test_fresh_file() -> None:
    updates = {**REGISTER, "agents": {"datahealth": {"image": "img:1"}}}
    assert edit("", updates) == REGISTER_TAIL.format(i="  ") + (
        "agents:\n  datahealth: {image: 'img:1'}\n"
    )


def test_comments_quoting_and_unrelated_keys_are_kept() -> None:
    text = (
        "# header comment\n"
        "\n"
        "source_db:            # another agent's settings\n"
        "  host: 'db.internal'   # quoted\n"
        '  password_file: "agent_config/pw"\n'
        "  ports: [5432, 5433]\n"
        "description: >\n"
        "  folded text\n"
        "  over lines\n"
        "\n"
        "# footer comment\n"
    )
    lines = text.splitlines(keepends=True)
    # a block scalar's trailing blank lines belong to it: the new keys go after them
    assert edit(text, REGISTER) == "".join(lines[:10]) + REGISTER_TAIL.format(i="  ") + lines[10]


@pytest.mark.parametrize("indent", [3, 4])
def test_the_file_indentation_is_used(indent: int) -> None:
    pad = " " * indent
    text = f"agents:\n{pad}lineage_plus:\n{pad}{pad}image: x\n{pad}{pad}memory: 25g\nother: 1\n"
    updates = {**REGISTER, "agents": {"datahealth": {"image": "y"}}}
    assert edit(text, updates) == (
        f"agents:\n{pad}lineage_plus:\n{pad}{pad}image: x\n{pad}{pad}memory: 25g\n"
        f"{pad}datahealth: {{image: y}}\n"
        "other: 1\n" + REGISTER_TAIL.format(i=pad)
    )


def test_existing_block_orchestrator_keeps_its_other_keys_and_comments() -> None:
    text = (
        "orchestrator:\n"
        "  # pinned by ops\n"
        "  image: registry.local/orch:1   # mirror\n"
        '  host_id: "old"\n'
        "  temporal:\n"
        "    namespace: default\n"
        "docker_compose_enabled: false  # not yet\n"
    )
    assert edit(text, REGISTER) == (
        "orchestrator:\n"
        "  # pinned by ops\n"
        "  image: registry.local/orch:1   # mirror\n"
        "  host_id: h1\n"
        "  temporal:\n"
        "    namespace: default\n"
        "    address: 't.example:443'\n"
        "    server_name: null\n"
        "  instance_id: i-1\n"
        "docker_compose_enabled: true  # not yet\n"
    )


def test_values_already_right_are_not_touched() -> None:
    text = (
        "docker_compose_enabled: yes\n"
        "orchestrator:\n"
        "  host_id: 'h1'\n"
        '  instance_id: "i-1"\n'
        '  temporal: {address: "t.example:443", namespace: default, server_name: ~}\n'
    )
    assert edit(text, REGISTER) == text


def test_flow_mappings_are_edited_in_place() -> None:
    text = (
        "orchestrator: {host_id: old, image: x}   # one line\n"
        "agents: {lineage_plus: {image: a, memory: 25g}, datahealth: {image: old, cpus: 2}}\n"
    )
    updates = {
        **REGISTER,
        "agents": {"datahealth": {"image": "new"}, "external_monitors": {"image": "e"}},
    }
    assert edit(text, updates) == (
        "orchestrator: {host_id: h1, image: x, instance_id: i-1, temporal: {address: "
        "'t.example:443', namespace: default, server_name: null}}   # one line\n"
        "agents: {lineage_plus: {image: a, memory: 25g}, datahealth: {image: new, cpus: 2}, "
        "external_monitors: {image: e}}\n"
        "docker_compose_enabled: true\n"
    )


def test_an_agent_with_another_image_gets_just_its_image_replaced() -> None:
    text = (
        "agents:\n"
        "  datahealth:\n"
        '    image: "docker.io/bigeyedata/datahealth:1"   # pinned\n'
        "    env: {MODE: 'yes'}\n"
        "  lineage_plus: {image: lp, memory: 25g}\n"
    )
    updates = {"agents": {"datahealth": {"image": "docker.io/bigeyedata/datahealth:2"}}}
    assert edit(text, updates) == text.replace(':1"', "").replace(
        '"docker.io/bigeyedata/datahealth   # pinned',
        "'docker.io/bigeyedata/datahealth:2'   # pinned",
    )


def test_crlf_line_endings_are_kept() -> None:
    text = "# windows\r\nsource: {a: 1}\r\nagents:\r\n  lineage_plus: {image: a}\r\n"
    updates = {**REGISTER, "agents": {"datahealth": {"image": "d"}}}
    new = edit(text, updates)
    assert new == text + "  datahealth: {image: d}\r\n" + REGISTER_TAIL.format(i="  ").replace(
        "\n", "\r\n"
    ).replace("  datahealth", "")
    assert "\n" not in new.replace("\r\n", "")


def test_crlf_insertion_in_the_middle() -> None:
    text = "agents:\r\n  lineage_plus: {image: a}\r\nother: 1\r\n"
    new = edit(text, {"agents": {"datahealth": {"image": "d"}}})
    assert (
        new == "agents:\r\n  lineage_plus: {image: a}\r\n  datahealth: {image: d}\r\nother: 1\r\n"
    )


def test_no_trailing_newline_stays_without_one() -> None:
    text = "source: 1\nagents:\n  lineage_plus: {image: a}"
    new = edit(text, {**REGISTER, "agents": {"datahealth": {"image": "d"}}})
    assert new == (
        "source: 1\nagents:\n  lineage_plus: {image: a}\n  datahealth: {image: d}\n"
        + REGISTER_TAIL.format(i="  ").rstrip("\n")
    )
    assert edit("docker_compose_enabled: false", {"docker_compose_enabled": True}) == (
        "docker_compose_enabled: true"
    )


def test_empty_values_become_blocks_under_their_key() -> None:
    text = "orchestrator:\nagents:    # none yet\n# end\n"
    new = edit(text, {**REGISTER, "agents": {"datahealth": {"image": "d"}}})
    assert new == (
        "orchestrator:\n"
        "  host_id: h1\n"
        "  instance_id: i-1\n"
        "  temporal: {address: 't.example:443', namespace: default, server_name: null}\n"
        "agents:    # none yet\n"
        "  datahealth: {image: d}\n"
        "docker_compose_enabled: true\n"
        "# end\n"
    )


def test_null_and_empty_flow_values() -> None:
    text = "agents: {}   # later\norchestrator: ~\n"
    new = edit(text, {**REGISTER, "agents": {"datahealth": {"image": "d"}}})
    assert new == (
        "agents: {datahealth: {image: d}}   # later\n"
        "orchestrator: {host_id: h1, instance_id: i-1, temporal: {address: 't.example:443', "
        "namespace: default, server_name: null}}\n"
        "docker_compose_enabled: true\n"
    )


def test_block_scalar_before_the_insertion_point() -> None:
    text = (
        "agents:\n  lineage_plus:\n    image: a\n    env:\n"
        "      NOTE: |\n        two\n        lines\n\nz: 1\n"
    )
    new = edit(text, {"agents": {"datahealth": {"image": "d"}}})
    assert new == text.replace("\n\nz: 1", "\n\n  datahealth: {image: d}\nz: 1")


def test_document_start_marker_and_comments_only() -> None:
    assert edit("---\nsource: 1\n", {"docker_compose_enabled": True}) == (
        "---\nsource: 1\ndocker_compose_enabled: true\n"
    )
    assert edit("# nothing yet\n", {"docker_compose_enabled": True}) == (
        "# nothing yet\ndocker_compose_enabled: true\n"
    )


def test_duplicate_keys_edit_the_one_the_loader_keeps() -> None:
    text = "docker_compose_enabled: false\ndocker_compose_enabled: false\n"
    new = apply(text, {"docker_compose_enabled": True})
    verify(text, new, {"docker_compose_enabled": True})
    assert new == "docker_compose_enabled: false\ndocker_compose_enabled: true\n"


def test_aliases_are_refused() -> None:
    text = "base: &b {image: a}\nagents:\n  datahealth: *b\n"
    with pytest.raises(YamlEditError, match=r"agents\.datahealth is an alias"):
        apply(text, {"agents": {"datahealth": {"image": "new"}}})


def test_an_edit_through_an_anchor_fails_verification() -> None:
    text = "agents: &a\n  datahealth: {image: x}\ncopy: *a\n"
    updates = {"agents": {"datahealth": {"image": "y"}}}
    new = apply(text, updates)
    with pytest.raises(YamlEditError, match="copy"):
        verify(text, new, updates)


def test_unsupported_shapes_are_refused() -> None:
    with pytest.raises(YamlEditError, match="block mapping"):
        apply("{a: 1}\n", {"docker_compose_enabled": True})
    with pytest.raises(YamlEditError, match="is a list"):
        apply("agents: [a, b]\n", {"agents": {"datahealth": {"image": "d"}}})
    with pytest.raises(YamlEditError, match="not valid YAML"):
        apply("a: [\n", {"docker_compose_enabled": True})


@pytest.mark.parametrize(
    "value",
    ["plain", "with: colon", "yes", "", "12", "#hash", "multi\nline", "tab\there", "ünïcode", None],
)
def test_flow_scalars_round_trip(value: Any) -> None:
    assert yaml.safe_load(f"k: {flow(value)}") == {"k": value}
    assert yaml.safe_load(f"k: {{x: {flow(value)}}}") == {"k": {"x": value}}
