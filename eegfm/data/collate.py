"""Batch windows of different montages: pad channels to the largest window and mark the padding."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate


def pad_collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack window samples into a batch, padding channels.

    Returns ``x (B, C, T)`` µV with zeros in padded channels, ``coords (B, C, 3)`` with zeros and
    ``ref_coords (B, C, 3)`` with NaN there, ``channel_mask (B, C)`` (True = real channel),
    ``recording_index (B,)``, ``start (B,)`` and ``recording_id`` (list of B str).
    A window holding NaN/Inf raises, naming it. Samples a dataset marked unreadable
    (``{"error": ...}``, `ShardWindowDataset(on_bad_window="skip")`) are replaced by the batch's
    readable windows, so the batch keeps its size and every DDP rank its step count.
    """
    if not samples:
        raise ValueError("pad_collate got an empty batch")
    samples = _replace_bad(samples)
    C = max(s["x"].shape[0] for s in samples)
    T = samples[0]["x"].shape[1]
    if any(s["x"].shape[1] != T for s in samples):
        raise ValueError(f"windows in a batch differ in length: {[s['x'].shape for s in samples]}")
    # default_collate stacks straight into shared memory inside a DataLoader worker, so a batch
    # is copied once; only windows of smaller montages are padded first.
    x = default_collate([torch.from_numpy(_pad(s["x"], C, 0.0)) for s in samples])
    coords = default_collate([torch.from_numpy(_pad(s["coords"], C, 0.0)) for s in samples])
    ref_coords = default_collate(
        [torch.from_numpy(_pad(s["ref_coords"], C, np.nan)) for s in samples]
    )
    channel_mask = torch.zeros((len(samples), C), dtype=torch.bool)
    for b, sample in enumerate(samples):
        channel_mask[b, : sample["x"].shape[0]] = True
    # One reduction instead of an elementwise mask: a NaN/Inf anywhere makes the sum non-finite.
    if not torch.isfinite(x.sum()):
        bad = [b for b in range(len(samples)) if not torch.isfinite(x[b]).all()]
        where = ", ".join(f"{samples[b]['recording_id']}@{samples[b]['start']}" for b in bad)
        raise ValueError(
            f"non-finite samples in windows (recording@start) {where}: "
            "run `eegfm validate` on the shards"
        )
    return {
        "x": x,
        "coords": coords,
        "ref_coords": ref_coords,
        "channel_mask": channel_mask,
        "recording_index": torch.tensor([s["recording_index"] for s in samples], dtype=torch.int64),
        "start": torch.tensor([s["start"] for s in samples], dtype=torch.int64),
        "recording_id": [s["recording_id"] for s in samples],
    }


_WARNED: set[str] = set()  # recordings already reported by this process


def _replace_bad(samples: Sequence[dict[str, Any]]) -> Sequence[dict[str, Any]]:
    """Swap samples marked ``error`` for the readable ones, warning once per recording."""
    bad = [s for s in samples if "error" in s]
    if not bad:
        return samples
    good = [s for s in samples if "error" not in s]
    if not good:
        where = "; ".join(f"{s['recording_id']}@{s['start']}: {s['error']}" for s in bad)
        raise ValueError(f"no readable window in a batch ({where}): run `eegfm validate` on "
                         "the shards")
    for sample in bad:
        if sample["recording_id"] not in _WARNED:
            _WARNED.add(sample["recording_id"])
            warnings.warn(f"skipping unreadable window {sample['recording_id']}@"
                          f"{sample['start']} ({sample['error']}); further windows of this "
                          "recording are skipped without a warning", RuntimeWarning,
                          stacklevel=2)
    substitutes = iter(good * len(bad))
    return [next(substitutes) if "error" in s else s for s in samples]


def _pad(array: np.ndarray, n_channels: int, fill: float) -> np.ndarray:
    """(c, ...) float32 -> (n_channels, ...), rows past c set to `fill` (no copy if c is full)."""
    array = np.asarray(array, dtype=np.float32)
    if array.shape[0] == n_channels:
        return array
    out = np.full((n_channels, *array.shape[1:]), fill, dtype=np.float32)
    out[: array.shape[0]] = array
    return out
