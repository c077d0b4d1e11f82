"""Masked pretraining on real EEG: a tiny model beats predicting zeros on a held-out subject.

Two eegmat recordings are converted to shards with ``eegfm.prep``, 4 s windows are read with
``ShardReader``, and a tiny ``MaskedPretrainer`` is trained for 200 steps with plain AdamW.
The masked-token loss is then measured on windows of a third subject, with fixed masks.
"""

from __future__ import annotations

from pathlib import Path

import mne
import pytest
import torch

from eegfm.models import MaskedPretrainer, create_model
from eegfm.prep.config import load_prep_config
from eegfm.prep.jobs import run_prep
from eegfm.shards import ShardReader

TRAIN = ["Subject00_2.edf", "Subject01_2.edf"]
HELD_OUT = ["Subject02_2.edf"]
WINDOW = 800  # 4 s at 200 Hz


def _shards(eegmat_dir: Path, names: list[str], root: Path) -> ShardReader:
    """Prep ``names`` (linked from eegmat) into shards under ``root``; return a reader."""
    source = root / "eegmat"
    source.mkdir(parents=True)
    for name in names:
        (source / name).symlink_to(eegmat_dir / name)
    summary = run_prep([str(source)], root / "shards", load_prep_config(None), progress=False)
    assert len(summary.converted) == len(names), summary
    return ShardReader(root / "shards")


def _windows(reader: ShardReader, n: int, generator: torch.Generator):
    """``n`` random 4 s windows: (x (n, C, T) µV, coords (n, C, 3))."""
    xs, coords = [], []
    for _ in range(n):
        entry = reader.entries[int(torch.randint(len(reader.entries), (1,), generator=generator))]
        start = int(torch.randint(entry.n_samples - WINDOW, (1,), generator=generator))
        window = reader.read_window(entry.recording_id, start, WINDOW)
        xs.append(torch.as_tensor(window.data))
        coords.append(torch.as_tensor(window.coords))
    return torch.stack(xs), torch.stack(coords)


@pytest.mark.slow
def test_tiny_pretraining_beats_zero_prediction_on_held_out_subject(eegmat_dir, tmp_path):
    mne.set_log_level("ERROR")
    train = _shards(eegmat_dir, TRAIN, tmp_path / "train")
    held_out = _shards(eegmat_dir, HELD_OUT, tmp_path / "held_out")
    x_eval, coords_eval = _windows(held_out, 32, torch.Generator().manual_seed(1))

    torch.manual_seed(0)
    pretrainer = MaskedPretrainer(create_model("eegfm_tiny"), mask_ratio=0.5)
    optimizer = torch.optim.AdamW(pretrainer.parameters(), lr=3e-3, weight_decay=0.01)

    def evaluate() -> dict[str, float]:
        pretrainer.eval()
        with torch.no_grad():
            _, parts = pretrainer(x_eval, coords_eval, generator=torch.Generator().manual_seed(2))
        pretrainer.train()
        return {name: float(value) for name, value in parts.items()}

    before = evaluate()
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        loss, _ = pretrainer(*_windows(train, 8, generator), generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = evaluate()
    # same windows and masks before and after, so loss_zero is the same baseline
    assert after["loss_zero"] == pytest.approx(before["loss_zero"])
    assert after["loss_mse"] < 0.9 * after["loss_zero"], (before, after)
    for kind in ("patch", "channel", "block"):
        assert after[f"loss_{kind}"] < before[f"loss_{kind}"], (kind, before, after)
    print(f"held-out masked MSE {after['loss_mse']:.3f} vs zero prediction "
          f"{after['loss_zero']:.3f} (before training {before['loss_mse']:.3f})")
