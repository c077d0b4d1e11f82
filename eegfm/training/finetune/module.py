"""The fine-tuned model (encoder + head), its batches, and the checkpoint ``eegfm predict`` reads.

``EncoderClassifier`` wraps an :class:`~eegfm.models.encoder.EEGEncoder` and a head from
:func:`eegfm.heads.create_head`. Frozen (linear probe), the encoder runs in eval mode without
gradients and its tokens can be cached once (:func:`encode_windows`); fine-tuned, the encoder
gets its own learning rate, optionally decayed layer by layer.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric import Fabric
from torch import nn

from eegfm import __version__
from eegfm.heads import Head, HeadLoss, create_head
from eegfm.model_folder import ModelFolderError, first_line, read_model, write_model_folder
from eegfm.models import EEGEncoder
from eegfm.models.encoder import encoder_options
from eegfm.training.optim import param_groups, vit_layer_of


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


class EncoderClassifier(nn.Module):
    """Encoder + head; ``frozen`` keeps the encoder fixed (eval mode, no gradients)."""

    def __init__(self, encoder: nn.Module, head: Head, *, frozen: bool):
        super().__init__()
        self.encoder, self.head, self.frozen = encoder, head, frozen
        if frozen:
            self.encoder.requires_grad_(False)
        self.augment = None  # ViewAugmenter for the pair views (set by the runner)

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
        """The head's training loss; subject ids and the pair view when the head uses them."""
        pair = self.head.needs_pair_view
        tokens, mask = self.encode(batch, augment=pair)
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

    def param_groups(self, lr: float, weight_decay: float, encoder_lr_scale: float,
                     layer_decay: float | None) -> list[dict[str, Any]]:
        """AdamW groups: head at ``lr``; encoder at ``lr x encoder_lr_scale`` (layer-decayed).

        No weight decay on biases, norms and embeddings (:func:`eegfm.training.optim.param_groups`).
        """
        groups = param_groups(self.head, weight_decay, lr)
        if self.frozen:
            return groups
        depth = len(getattr(self.encoder, "blocks", []))
        return groups + param_groups(self.encoder, weight_decay, lr, layer_of=vit_layer_of(depth),
                                     num_layers=depth + 2, layer_decay=layer_decay,
                                     lr_scale=encoder_lr_scale)


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
        from tqdm import tqdm

        starts = tqdm(starts, desc="encode (cache tokens)", unit="batch", leave=False,
                      dynamic_ncols=True)
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


# ------------------------------------------------------------------------------ checkpoint
def save_finetuned(path: str | os.PathLike, model: EncoderClassifier, *, class_names: list[str],
                   window_s: float, stride_s: float, sfreq: float, prep_config: dict,
                   align: str = "none", extra: dict | None = None) -> Path:
    """Write a fine-tuned model folder (config.json + model.safetensors) that
    :func:`load_finetuned` rebuilds; weights stay float32, so predictions are unchanged."""
    preprocessing = {
        **model.encoder.preprocessing,
        "sfreq": float(sfreq), "window_s": float(window_s), "stride_s": float(stride_s),
        "align": str(align),  # subject alignment the model was trained with (predict repeats it)
        "class_names": list(class_names), "prep_config": prep_config,
    }
    state = {**{f"encoder.{k}": v for k, v in model.encoder.state_dict().items()},
             **{f"head.{k}": v for k, v in model.head.state_dict().items()}}
    return write_model_folder(
        path, kind="finetuned", architecture=model.encoder.config, state_dict=state,
        head={**model.head.config, "frozen": bool(model.frozen)}, preprocessing=preprocessing,
        extra=extra, eegfm_version=__version__,
    )  # fmt: skip


def load_finetuned(path: str | os.PathLike) -> tuple[EncoderClassifier, dict[str, Any]]:
    """Rebuild a fine-tuned model (a folder, or an earlier release's ``model_<name>.pt``);
    returns (model in eval mode, metadata: class names, window, stride, rate, alignment...).

    A model that cannot be read or does not rebuild raises a one-line ``ValueError`` naming it.
    """
    if not Path(path).exists():
        raise FileNotFoundError(f"--model {path}: no such fine-tuned model (a folder written "
                                "by `eegfm finetune`)")
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise ValueError(f"--model {path}: the file is empty (0 bytes); was it copied or saved "
                         "in full?")
    try:
        config, state = read_model(path)
    except ModelFolderError as error:
        raise ValueError(f"--model {error}") from error
    if config["kind"] != "finetuned":
        raise ValueError(f"--model {path}: an encoder, not a fine-tuned model (fine-tune it "
                         "with `eegfm finetune --checkpoint`)")
    head_config = dict(config["head"] or {})
    frozen = bool(head_config.pop("frozen", True))
    try:
        encoder = EEGEncoder(**encoder_options(config["architecture"]))
        encoder.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("encoder.")})
        head = create_head(**head_config)
        head.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")})
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        first = first_line(error)
        raise ValueError(f"--model {path}: does not rebuild with this eegfm (damaged, or written "
                         f"by another version): {type(error).__name__}: {first}") from error
    encoder.preprocessing.update(config["preprocessing"])
    model = EncoderClassifier(encoder, head, frozen=True).eval()
    meta = {**config["preprocessing"], "frozen": frozen, "encoder_config": config["architecture"],
            "head_config": head_config, "extra": config["extra"],
            "eegfm_version": config["eegfm_version"]}
    meta.setdefault("align", "none")  # files written before alignment existed
    return model, meta
