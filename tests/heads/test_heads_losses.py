"""Joint-embedding, balance and margin losses on hand-checkable inputs."""

from __future__ import annotations

import pytest
import torch

from eegfm.heads.losses import (
    info_nce_loss,
    load_balance_loss,
    prototype_margin_loss,
    vicreg_loss,
)


def test_vicreg_terms():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(512, 8, generator=gen) * 2
    loss, parts = vicreg_loss(z, z)
    assert parts["je_invariance"] == 0.0 and parts["je_variance"] == 0.0  # std 2 > 1
    collapsed, collapsed_parts = vicreg_loss(torch.zeros(16, 8), torch.zeros(16, 8))
    assert collapsed_parts["je_variance"] == pytest.approx(1 - 1e-2, abs=1e-3)
    assert float(collapsed) > float(loss)
    correlated = z[:, :1].repeat(1, 8)
    assert vicreg_loss(correlated, correlated)[1]["je_covariance"] > 1.0
    shifted = vicreg_loss(z, z + 1.0)[1]
    assert shifted["je_invariance"] == pytest.approx(1.0)
    single, single_parts = vicreg_loss(z[:1], z[:1] + 1)
    assert single_parts["je_variance"] == 0.0 and torch.isfinite(single)


def test_info_nce_prefers_matching_pairs():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(32, 16, generator=gen)
    matched, parts = info_nce_loss(z, z + 0.01 * torch.randn(32, 16, generator=gen))
    shuffled, _ = info_nce_loss(z, z[torch.randperm(32, generator=gen)])
    assert parts["je_accuracy"] == 1.0 and float(matched) < float(shuffled)


def test_load_balance_is_zero_for_uniform_routing_and_grows_with_collapse():
    uniform_probs = torch.full((8, 4), 0.25)
    spread = torch.zeros(8, 4)
    spread[torch.arange(8), torch.arange(8) % 4] = 1.0
    assert float(load_balance_loss(uniform_probs, spread)) == pytest.approx(0.0)
    collapsed_probs = torch.tensor([[0.97, 0.01, 0.01, 0.01]]).repeat(8, 1)
    collapsed = torch.zeros(8, 4)
    collapsed[:, 0] = 1.0
    assert float(load_balance_loss(collapsed_probs, collapsed)) == pytest.approx(4 * 0.97 - 1)


def test_prototype_margin_by_hand():
    cosine = torch.tensor([[0.9, 0.1, 0.2], [0.3, 0.5, 0.4]])
    cluster = torch.tensor([0, 2])
    # sample 1: gap 0.9-0.2=0.7 > margin -> 0; sample 2: gap 0.4-0.5=-0.1 -> 0.2+0.1
    assert float(prototype_margin_loss(cosine, cluster, 0.2)) == pytest.approx(0.15)
    assert float(prototype_margin_loss(cosine[:, :1], cluster * 0, 0.2)) == 0.0
