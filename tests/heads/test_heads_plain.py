"""The Head contract for every head x spiking mode; the linear probe and the attention-pool MLP."""

from __future__ import annotations

import pytest
import torch

from eegfm.heads import (
    AttentionPoolHead,
    HeadLoss,
    LinearHead,
    create_head,
    head_options,
    list_heads,
    masked_mean_pool,
)
from eegfm.spiking import energy_report

HEAD_NAMES = ["linear", "mlp", "shared_routed"]
SPIKING = ["none", "lif", "int"]
D = 16


def batch(seed: int = 0, n: int = 12):
    """tokens (n, 5, 3, D), a mask with padded channels, targets, subjects."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randn(n, 5, 3, D, generator=gen)
    mask = torch.ones(n, 5, dtype=torch.bool)
    mask[::2, 3:] = False
    return tokens, mask, torch.randint(0, 3, (n,), generator=gen), torch.arange(n) % 4


def build(name: str, spiking: str, tokens, mask, subject):
    torch.manual_seed(0)
    head = create_head(name, D, 3, spiking=spiking)
    head.init_from_features(head.pool(tokens, mask), subject)
    return head


@pytest.mark.parametrize("spiking", SPIKING)
@pytest.mark.parametrize("name", HEAD_NAMES)
def test_every_head_and_spiking_mode_trains_evaluates_and_reports_energy(name, spiking):
    tokens, mask, target, subject = batch()
    head = build(name, spiking, tokens, mask, subject)
    head.set_progress(0.5)
    out = head.training_loss(tokens, mask, target, subject=subject,
                             pair_tokens=tokens + 0.1, pair_channel_mask=mask)
    assert isinstance(out, HeadLoss) and out.logits.shape == (12, 3)
    assert torch.isfinite(out.loss) and all(isinstance(v, float) for v in out.parts.values())
    out.loss.backward()
    grads = [p.grad for p in head.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    head.eval()
    logits = head(tokens, mask)
    assert logits.shape == (12, 3) and torch.isfinite(logits).all()
    assert isinstance(head.diagnostics(), dict)
    report = energy_report(head, tokens, mask)
    assert report["energy_pj"] > 0 and report["ann"]["energy_pj"] > 0
    if spiking == "none":
        assert report["sops"] == 0 and report["energy_ratio"] == pytest.approx(1.0)
    else:
        assert report["sops"] > 0 and report["energy_ratio"] < 1.0
        assert report["firing_rates"] and all(0 <= r <= 1 for r in report["firing_rates"].values())
    assert not head.training  # energy_report restores the mode


@pytest.mark.parametrize("spiking", SPIKING)
@pytest.mark.parametrize("name", HEAD_NAMES)
def test_padded_channels_do_not_change_the_output(name, spiking):
    tokens, mask, _, subject = batch(1)
    head = build(name, spiking, tokens, mask, subject).eval()
    altered = tokens.clone()
    altered[~mask] = torch.randn_like(altered[~mask]) * 50
    torch.testing.assert_close(head(altered, mask), head(tokens, mask))


def test_masked_mean_pool_by_hand():
    tokens = torch.arange(2 * 3 * 2 * 1, dtype=torch.float32).view(2, 3, 2, 1)
    mask = torch.tensor([[True, False, True], [True, True, True]])
    pooled = masked_mean_pool(tokens, mask)
    assert pooled[0].item() == pytest.approx((0 + 1 + 4 + 5) / 4)
    assert pooled[1].item() == pytest.approx(sum(range(6, 12)) / 6)
    torch.testing.assert_close(masked_mean_pool(tokens, None), tokens.mean((1, 2)))


def test_linear_head_is_pool_norm_linear():
    tokens, mask, _, _ = batch(2)
    head = create_head("linear", D, 3)
    assert isinstance(head, LinearHead)
    expected = head.classifier(head.norm(masked_mean_pool(tokens, mask)))
    torch.testing.assert_close(head(tokens, mask), expected)
    torch.testing.assert_close(head.features(tokens, mask), head.norm(masked_mean_pool(tokens,
                                                                                      mask)))
    weight, bias = torch.randn(3, D), torch.randn(3)
    head.set_linear(weight, bias)  # a solved probe: logits = features @ weight.T + bias
    torch.testing.assert_close(head(tokens, mask), head.features(tokens, mask) @ weight.T + bias)
    with pytest.raises(ValueError, match="do not fit the read-out"):
        head.set_linear(weight[:2], bias[:2])
    with pytest.raises(ValueError, match="non-spiking"):
        create_head("linear", D, 3, spiking="lif").set_linear(weight, bias)


def test_mlp_head_options_and_spiking_attention_switch():
    lif = create_head("mlp", D, 2, spiking="lif", n_heads=2, mlp_hidden=8)
    assert isinstance(lif, AttentionPoolHead) and lif.spiking_attention
    assert type(lif.attn_pool).__name__ == "SpikingAttentionPool"
    softmax = create_head("mlp", D, 2, spiking="lif", spiking_attention=False)
    assert type(softmax.attn_pool).__name__ == "AttentionPool"
    assert not create_head("mlp", D, 2, spiking="int").spiking_attention
    with pytest.raises(ValueError, match="divisible"):
        create_head("mlp", D, 2, n_heads=3)


def test_create_head_validates_names_options_and_inputs():
    assert list_heads() == ["linear", "mlp", "shared_routed"]
    assert "tau" in head_options("linear") and "n_experts" in head_options("shared_routed")
    with pytest.raises(ValueError, match="unknown head 'conv'"):
        create_head("conv", D, 2)
    with pytest.raises(ValueError, match="spiking"):
        create_head("linear", D, 2, spiking="snn")
    with pytest.raises(TypeError, match="n_expert"):
        create_head("shared_routed", D, 2, n_expert=3)
    head = create_head("linear", D, 2, spiking="lif", timesteps=2, tau=3.0)
    assert head.neuron_config.timesteps == 2 and head.neuron_config.tau == 3.0
    assert create_head("linear", D, 2, spiking="int").neuron_config.timesteps == 1
    tokens, mask, _, _ = batch()
    with pytest.raises(ValueError, match="embed_dim=16"):
        head(tokens[..., :8], mask)
    with pytest.raises(ValueError, match=r"channel_mask must be \(B, C\)"):
        head(tokens, mask[:, :3])
    empty = mask.clone()
    empty[4] = False
    with pytest.raises(ValueError, match=r"samples \[4\] have no real channel"):
        head(tokens, empty)
    with pytest.raises(ValueError, match="tokens"):
        head(tokens[:, 0], mask)


def test_ann_twin_shares_weights_and_drops_spikes():
    tokens, mask, _, subject = batch()
    head = build("shared_routed", "lif", tokens, mask, subject)
    twin = head.ann_twin()
    assert twin.spiking == "none" and head.spiking == "lif"
    for name, tensor in twin.state_dict().items():
        if name in head.state_dict():
            torch.testing.assert_close(tensor, head.state_dict()[name], equal_nan=True)
    assert twin.router.subject_ids.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("spiking", SPIKING)
@pytest.mark.parametrize("name", HEAD_NAMES)
def test_a_batch_of_one_sample_trains(name, spiking):
    """Sparse routing can hand an expert a single sample; BatchNorm must cope."""
    tokens, mask, target, subject = batch()
    head = build(name, spiking, tokens, mask, subject)
    out = head.training_loss(tokens[:1], mask[:1], target[:1], subject=subject[:1],
                             pair_tokens=tokens[:1], pair_channel_mask=mask[:1])
    out.loss.backward()
    assert torch.isfinite(out.loss)
