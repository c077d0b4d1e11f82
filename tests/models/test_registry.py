"""Registry: names, factories, YAML mirrors and parameter counts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from eegfm.models import create_model, list_models, model_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "model"
EXPECTED_PARAMS_M = {"eegfm_tiny": (0.1, 0.2), "eegfm_small": (4.5, 7.0),
                     "eegfm_base": (25, 35), "eegfm_large": (130, 180)}


def test_list_models_names_the_four_sizes():
    assert list_models() == ["eegfm_tiny", "eegfm_small", "eegfm_base", "eegfm_large"]


@pytest.mark.parametrize("name", ["eegfm_tiny", "eegfm_small", "eegfm_base", "eegfm_large"])
def test_yaml_mirrors_factory_and_parameter_count(name):
    path = CONFIG_DIR / f"{name.removeprefix('eegfm_')}.yaml"
    config = yaml.safe_load(path.read_text())
    assert config.pop("name") == name
    assert config == model_config(name), f"{path} and the {name} factory disagree"
    with torch.device("meta"):  # count parameters without allocating them
        model = create_model(name, **config)
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    low, high = EXPECTED_PARAMS_M[name]
    assert low <= n_params <= high, f"{name}: {n_params:.2f} M parameters"


def test_unknown_names_and_options_are_rejected():
    with pytest.raises(ValueError, match="eegfm_tiny"):
        create_model("eegfm_huge")
    with pytest.raises(ValueError, match="depthh"):
        create_model("eegfm_tiny", depthh=3)
    with pytest.raises(ValueError, match=r"no classifier.*create_head"):
        create_model("eegfm_tiny", num_classes=2)  # the classifier is a head now


def test_overrides_reach_the_model():
    model = create_model("eegfm_tiny", depth=1, knn_k=8)
    assert len(model.blocks) == 1 and model.knn_k == 8
