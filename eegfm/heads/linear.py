"""Linear probe: masked mean pool over real channels and patches → LayerNorm → Linear."""

from __future__ import annotations

import torch
from torch import nn

from eegfm.heads.base import Head, check_tokens, masked_mean_pool
from eegfm.spiking import NeuronConfig, StepEncoder, SynapticLinear, readout
from eegfm.spiking.layers import input_kind


class LinearHead(Head):
    """Linear probe on pooled tokens.

    Spiking variants encode the normalised features into spikes (LIF over T steps of constant
    current, or integers ``0..D``) and read the linear layer out by its mean current over steps.
    """

    def __init__(self, embed_dim: int, n_classes: int, spiking: str = "none",
                 neuron: NeuronConfig | None = None, dropout: float = 0.0):
        super().__init__(embed_dim, n_classes, spiking, neuron)
        self.norm = nn.LayerNorm(embed_dim)
        self.encode = StepEncoder(spiking, self.neuron_config)
        self.dropout = nn.Dropout(dropout)
        self.classifier = SynapticLinear(embed_dim, n_classes, input_kind=input_kind(spiking),
                                         max_level=self.neuron_config.max_level)

    def features(self, tokens: torch.Tensor, channel_mask: torch.Tensor | None) -> torch.Tensor:
        """The classifier's input before dropout: pooled, normalised ``(B, D)``."""
        return self.norm(masked_mean_pool(tokens, check_tokens(tokens, channel_mask,
                                                               self.embed_dim)))

    def forward(self, tokens: torch.Tensor, channel_mask: torch.Tensor | None) -> torch.Tensor:
        """``(B, C, P, D), (B, C) -> logits (B, K)``."""
        return readout(self.classifier(self.encode(self.dropout(self.features(tokens,
                                                                             channel_mask)))))

    @torch.no_grad()
    def set_linear(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Make the read-out ``logits = features @ weight.T + bias`` (a solved probe)."""
        if self.spiking != "none":
            raise ValueError("a solved probe needs a non-spiking linear head")
        if weight.shape != self.classifier.weight.shape or bias.shape != self.classifier.bias.shape:
            raise ValueError(f"weight {tuple(weight.shape)} / bias {tuple(bias.shape)} do not fit "
                             f"the read-out {tuple(self.classifier.weight.shape)}")
        self.classifier.weight.copy_(weight)
        self.classifier.bias.copy_(bias)
