"""Attention pooling with a learned query: softmax (ANN) and spiking (binary Q/K/V, no softmax).

Both work in step form: tokens ``x: (S, B, N, D)``, ``key_mask: (B, N)`` True for real tokens,
output ``(S, B, D)``. Keys and values get a per-head LayerNorm (timm's ``qk_norm`` idea), in
the ANN as in the spiking variant, so the two estimates exclude the same real-valued work.
"""

from __future__ import annotations

import torch
from torch import nn

from eegfm.spiking.layers import SynapticLinear, input_kind
from eegfm.spiking.meter import Metered, masked_sum
from eegfm.spiking.neurons import LIFNeuron, NeuronConfig, spike


def spiking_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      key_mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """Spikformer-style attention without softmax: ``scale · (Q Kᵀ) V / n_real``.

    ``q: (S, B, Nq, H, dh)``, ``k, v: (S, B, N, H, dh)`` binary; ``key_mask: (B, N)``. Padded
    keys are zeroed; dividing by the number of real keys keeps the output's range independent of
    the montage size. Returns ``(S, B, Nq, H, dh)``.
    """
    if key_mask is not None:
        mask = key_mask.to(k.dtype)[None, :, :, None, None]
        k, v = k * mask, v * mask
        n_real = key_mask.sum(1).clamp_min(1).to(k.dtype)[None, :, None, None, None]
    else:
        n_real = torch.tensor(float(k.shape[2]), dtype=k.dtype, device=k.device)
    scores = torch.einsum("sbqhd,sbnhd->sbhqn", q, k)
    out = torch.einsum("sbhqn,sbnhd->sbqhd", scores, v)
    return out * (scale / n_real)


class AttentionPool(nn.Module, Metered):
    """Pool real tokens with a learned query per head and a masked softmax (the ANN pooling)."""

    def __init__(self, dim: int, n_heads: int = 4, *, spiking: str = "none",
                 config: NeuronConfig | None = None):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by n_heads={n_heads}: pick a "
                             "number of heads that divides the encoder's embed_dim")
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.scale = self.head_dim ** -0.5
        self.config = config or NeuronConfig()
        kind = input_kind(spiking)
        self.query = nn.Parameter(torch.zeros(n_heads, self.head_dim))
        self.k_proj = SynapticLinear(dim, dim, input_kind=kind, max_level=self.config.max_level)
        self.v_proj = SynapticLinear(dim, dim, input_kind=kind, max_level=self.config.max_level)
        self.k_norm = nn.LayerNorm(self.head_dim)
        self.v_norm = nn.LayerNorm(self.head_dim)
        self.reset_query()

    def reset_query(self) -> None:
        """Small random query, as for timm's latent attention pooling."""
        nn.init.trunc_normal_(self.query, std=0.02)

    def project(self, x: torch.Tensor, key_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Normalised keys and values ``(S, B, N, H, dh)``."""
        k = self.k_proj(x, key_mask)
        v = self.v_proj(x, key_mask)
        shape = (*k.shape[:-1], self.n_heads, self.head_dim)
        return self.k_norm(k.view(shape)), self.v_norm(v.view(shape))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """``(S, B, N, D), (B, N) -> (S, B, D)``."""
        k, v = self.project(x, key_mask)
        scores = torch.einsum("hd,sbnhd->sbhn", self.query, k) * self.scale
        scores = scores.masked_fill(~key_mask[None, :, None, :], float("-inf"))
        out = torch.einsum("sbhn,sbnhd->sbhd", scores.softmax(-1), v)
        dim = self.n_heads * self.head_dim
        if self._meter is not None:
            flops = float(key_mask.sum()) * dim  # per real token: q·k over D, then a·v over D
            self._record_synapse("qk", flops_per_step=flops, steps=k.shape[0])
            self._record_synapse("av", flops_per_step=flops, steps=k.shape[0])
        return out.reshape(*out.shape[:2], dim)


class SpikingAttentionPool(AttentionPool):
    """Spiking attention pooling: binary query, LIF keys and values, no softmax.

    The query is the Heaviside step of a learned parameter (surrogate gradient), constant over
    the T steps; keys and values fire through LIF neurons; see :func:`spiking_attention`.
    """

    def __init__(self, dim: int, n_heads: int = 4, *, config: NeuronConfig | None = None):
        super().__init__(dim, n_heads, spiking="lif", config=config)
        self.k_neuron = LIFNeuron(self.config)
        self.v_neuron = LIFNeuron(self.config)

    def reset_query(self) -> None:
        """Unit-variance query, so that about half of its bits start as spikes."""
        nn.init.normal_(self.query, std=1.0)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """``(T, B, N, D) spikes, (B, N) -> (T, B, D)`` real-valued pooled currents."""
        k, v = self.project(x, key_mask)
        k_s, v_s = self.k_neuron(k, key_mask), self.v_neuron(v, key_mask)
        steps, batch = k_s.shape[:2]
        q_s = spike(self.query, self.config.surrogate, self.config.surrogate_slope)
        q_s = q_s.expand(steps, batch, 1, self.n_heads, self.head_dim)
        out = spiking_attention(q_s, k_s, v_s, key_mask, self.scale)
        dim = self.n_heads * self.head_dim
        if self._meter is not None:
            # The spike operands are the keys (for q·k) and the values (for scores·v).
            k_spikes, inputs = masked_sum(k_s, key_mask)
            v_spikes, _ = masked_sum(v_s, key_mask)
            self._record_synapse("qk", flops_per_step=inputs, steps=steps, spikes=k_spikes,
                                 inputs_per_step=inputs)
            self._record_synapse("av", flops_per_step=inputs, steps=steps, spikes=v_spikes,
                                 inputs_per_step=inputs)
        return out.reshape(steps, batch, dim)
