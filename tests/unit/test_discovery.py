"""bigeye_agent/discovery.py: the installed agent set, from the file and agent_config/."""

from __future__ import annotations

from typing import Any

import yaml

from bigeye_agent.discovery import PUBLISHED_IMAGES, canonical, discover

LEGACY = """\
company_uuid: 1234
lineage:
  image: docker.io/bigeyedata/lineage-plus-connector:2.3.1
  connections: [snowflake]
external-monitors:
  image_tag: "1.9"
source:
  image: docker.io/bigeyedata/source:5
sds: {port: 8080}
crosssource:
  enabled: false
"""


def found(text: str, dirs: tuple[str, ...] = ()) -> dict[str, Any]:
    return {f.agent: f for f in discover(yaml.safe_load(text) or {}, dirs)}


def test_legacy_sections_and_directories_become_the_installed_set() -> None:
    agents = found(LEGACY, ("datahealth", "lineage", "sds", "unrelated"))
    assert list(agents) == ["lineage_plus", "datahealth", "external_monitors", "data_source", "sds"]

    lineage = agents["lineage_plus"]
    assert lineage.managed and not lineage.in_agent_set
    assert lineage.image == "docker.io/bigeyedata/lineage-plus-connector:2.3.1"
    assert lineage.config_dir == "agent_config/lineage"  # the directory the host already has
    assert "`lineage:` section" in lineage.why and "agent_config/lineage/" in lineage.why

    health = agents["datahealth"]  # only its directory: Bigeye's published image
    assert health.image == PUBLISHED_IMAGES["datahealth"] and health.config_dir is None
    assert "published" in health.why

    monitors = agents["external_monitors"]  # a tag alone: the published repository at that tag
    assert monitors.image == "docker.io/bigeyedata/external-monitors:1.9"

    for persistent in ("data_source", "sds"):
        assert not agents[persistent].managed and agents[persistent].image is None
    assert "cross_source" not in agents  # enabled: false


def test_the_agent_set_wins_over_legacy_sections() -> None:
    text = LEGACY + "agents:\n  lineage_plus: {image: reg/lineage:9, config_dir: conf/lp}\n"
    lineage = found(text, ("lineage",))["lineage_plus"]
    assert lineage.in_agent_set and lineage.image == "reg/lineage:9"
    assert lineage.config_dir == "conf/lp" and "agents:" in lineage.why


def test_a_config_dir_outside_the_host_directory_is_not_taken() -> None:
    text = "datahealth: {image: x, config_dir: ../../etc}\n"
    assert found(text)["datahealth"].config_dir is None


def test_nothing_installed_is_an_empty_set() -> None:
    assert discover({"company_uuid": 1}, ["mtls_ca_keys"]) == []


def test_names_the_field_has_used() -> None:
    assert canonical("Lineage") == "lineage_plus"
    assert canonical("external-monitors") == "external_monitors"
    assert canonical("crosssource") == "cross_source"
    assert canonical("source") == "data_source"
    assert canonical("mtls") is None


def test_descriptions_say_managed_or_not_and_why() -> None:
    agents = found(LEGACY, ("sds",))
    assert agents["lineage_plus"].describe().startswith("lineage_plus (Lineage Plus): managed")
    assert "runs on its own (not managed)" in agents["sds"].describe()
