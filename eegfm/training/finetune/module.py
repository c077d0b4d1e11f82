"""What fine-tuning feeds a model: window tensors and batches, devices, cached tokens, groups.

The model itself (:class:`~eegfm.models.classifier.EncoderClassifier`) and its saved folder
(:func:`eegfm.checkpoint.save_finetuned`) live below :mod:`eegfm.training`, so that predict
and export read fine-tuned models without the training code.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from lightning.fabric import Fabric
from torch import nn

from eegfm.console import progress as progress_bar
from eegfm.models.classifier import Batch, EncoderClassifier
from eegfm.training.optim import param_groups, vit_layer_of


class WindowTensors:
    """The arrays a model reads batches from (views on the task set, no copy)."""

    def __init__(self, y: np.ndarray, *, x: np.ndarray | None = None,
                 coords: np.ndarray | None = None, ref_coords: np.ndarray | None = None,
                 channel_mask: np.ndarray | None = None, tokens: torch.Tensor | None = None,
                 token_mask: torch.Tensor | None = None, subject_ids: np.ndarray | None = None):
        self.y = torch.as_tensor(y, dtype=torch.long)
        self.x = None if x is None else torch.from_numpy(x)
        self.coords = None if coords is None else torch.from_numpy(coords)
        self.ref_coords = None if ref_coords is None else torch.from_numpy(ref_coords)
        self.channel_mask = None if channel_mask is None else torch.from_numpy(channel_mask)
        self.tokens, self.token_mask = tokens, token_mask
        self.subject = None if subject_ids is None else torch.as_tensor(subject_ids).long()

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, index: np.ndarray, pair_index: np.ndarray | None = None) -> Batch:
        """Rows ``index``; padded channels beyond the batch's widest montage are cut off."""
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
        out = Batch(y=self.y[idx], subject=None if self.subject is None else self.subject[idx])
        if self.tokens is not None:
            mask = self.token_mask[idx]
            width = int(mask.sum(1).max())  # rows are filled from channel 0 on
            out.tokens, out.channel_mask = self.tokens[idx, :width], mask[:, :width]
        else:
            mask = self.channel_mask[idx]
            width = int(mask.sum(1).max())
            out.x, out.channel_mask = self.x[idx, :width], mask[:, :width]
            out.coords, out.ref_coords = self.coords[idx, :width], self.ref_coords[idx, :width]
        if pair_index is not None:
            out.pair = self.batch(pair_index)
        return out


def on_device(batch: Batch, fabric: Fabric | None) -> Batch:
    """The batch on the fabric's device (left on the CPU without one)."""
    return batch if fabric is None else fabric.to_device(batch)


def autocast(fabric: Fabric | None) -> contextlib.AbstractContextManager:
    """The fabric's precision context (none without one: float32)."""
    return contextlib.nullcontext() if fabric is None else fabric.autocast()


@torch.no_grad()
def encode_windows(encoder: nn.Module, data: WindowTensors, batch_size: int,
                   progress: bool = False, fabric: Fabric | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen-encoder tokens of every window: ``(N, C, P, D)`` float32 on the CPU, and the
    valid mask ``(N, C)``; computed on the fabric's device and precision."""
    was_training = encoder.training
    encoder.eval()
    if fabric is not None:
        encoder.to(fabric.device)
    tokens, masks = [], []
    starts = range(0, len(data), batch_size)
    if progress:
        starts = progress_bar(starts, desc="encode (cache tokens)", unit="batch", leave=False)
    width = data.channel_mask.shape[1]
    for s in starts:
        batch = on_device(data.batch(np.arange(s, min(s + batch_size, len(data)))), fabric)
        with autocast(fabric):
            out = encoder.forward_features(batch.x, batch.coords, batch.channel_mask,
                                           batch.ref_coords)
        pad = width - out.shape[1]
        valid = encoder.valid_channel_mask(batch.coords, batch.channel_mask)
        tokens.append(nn.functional.pad(out.float().cpu(), (0, 0, 0, 0, 0, pad)))
        masks.append(nn.functional.pad(valid.cpu(), (0, pad)))
    encoder.train(was_training)
    return torch.cat(tokens), torch.cat(masks)


def optimizer_groups(model: nn.Module, lr: float, weight_decay: float,
                     encoder_lr_scale: float = 1.0, layer_decay: float | None = None
                     ) -> list[dict[str, Any]]:
    """AdamW groups of a model the fine-tuning loop trains.

    An :class:`EncoderClassifier`: the head at ``lr``, and unless frozen the encoder at
    ``lr x encoder_lr_scale``, decayed layer by layer with ``layer_decay``; any other model
    (the from-scratch baselines): one set at ``lr``. No weight decay on biases, norms and
    embeddings (:func:`eegfm.training.optim.param_groups`).
    """
    if not isinstance(model, EncoderClassifier):
        return param_groups(model, weight_decay, lr)
    groups = param_groups(model.head, weight_decay, lr)
    if model.frozen:
        return groups
    depth = len(model.encoder.blocks)
    return groups + param_groups(model.encoder, weight_decay, lr, layer_of=vit_layer_of(depth),
                                 num_layers=depth + 2, layer_decay=layer_decay,
                                 lr_scale=encoder_lr_scale)
