"""Batch windows of different montages: pad channels to the largest window and mark the padding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def pad_collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack window samples into a batch, padding channels.

    Returns ``x (B, C, T)`` µV with zeros in padded channels, ``coords (B, C, 3)`` with zeros and
    ``ref_coords (B, C, 3)`` with NaN there, ``channel_mask (B, C)`` (True = real channel),
    ``recording_index (B,)``, ``start (B,)`` and ``recording_id`` (list of B str).
    A window holding NaN/Inf raises, naming it.
    """
    if not samples:
        raise ValueError("pad_collate got an empty batch")
    n_channels = [s["x"].shape[0] for s in samples]
    B, C, T = len(samples), max(n_channels), samples[0]["x"].shape[1]
    x = np.zeros((B, C, T), dtype=np.float32)
    coords = np.zeros((B, C, 3), dtype=np.float32)
    ref_coords = np.full((B, C, 3), np.nan, dtype=np.float32)
    channel_mask = np.zeros((B, C), dtype=bool)
    for b, (sample, c) in enumerate(zip(samples, n_channels, strict=True)):
        if sample["x"].shape[1] != T:
            raise ValueError(f"windows in a batch differ in length: {T} vs {sample['x'].shape[1]}")
        x[b, :c] = sample["x"]
        coords[b, :c] = sample["coords"]
        ref_coords[b, :c] = sample["ref_coords"]
        channel_mask[b, :c] = True
    if not np.isfinite(x).all():
        bad = [b for b in range(B) if not np.isfinite(x[b]).all()]
        where = ", ".join(f"{samples[b]['recording_id']}@{samples[b]['start']}" for b in bad)
        raise ValueError(
            f"non-finite samples in windows (recording@start) {where}: "
            "run `eegfm validate` on the shards"
        )
    return {
        "x": torch.from_numpy(x),
        "coords": torch.from_numpy(coords),
        "ref_coords": torch.from_numpy(ref_coords),
        "channel_mask": torch.from_numpy(channel_mask),
        "recording_index": torch.tensor([s["recording_index"] for s in samples], dtype=torch.int64),
        "start": torch.tensor([s["start"] for s in samples], dtype=torch.int64),
        "recording_id": [s["recording_id"] for s in samples],
    }
