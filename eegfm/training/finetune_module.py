"""The fine-tuned model (encoder + head), its batches, and the checkpoint ``eegfm predict`` reads.

``EncoderClassifier`` wraps an :class:`~eegfm.models.encoder.EEGEncoder` and a head from
:func:`eegfm.heads.create_head`. Frozen (linear probe), the encoder runs in eval mode without
gradients and its tokens can be cached once (:func:`encode_windows`); fine-tuned, the encoder
gets its own learning rate, optionally decayed layer by layer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from eegfm.heads import Head, HeadLoss, create_head

FINETUNED_FORMAT = "eegfm-finetuned"
FINETUNED_VERSION = 1


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

        No weight decay on biases, norms and embeddings' 1-D parameters.
        """
        groups = decay_groups(self.head.named_parameters(), lr, weight_decay)
        if self.frozen:
            return groups
        depth = len(getattr(self.encoder, "blocks", []))
        by_layer: dict[int, list] = {}
        for name, param in self.encoder.named_parameters():
            by_layer.setdefault(_layer_id(name, depth), []).append((name, param))
        for layer, named in sorted(by_layer.items()):
            scale = encoder_lr_scale * (layer_decay ** (depth + 1 - layer) if layer_decay else 1)
            groups += decay_groups(named, lr * scale, weight_decay)
        return groups


def _layer_id(name: str, depth: int) -> int:
    """0 for embeddings, i + 1 for block i, depth + 1 for the final norms."""
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    if name.startswith(("norm", "fc_norm", "head")):
        return depth + 1
    return 0


def decay_groups(named, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups at ``lr``: weight decay on matrices, none on biases and norms (1-D)."""
    decay, no_decay = [], []
    for _, param in named:
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [{"params": decay, "lr": lr, "weight_decay": weight_decay},
              {"params": no_decay, "lr": lr, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


@torch.no_grad()
def encode_windows(encoder: nn.Module, data: WindowTensors, batch_size: int,
                   progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen-encoder tokens of every window: ``(N, C, P, D)`` and the valid mask ``(N, C)``."""
    was_training = encoder.training
    encoder.eval()
    tokens, masks = [], []
    starts = range(0, len(data), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="encode (cache tokens)", unit="batch", leave=False,
                      dynamic_ncols=True)
    width = data.channel_mask.shape[1]
    for s in starts:
        batch = data.batch(np.arange(s, min(s + batch_size, len(data))))
        out = encoder.forward_features(batch.x, batch.coords, batch.channel_mask,
                                       batch.ref_coords)
        pad = width - out.shape[1]
        valid = encoder.valid_channel_mask(batch.coords, batch.channel_mask)
        tokens.append(nn.functional.pad(out, (0, 0, 0, 0, 0, pad)))
        masks.append(nn.functional.pad(valid, (0, pad)))
    encoder.train(was_training)
    return torch.cat(tokens), torch.cat(masks)


# ------------------------------------------------------------------------------ checkpoint
def save_finetuned(path: str | os.PathLike, model: EncoderClassifier, *, class_names: list[str],
                   window_s: float, stride_s: float, sfreq: float, prep_config: dict,
                   align: str = "none", extra: dict | None = None) -> Path:
    """Write a fine-tuned model that :func:`load_finetuned` (``weights_only=True``) rebuilds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "format": FINETUNED_FORMAT,
        "format_version": FINETUNED_VERSION,
        "encoder_config": dict(model.encoder.config),
        "encoder_state": model.encoder.state_dict(),
        "head_config": dict(model.head.config),
        "head_state": model.head.state_dict(),
        "frozen": bool(model.frozen),
        "class_names": list(class_names),
        "window_s": float(window_s),
        "stride_s": float(stride_s),
        "sfreq": float(sfreq),
        "prep_config": prep_config,
        "align": str(align),  # subject alignment the model was trained with (predict repeats it)
        "extra": extra or {},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(document, tmp)
    os.replace(tmp, path)
    return path


def load_finetuned(path: str | os.PathLike) -> tuple[EncoderClassifier, dict[str, Any]]:
    """Rebuild a model written by :func:`save_finetuned`; returns (model in eval mode, metadata).

    A file that cannot be read or does not rebuild raises a one-line ``ValueError`` naming it.
    """
    from eegfm.models import EEGEncoder

    def _first_line(error: BaseException) -> str:
        lines = str(error).strip().splitlines()  # torch's messages run to paragraphs
        return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--model {path}: no such fine-tuned model file")
    if path.stat().st_size == 0:
        raise ValueError(f"--model {path}: the file is empty (0 bytes); was it copied or saved "
                         "in full?")
    try:
        document = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, empty, not a torch file: zip, pickle, EOF errors
        raise ValueError(f"--model {path}: unreadable (truncated, damaged, or not a model that "
                         f"`eegfm finetune` wrote): {_first_line(error)}") from error
    if not isinstance(document, dict) or document.get("format") != FINETUNED_FORMAT:
        raise ValueError(f"--model {path}: not an eegfm fine-tuned model (expected the "
                         f"model_<name>.pt that `eegfm finetune` writes)")
    try:
        encoder = EEGEncoder(**document["encoder_config"])
        encoder.load_state_dict(document["encoder_state"])
        head = create_head(**document["head_config"])
        head.load_state_dict(document["head_state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"--model {path}: does not rebuild with this eegfm (damaged, or written "
                         f"by another version): {_first_line(error)}") from error
    model = EncoderClassifier(encoder, head, frozen=True).eval()
    meta = {k: v for k, v in document.items() if not k.endswith("_state")}
    meta.setdefault("align", "none")  # files written before alignment existed
    return model, meta
