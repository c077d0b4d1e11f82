"""Variable-montage padding collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eegfm.data.collate import pad_collate


def sample(n_channels: int, T: int = 10, value: float = 1.0) -> dict:
    return {
        "x": np.full((n_channels, T), value, np.float32),
        "coords": np.ones((n_channels, 3), np.float32),
        "ref_coords": np.full((n_channels, 3), np.nan, np.float32),
        "recording_id": f"rec{n_channels}",
        "recording_index": n_channels,
        "start": 5,
    }


def test_pads_channels_and_marks_them() -> None:
    batch = pad_collate([sample(3), sample(5), sample(1)])
    assert batch["x"].shape == (3, 5, 10) and batch["coords"].shape == (3, 5, 3)
    assert batch["channel_mask"].sum(1).tolist() == [3, 5, 1]
    assert batch["channel_mask"].dtype == torch.bool
    padding = ~batch["channel_mask"]
    assert (batch["x"][padding] == 0).all() and (batch["coords"][padding] == 0).all()
    assert (batch["x"][batch["channel_mask"]] == 1).all()
    assert batch["recording_id"] == ["rec3", "rec5", "rec1"]
    assert batch["start"].tolist() == [5, 5, 5]


def test_non_finite_window_is_named() -> None:
    with pytest.raises(ValueError, match="rec4@5"):
        pad_collate([sample(3), sample(4, value=np.nan)])
