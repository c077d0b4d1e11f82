"""The ``mlp`` head: attention pooling over all real tokens, then an MLP."""

from __future__ import annotations

import torch
from torch import nn

from eegfm.heads.base import Head, check_tokens
from eegfm.spiking import (
    AttentionPool,
    NeuronConfig,
    SpikingAttentionPool,
    StepEncoder,
    StepMLP,
    make_neuron,
)
from eegfm.spiking import readout as step_readout


class AttentionPoolHead(Head):
    """Learned-query attention pooling (key-padding masked) + MLP, for full fine-tuning.

    ``tokens (B, C, P, D) -> LayerNorm -> [spike encode] -> attention pool -> LayerNorm
    -> [spike encode] -> Linear -> act -> Linear``. With ``spiking='lif'`` and
    ``spiking_attention=True`` the pooling is spiking (binary Q/K/V, no softmax); otherwise it
    is the softmax pooling, fed by spikes (LIF, integers) or real tokens (ANN).
    """

    def __init__(self, embed_dim: int, n_classes: int, spiking: str = "none",
                 neuron: NeuronConfig | None = None, n_heads: int = 4,
                 mlp_hidden: int | None = None, dropout: float = 0.1,
                 spiking_attention: bool = True):
        super().__init__(embed_dim, n_classes, spiking, neuron)
        cfg = self.neuron_config
        self.spiking_attention = spiking == "lif" and spiking_attention
        self.token_norm = nn.LayerNorm(embed_dim)
        self.token_encode = StepEncoder(spiking, cfg)
        self.attn_pool = (SpikingAttentionPool(embed_dim, n_heads, config=cfg)
                          if self.spiking_attention
                          else AttentionPool(embed_dim, n_heads, spiking=spiking, config=cfg))
        self.pool_norm = nn.LayerNorm(embed_dim)
        # The pooled currents are already in step form: a neuron turns them into spikes.
        self.pool_encode = None if spiking == "none" else make_neuron(spiking, cfg)
        self.mlp = StepMLP(embed_dim, [mlp_hidden or embed_dim], n_classes, spiking=spiking,
                           config=cfg, dropout=dropout)

    def forward(self, tokens: torch.Tensor, channel_mask: torch.Tensor | None) -> torch.Tensor:
        """``(B, C, P, D), (B, C) -> logits (B, K)``."""
        channel_mask = check_tokens(tokens, channel_mask, self.embed_dim)
        batch, channels, patches, dim = tokens.shape
        x = self.token_norm(tokens.reshape(batch, channels * patches, dim))
        key_mask = channel_mask.repeat_interleave(patches, dim=1)  # (B, C*P), channel-major
        pooled = self.pool_norm(self.attn_pool(self.token_encode(x, key_mask), key_mask))
        if self.pool_encode is not None:
            pooled = self.pool_encode(pooled)
        return step_readout(self.mlp(pooled))
