"""Damaged shards in pretraining: fail loudly by default, or skip the windows when asked."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from eegfm.data.collate import pad_collate
from eegfm.data.windows import ShardWindowDataset, WindowIndex, WindowKey
from eegfm.prep import load_prep_config, run_prep
from eegfm.shards import read_manifest
from eegfm.training.pretrain.datamodule import PretrainDataModule

L = 800


class BrokenReader:
    """Readable windows except for ``broken`` (an OSError) and ``nan`` (NaN samples)."""

    def read_window(self, recording_id: str, start: int, length: int) -> SimpleNamespace:
        if recording_id == "broken":
            raise OSError("Can't read data (inflate() failed)")
        value = np.nan if recording_id == "nan" else float(start)
        return SimpleNamespace(data=np.full((3, length), value, np.float32),
                               coords=np.ones((3, 3), np.float32),
                               ref_coords=np.full((3, 3), np.nan, np.float32))


def _dataset(on_bad_window: str) -> ShardWindowDataset:
    entries = [SimpleNamespace(recording_id=r, dataset="d", montage_id="m", n_channels=3,
                               n_samples=4 * L, sfreq=200.0) for r in ("good", "broken", "nan")]
    return ShardWindowDataset(BrokenReader(), WindowIndex(entries, L),
                              on_bad_window=on_bad_window)


def _key(recording_index: int, start: int = 0) -> WindowKey:
    return WindowKey(recording_index, start, 0)


def test_default_raises_on_an_unreadable_window() -> None:
    with pytest.raises(OSError, match="inflate"):
        _dataset("raise")[_key(1)]


def test_default_names_a_nan_window_in_the_batch() -> None:
    dataset = _dataset("raise")
    with pytest.raises(ValueError, match="nan@0"):
        pad_collate([dataset[_key(0)], dataset[_key(2)]])


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees its own first warning per recording (the record is per process)."""
    monkeypatch.setattr("eegfm.data.collate._WARNED", set())


def test_skip_replaces_bad_windows_and_warns_once_per_recording() -> None:
    dataset = _dataset("skip")
    samples = [dataset[_key(0, 0)], dataset[_key(1)], dataset[_key(0, L)], dataset[_key(2)],
               dataset[_key(1, L)]]
    assert [("error" in s) for s in samples] == [False, True, False, True, True]
    with pytest.warns(RuntimeWarning, match="skipping unreadable window") as record:
        batch = pad_collate(samples)
    assert {str(w.message).split()[3].split("@")[0] for w in record} == {"broken", "nan"}
    assert batch["x"].shape == (5, 3, L), "the batch keeps its size"
    assert batch["recording_id"] == ["good"] * 5
    assert batch["start"].tolist() == [0, 0, L, L, 0]
    assert np.isfinite(batch["x"].numpy()).all()


def test_skip_with_no_readable_window_raises() -> None:
    dataset = _dataset("skip")
    with pytest.raises(ValueError, match="no readable window in a batch"):
        pad_collate([dataset[_key(1)], dataset[_key(2)]])


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="on_bad_window"):
        _dataset("ignore")


def test_truncated_real_shard(eegmat_dir: Path, tmp_path: Path) -> None:
    """Two shard directories of real eegmat EEG, one truncated on disk after prep."""
    config = load_prep_config(None)
    good, damaged = tmp_path / "good", tmp_path / "damaged"
    run_prep([str(eegmat_dir / "Subject00_1.edf")], good, config, progress=False)
    run_prep([str(eegmat_dir / "Subject01_2.edf")], damaged, config, progress=False)
    shard = damaged / read_manifest(damaged)[0].shard
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 3])

    def module(on_bad_window: str) -> PretrainDataModule:
        data = PretrainDataModule([str(good), str(damaged)], batch_size=8, num_workers=0,
                                  on_bad_window=on_bad_window)
        data.setup("fit")
        return data

    def batches(on_bad_window: str) -> list[dict]:
        return list(module(on_bad_window).train_dataloader())

    with pytest.raises(OSError):
        batches("raise")
    with pytest.warns(RuntimeWarning, match="Subject01_2"):
        kept = batches("skip")
    ids = {r for batch in kept for r in batch["recording_id"]}
    assert ids == {next(e.recording_id for e in read_manifest(good))}
    planned = [len(keys) for keys in module("skip").sampler]
    assert [len(b["recording_id"]) for b in kept] == planned, "every window slot is filled"
