"""Prep configuration: defaults mirror configs/prep/default.yaml, errors name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from eegfm.prep.config import (
    PrepConfig,
    PrepError,
    config_hash,
    load_prep_config,
    write_prep_config,
)

REPO = Path(__file__).resolve().parents[2]


def test_default_yaml_equals_builtin_defaults():
    assert load_prep_config(REPO / "configs/prep/default.yaml") == PrepConfig()
    assert load_prep_config(None) == PrepConfig()


def test_every_shipped_config_loads():
    for path in sorted((REPO / "configs/prep").glob("*.yaml")):
        load_prep_config(path)


def test_hash_changes_with_any_setting_and_round_trips(tmp_path):
    base = load_prep_config(None)
    assert config_hash(base) != config_hash(load_prep_config(None, lowpass_hz=40.0))
    write_prep_config(base, tmp_path / "prep_config.yaml")
    assert yaml.safe_load((tmp_path / "prep_config.yaml").read_text())[
        "config_hash"
    ] == config_hash(base)
    assert load_prep_config(tmp_path / "prep_config.yaml") == base


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lowpass_hz": 120.0}, "lowpass_hz"),
        ({"highpass_hz": 80.0}, "highpass_hz"),
        ({"reference": "linked_ears"}, "reference"),
        ({"sfreq": "fast"}, "sfreq"),
        ({"reader_options": [{"match": "*.cnt"}]}, "reader_options"),
        ({"no_such_key": 1}, "unknown key 'no_such_key'"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(PrepError, match=message):
        load_prep_config(None, **overrides)


def test_transition_follows_the_highpass_edge():
    assert load_prep_config(None).transition == 0.5
    assert load_prep_config(None, highpass_hz=0.1).transition == pytest.approx(0.1)
    assert load_prep_config(None, highpass_hz=None).transition == 2.0
