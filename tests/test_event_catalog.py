"""The AsyncAPI catalog (docs/asyncapi.yaml) lists exactly the topics services declare."""

from __future__ import annotations

from pathlib import Path

import yaml  # type: ignore[import-untyped]

from aether_devstack.catalog import load_services

ROOT = Path(__file__).resolve().parents[1]


def test_every_declared_topic_is_documented_and_nothing_else() -> None:
    catalog = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())
    documented = {channel["address"] for channel in catalog["channels"].values()}
    declared = {t.name for spec in load_services(ROOT / "services") for t in spec.topics}
    assert declared, "no service declares a topic"
    assert documented == declared, {
        "undocumented": sorted(declared - documented),
        "not declared": sorted(documented - declared),
    }
