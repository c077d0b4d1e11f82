"""Fine-tuning configs: every shipped YAML parses; bad keys and types are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from eegfm.config import ConfigError
from eegfm.training.finetune.config import load_finetune_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "finetune").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_parse(path: Path):
    config = load_finetune_config(path)
    assert config.models and (config.task is None or config.task.name)


def test_overrides_and_head_defaults(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("head: mlp\ntrain: {epochs: 3}\n")
    config = load_finetune_config(path, **{"train.lr": 0.5, "seed": None, "freeze": None})
    assert config.train.epochs == 3 and config.train.lr == 0.5 and config.seed == 0
    assert config.frozen is False  # mlp fine-tunes by default
    assert load_finetune_config(path, freeze=True).frozen is True
    assert load_finetune_config(None, head="linear").frozen is True
    # probe: logistic solves a frozen, non-spiking linear head; other heads train by the loop
    assert load_finetune_config(None, probe="logistic").solved_probe is True
    for other in ({"head": "mlp"}, {"freeze": False}, {"spiking": "lif"}):
        assert load_finetune_config(None, probe="logistic", **other).solved_probe is False
    assert load_finetune_config(None).solved_probe is False
    # freeze false: the solved head starts full fine-tuning (LP-FT)
    assert load_finetune_config(None, probe="logistic", freeze=False).solves_head is True
    assert load_finetune_config(None, probe="logistic", head="mlp").solves_head is False


@pytest.mark.parametrize(("text", "message"), [
    ("trian: {epochs: 3}\n", "unknown key 'trian"),
    ("train: {epochs: three}\n", "train.epochs: expected int, got three"),
    ("train: {epochs: 2.5}\n", "train.epochs: expected int, got 2.5"),
    ("split: {train: [01]}\nprotocol: split\n", "split.train: expected str, got 1"),
    ("models: [pretrained, lstm]\n", "unknown ['lstm']"),
    ("head: transformer\n", "head: expected one of"),
    ("task: {label_from: filename}\n", "task.pattern is needed"),
])
def test_bad_configs_name_the_key(tmp_path: Path, text: str, message: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_finetune_config(path)
    assert message in str(error.value)


def test_yaml_is_read_safely_and_numbers_in_e_notation_are_numbers(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {lr: 1e-3}\nhead_options: {n_experts: 4, branch: shared}\n")
    config = load_finetune_config(path)
    assert config.train.lr == 1e-3 and config.head_options == {"n_experts": 4, "branch": "shared"}
    path.write_text("out: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(ConfigError, match="python/object/apply"):
        load_finetune_config(path)


def test_python_overrides_are_checked_like_options(tmp_path: Path):
    config = load_finetune_config(None, **{"train.patience": 3, "split.train": ["00"],
                                           "split.test": ["01"], "protocol": "split",
                                           "out": tmp_path})
    assert config.train.patience == 3 and config.split.test == ["01"]
    assert config.out == str(tmp_path)  # a Path is written as text
    with pytest.raises(ConfigError, match=r"train\.patience: expected int, got three"):
        load_finetune_config(None, **{"train.patience": "three"})
    with pytest.raises(ConfigError, match="unknown key 'config'"):  # a key, not a file to read
        load_finetune_config(None, config=str(tmp_path / "other.yaml"))
