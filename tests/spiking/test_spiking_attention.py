"""Spiking attention (binary Q/K/V, no softmax) and the attention pools."""

from __future__ import annotations

import torch

from eegfm.spiking import (
    AttentionPool,
    NeuronConfig,
    OpMeter,
    SpikingAttentionPool,
    StepEncoder,
    spiking_attention,
)


def binary(*shape: int, seed: int) -> torch.Tensor:
    return (torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) > 0.6).float()


def test_spiking_attention_matches_explicit_sum_over_real_keys():
    S, B, Nq, N, H, dh = 2, 2, 1, 5, 2, 3
    q, k, v = binary(S, B, Nq, H, dh, seed=0), binary(S, B, N, H, dh, seed=1), binary(
        S, B, N, H, dh, seed=2)
    key_mask = torch.tensor([[True] * 5, [True, True, False, True, False]])
    out = spiking_attention(q, k, v, key_mask, scale=0.5)
    expected = torch.zeros_like(out)
    for s in range(S):
        for b in range(B):
            real = [n for n in range(N) if key_mask[b, n]]
            for h in range(H):
                total = sum(float(q[s, b, 0, h] @ k[s, b, n, h]) * v[s, b, n, h] for n in real)
                expected[s, b, 0, h] = 0.5 * total / len(real)
    torch.testing.assert_close(out, expected)
    # no softmax: doubling every key doubles the output
    torch.testing.assert_close(spiking_attention(q, 2 * k, v, key_mask, 0.5), 2 * out)


def test_pools_ignore_padded_tokens_and_meter_real_tokens_only():
    torch.manual_seed(0)
    config = NeuronConfig(timesteps=3)
    x = torch.randn(2, 6, 8)
    key_mask = torch.tensor([[True] * 6, [True, True, True, False, False, False]])
    noisy = x.clone()
    noisy[1, 3:] = torch.randn(3, 8) * 10
    for pool, encoder in ((AttentionPool(8, 2), StepEncoder("none")),
                          (SpikingAttentionPool(8, 2, config=config), StepEncoder("lif", config))):
        pool.eval()
        out = pool(encoder(x, key_mask), key_mask)
        assert out.shape == (encoder.steps, 2, 8)
        torch.testing.assert_close(pool(encoder(noisy, key_mask), key_mask), out)
        with OpMeter(pool) as meter:
            pool(encoder(x, key_mask), key_mask)
        real_tokens = 9
        assert meter.synapses["k_proj"]["flops"] == real_tokens * 8 * 8
        assert meter.synapses["qk"]["flops"] == real_tokens * 8


def test_spiking_pool_is_differentiable_through_query_keys_and_values():
    torch.manual_seed(0)
    config = NeuronConfig(timesteps=2)
    pool = SpikingAttentionPool(8, 2, config=config)
    x = StepEncoder("lif", config)(torch.randn(4, 5, 8) * 2)
    key_mask = torch.ones(4, 5, dtype=torch.bool)
    pool(x, key_mask).sum().backward()
    for name in ("query", "k_proj.weight", "v_proj.weight"):
        grad = dict(pool.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
