"""Worker batches reuse shared-memory blocks: batches a caller keeps must never change."""

from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from eegfm.data import collate
from eegfm.data.collate import PadCollate, detach_batch, pad_collate
from eegfm.shards import Recording, ShardWriter
from eegfm.training.pretrain.datamodule import PretrainDataModule, ResumableDataLoader

WINDOW_S = 0.5
BATCH = 8


@pytest.fixture(scope="module")
def two_montages(eegmat_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards of two real eegmat recordings, one cut to 7 of its 19 EEG channels."""
    out = tmp_path_factory.mktemp("two_montages")
    rng = np.random.default_rng(0)
    with ShardWriter(out, sfreq=500.0, durable=False) as writer:
        for name, n_channels in (("Subject00_2", 19), ("Subject01_2", 7)):
            raw = mne.io.read_raw_edf(eegmat_dir / f"{name}.edf", preload=True, verbose="error")
            data = (raw.get_data(picks=list(range(n_channels))) * 1e6).astype(np.float32)
            coords = (rng.normal(size=(n_channels, 3)) * 0.05).astype(np.float32)
            ref = np.full_like(coords, np.nan)
            names = raw.ch_names[:n_channels]
            attrs = {"dataset": "eegmat", "montage_id": f"first{n_channels}"}
            writer.write(Recording(name, np.ascontiguousarray(data), coords, ref, names,
                                   attrs=attrs))
    return out


def _two_epochs(loader: DataLoader) -> list[dict]:
    """Every batch of epochs 0 and 1, kept."""
    batches = []
    for epoch in (0, 1):
        loader.batch_sampler.set_epoch(epoch)
        batches.extend(loader)
    return batches


def _assert_same(batches: list[dict], reference: list[dict]) -> None:
    assert len(batches) == len(reference)
    for i, (batch, expected) in enumerate(zip(batches, reference, strict=True)):
        assert batch.keys() == expected.keys()
        assert batch["recording_id"] == expected["recording_id"], f"batch {i}"
        for key, value in expected.items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(batch[key], value, rtol=0, atol=0, equal_nan=True,
                                           msg=lambda m, i=i, key=key: f"batch {i} {key}: {m}")


def _module(root: Path, workers: int, **kwargs: object) -> PretrainDataModule:
    data = PretrainDataModule([str(root)], window_s=WINDOW_S, batch_size=BATCH,
                              num_workers=workers, pin_memory=False, **kwargs)
    data.setup("fit")
    return data


@pytest.mark.parametrize("persistent", [True, False])
@pytest.mark.parametrize("prefetch_factor", [1, 2])
def test_kept_batches_match_in_process(two_montages: Path, persistent: bool,
                                       prefetch_factor: int) -> None:
    reference = _two_epochs(_module(two_montages, 0).train_dataloader())
    loader = _module(two_montages, 2, persistent_workers=persistent,
                     prefetch_factor=prefetch_factor).train_dataloader()
    assert isinstance(loader.collate_fn, PadCollate)
    assert loader.collate_fn.prefetch_factor == loader.prefetch_factor == prefetch_factor
    batches = _two_epochs(loader)
    # Many more batches per worker than blocks, of both montages and padded: blocks are reused
    # and replaced by larger ones while earlier batches are still held.
    assert len(batches) > 4 * 2 * loader.collate_fn.n_slots
    assert {b["x"].shape[1] for b in batches} == {7, 19}
    _assert_same(batches, reference)
    assert not any(b["x"].is_shared() for b in batches), "yielded batches alias no block"


def test_resumed_epoch_after_a_break_matches(two_montages: Path) -> None:
    """Persistent workers, an epoch left early, then a fresh epoch: blocks keep cycling."""
    reference = _two_epochs(_module(two_montages, 0).train_dataloader())
    loader = _module(two_montages, 1, prefetch_factor=1).train_dataloader()
    loader.batch_sampler.set_epoch(0)
    first = []
    for batch in loader:
        first.append(batch)
        if len(first) == 3:
            break
    rest = _two_epochs(loader)
    _assert_same(first, reference[:3])
    _assert_same(rest, reference)


def test_without_the_copy_a_kept_batch_is_overwritten(two_montages: Path) -> None:
    """Why the loader copies: a plain DataLoader hands out the reused blocks themselves."""
    data = _module(two_montages, 1, prefetch_factor=1)
    reference = _two_epochs(data.train_dataloader())
    plain = DataLoader(data.train_dataloader().dataset, batch_sampler=data.sampler,
                       num_workers=1, collate_fn=PadCollate(1))
    kept = _two_epochs(plain)
    changed = sum(not torch.equal(b["x"], r["x"]) for b, r in zip(kept, reference, strict=True))
    assert changed > 0


def test_collate_must_know_the_loader_prefetch(two_montages: Path) -> None:
    loader = _module(two_montages, 1, prefetch_factor=3).train_dataloader()
    with pytest.raises(ValueError, match="prefetch_factor=3"):
        ResumableDataLoader(loader.dataset, loader.batch_sampler, num_workers=1,
                            prefetch_factor=3, collate_fn=PadCollate(2))


def test_in_process_loader_uses_plain_collate(two_montages: Path) -> None:
    assert _module(two_montages, 0).train_dataloader().collate_fn is pad_collate
    assert _module(two_montages, 1).train_dataloader().collate_fn.prefetch_factor == 2


def _window(n_channels: int, value: float) -> dict:
    return {"x": np.full((n_channels, 10), value, np.float32),
            "coords": np.ones((n_channels, 3), np.float32),
            "ref_coords": np.full((n_channels, 3), np.nan, np.float32),
            "recording_id": f"r{value:g}", "recording_index": int(value), "start": 0}


def test_pool_cycles_its_blocks_and_grows_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collate, "get_worker_info", lambda: object())  # as if in a worker
    collate_fn = PadCollate(1)
    small = [collate_fn([_window(3, 1.0), _window(2, 2.0)]) for _ in range(collate_fn.n_slots)]
    assert all(b["x"].is_shared() for b in small)
    pointers = [b["x"].untyped_storage().data_ptr() for b in small]
    assert len(set(pointers)) == collate_fn.n_slots
    again = collate_fn([_window(3, 5.0)])
    assert again["x"].untyped_storage().data_ptr() == pointers[0], "block 0 reused"
    assert again["coords"].untyped_storage().data_ptr() == pointers[0], "one block per batch"
    grown = collate_fn([_window(40, 6.0)])
    assert grown["x"].untyped_storage().data_ptr() != pointers[1], "too small: replaced"
    assert small[1]["x"][1, :2].eq(2.0).all(), "the replaced block is left intact"
    expected = pad_collate([_window(3, 1.0), _window(2, 2.0)])
    _assert_same([small[2]], [expected])


def test_detach_copies_only_shared_tensors() -> None:
    batch = pad_collate([_window(2, 1.0)])
    assert detach_batch(batch) is batch
    batch["x"].share_memory_()
    detached = detach_batch(batch)
    assert not detached["x"].is_shared() and detached["coords"] is batch["coords"]
    _assert_same([detached], [batch])
