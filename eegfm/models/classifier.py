"""The fine-tuned model: an encoder and a head from :mod:`eegfm.heads`, and the batches it reads.

``EncoderClassifier`` wraps an :class:`~eegfm.models.encoder.EEGEncoder` and a head from
:func:`eegfm.heads.create_head`. Frozen (linear probe), the encoder runs in eval mode without
gradients and its tokens can be cached once; fine-tuned, the encoder trains with the head. How
it is optimised lives in :mod:`eegfm.training`; how it is saved, in :mod:`eegfm.checkpoint`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from eegfm.heads import Head, HeadLoss


@dataclass
class Batch:
    """One training or evaluation batch: signal windows or cached tokens, labels, extras."""

    y: torch.Tensor  # (B,) class index
    x: torch.Tensor | None = None  # (B, C, T) µV
    coords: torch.Tensor | None = None  # (B, C, 3) m
    ref_coords: torch.Tensor | None = None  # (B, C, 3) m, NaN for referential channels
    channel_mask: torch.Tensor | None = None  # (B, C) True = real channel
    tokens: torch.Tensor | None = None  # (B, C, P, D) cached encoder output
    subject: torch.Tensor | None = None  # (B,) int subject ids (training only)
    pair: Batch | None = None  # a temporally neighbouring window of the same recording


class EncoderClassifier(nn.Module):
    """Encoder + head; ``frozen`` keeps the encoder fixed (eval mode, no gradients)."""

    def __init__(self, encoder: nn.Module, head: Head, *, frozen: bool):
        super().__init__()
        self.encoder, self.head, self.frozen = encoder, head, frozen
        if frozen:
            self.encoder.requires_grad_(False)
        self.augment = None  # ViewAugmenter of the training windows (set by the runner)

    def train(self, mode: bool = True) -> EncoderClassifier:
        """Train mode for the head (and the encoder unless frozen)."""
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def encode(self, batch: Batch, augment: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens ``(B, C, P, D)`` and the mask of valid channels of a batch."""
        if batch.tokens is not None:
            return batch.tokens, batch.channel_mask
        x = batch.x
        if augment and self.augment is not None:
            x = self.augment(x, batch.channel_mask)
        valid = self.encoder.valid_channel_mask(batch.coords, batch.channel_mask)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            tokens = self.encoder.forward_features(x, batch.coords, batch.channel_mask,
                                                   batch.ref_coords)
        return tokens, valid

    def forward(self, x: torch.Tensor, coords: torch.Tensor,
                channel_mask: torch.Tensor | None = None,
                ref_coords: torch.Tensor | None = None) -> torch.Tensor:
        """``x (B, C, T)`` µV, ``coords (B, C, 3)`` -> logits ``(B, K)``."""
        if channel_mask is None:
            channel_mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        batch = Batch(y=torch.zeros(0), x=x, coords=coords, channel_mask=channel_mask,
                      ref_coords=ref_coords)
        return self.logits(batch)

    def logits(self, batch: Batch) -> torch.Tensor:
        """Logits of a batch (evaluation: no augmentation, no subject ids)."""
        tokens, mask = self.encode(batch)
        return self.head(tokens, mask)

    def training_loss(self, batch: Batch) -> HeadLoss:
        """The head's training loss (on augmented windows when ``augment`` is set); subject
        ids and the pair view when the head uses them."""
        pair = self.head.needs_pair_view
        tokens, mask = self.encode(batch, augment=True)
        kwargs: dict[str, Any] = {}
        if self.head.uses_subject:
            kwargs["subject"] = batch.subject
        if pair:
            if batch.pair is None:
                raise ValueError("the head needs a second view (needs_pair_view) but the batch "
                                 "has none")
            kwargs["pair_tokens"], kwargs["pair_channel_mask"] = self.encode(batch.pair, True)
        return self.head.training_loss(tokens, mask, batch.y, **kwargs)

    def selection_state(self) -> dict[str, torch.Tensor]:
        """Copy of the weights that training changes (the head alone when frozen)."""
        module = self.head if self.frozen else self
        return {k: v.detach().clone() for k, v in module.state_dict().items()}

    def load_selection_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore weights saved by :meth:`selection_state`."""
        (self.head if self.frozen else self).load_state_dict(state)
