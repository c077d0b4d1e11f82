"""eegfm.training.optim: the one warm-up + cosine schedule and the AdamW parameter groups that
pretraining, fine-tuning and the baselines share."""

from __future__ import annotations

import math

import pytest
import torch

from eegfm.heads import create_head
from eegfm.models import create_model
from eegfm.models.classifier import EncoderClassifier
from eegfm.training.finetune.module import optimizer_groups
from eegfm.training.optim import WarmupCosine, param_groups, vit_layer_of


def _mae_style(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """The schedule written out directly: linear warm-up to 1 after ``warmup`` steps (the
    first step already at 1/warmup), half a cosine period down to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    t = min(step - warmup, max(total - warmup, 1)) / max(total - warmup, 1)
    return min_ratio + (1.0 - min_ratio) * (1.0 + math.cos(math.pi * t)) / 2.0


@pytest.mark.parametrize(("total", "warmup", "min_ratio"),
                         [(50, 0, 0.0), (50, 5, 0.01), (30, 10, 0.1), (20, 20, 0.5), (1, 0, 0.0)])
def test_schedule_matches_the_formula(total: int, warmup: int, min_ratio: float) -> None:
    schedule = WarmupCosine(warmup, total, min_ratio)
    got = [schedule(step) for step in range(60)]
    assert got == pytest.approx([_mae_style(s, warmup, total, min_ratio) for s in range(60)],
                                rel=1e-12, abs=1e-15)
    end = max(total, warmup + 1)  # the cosine spans at least one step
    assert got[end:] == [pytest.approx(min_ratio)] * (60 - end), "flat after the end"
    if warmup:
        assert got[warmup - 1] == 1.0 and got[0] == 1.0 / warmup


def test_fine_tuning_schedule_decays_to_zero() -> None:
    """Fine-tuning's schedule is the default ``min_ratio=0``: cosine from 1 to exactly 0."""
    schedule = WarmupCosine(warmup_steps=4, total_steps=24)
    assert schedule(4) == 1.0 and schedule(14) == pytest.approx(0.5) and schedule(24) == 0.0


def _lr_and_decay(model: torch.nn.Module, groups: list[dict]) -> dict[str, tuple[float, float]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}


def test_layer_decay_gives_each_block_its_learning_rate() -> None:
    """eegfm_tiny (2 blocks): embeddings 3 layers below the final norm, block i at depth - i."""
    encoder = create_model("eegfm_tiny")
    groups = param_groups(encoder, 0.05, 1e-3, layer_of=vit_layer_of(2), num_layers=4,
                          layer_decay=0.5, lr_scale=0.1)
    got = _lr_and_decay(encoder, groups)
    assert set(got) == {n for n, _ in encoder.named_parameters()}
    assert got["patch_embed.proj.weight"] == (1e-3 * 0.1 * 0.5**3, 0.05)
    assert got["blocks.0.mlp.fc1.weight"] == (1e-3 * 0.1 * 0.5**2, 0.05)
    assert got["blocks.1.mlp.fc1.weight"] == (1e-3 * 0.1 * 0.5, 0.05)
    assert got["blocks.1.mlp.fc1.bias"] == (1e-3 * 0.1 * 0.5, 0.0)
    assert got["norm.weight"] == (1e-3 * 0.1, 0.0)
    flat = _lr_and_decay(encoder, param_groups(encoder, 0.05, 1e-3, layer_of=vit_layer_of(2),
                                               num_layers=4, lr_scale=0.1))
    assert {lr for lr, _ in flat.values()} == {1e-3 * 0.1}, "no layer_decay: one rate"


def test_fine_tuned_model_groups_head_first_and_frozen_encoder_left_out() -> None:
    encoder = create_model("eegfm_tiny")
    model = EncoderClassifier(encoder, create_head("linear", 64, 2), frozen=False)
    groups = optimizer_groups(model, 1e-3, 0.01, 0.1, 0.75)
    assert {id(p) for p in groups[0]["params"]} == {id(model.head.classifier.weight)}
    assert groups[0]["lr"] == 1e-3 and groups[0]["weight_decay"] == 0.01
    got = _lr_and_decay(model, groups)
    assert got["encoder.blocks.0.mlp.fc1.weight"] == (1e-3 * (0.1 * 0.75**2), 0.01)
    assert got["encoder.norm.bias"] == (1e-3 * 0.1, 0.0)
    frozen = EncoderClassifier(create_model("eegfm_tiny"), create_head("linear", 64, 2),
                               frozen=True)
    names = set(_lr_and_decay(frozen, optimizer_groups(frozen, 1e-3, 0.01, 0.1, None)))
    assert names == {f"head.{n}" for n, _ in frozen.head.named_parameters()}


def test_weight_decay_only_on_matrices_that_are_not_embeddings_or_tokens() -> None:
    model = torch.nn.ModuleDict({"proj": torch.nn.Linear(4, 4), "table": torch.nn.Embedding(3, 4)})
    model.register_parameter("cls_token", torch.nn.Parameter(torch.zeros(1, 4)))
    model.proj.bias.requires_grad_(False)  # frozen: in no group
    decay, plain = param_groups(model, 0.1)
    assert [p is model.proj.weight for p in decay["params"]] == [True]
    assert "lr" not in decay, "without lr the optimizer's default applies"
    assert {id(p) for p in plain["params"]} == {id(model.table.weight), id(model.cls_token)}
    with pytest.raises(ValueError, match="need the base lr"):
        param_groups(model, 0.1, layer_of=lambda name: 0)
