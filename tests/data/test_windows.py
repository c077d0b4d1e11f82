"""Window index and distributed batch sampler over manifest entries (index-only: no shards)."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest

from eegfm.data.windows import DistributedWindowBatchSampler, ShardWindowDataset, WindowIndex

L = 800  # 4 s at 200 Hz


@dataclass(frozen=True)
class FakeEntry:
    recording_id: str
    dataset: str
    montage_id: str
    n_channels: int
    n_samples: int
    sfreq: float = 200.0


def fake_entries(n: int = 40, seed: int = 0) -> list[FakeEntry]:
    """Recordings of varied length over three datasets and four montages."""
    rng = np.random.default_rng(seed)
    return [
        FakeEntry(
            recording_id=f"rec{i:03d}",
            dataset=("eegmat", "tuh", "egi")[i % 3],
            montage_id=f"m{i % 4}",
            n_channels=(19, 22, 64, 257)[i % 4],
            n_samples=int(rng.integers(L, 60 * L)),
        )
        for i in range(n)
    ]


def keys_of(sampler: DistributedWindowBatchSampler) -> list[tuple[int, int]]:
    return [(k.recording_index, k.start) for batch in sampler for k in batch]


def test_epoch_grid_covers_each_recording_with_non_overlapping_windows() -> None:
    entries = fake_entries()
    index = WindowIndex(entries, L)
    recording, start = index.epoch_windows(seed=1, epoch=0)
    assert len(recording) == sum(e.n_samples // L for e in entries)
    assert (start >= 0).all() and (start + L <= index.n_samples[recording]).all()
    for r in range(len(entries)):
        starts = np.sort(start[recording == r])
        assert len(starts) == entries[r].n_samples // L
        assert (np.diff(starts) == L).all()


def test_epoch_windows_depend_only_on_seed_and_epoch() -> None:
    index = WindowIndex(fake_entries(), L)
    a, b = index.epoch_windows(3, 2), index.epoch_windows(3, 2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    other_epoch = index.epoch_windows(3, 3)
    assert not np.array_equal(a[1], other_epoch[1])


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("group_by_montage", [True, False])
def test_ranks_see_disjoint_windows_and_step_equally(world_size: int, group_by_montage: bool):
    index = WindowIndex(fake_entries(), L)
    samplers = [
        DistributedWindowBatchSampler(
            index, 8, seed=5, rank=r, world_size=world_size, group_by_montage=group_by_montage
        )
        for r in range(world_size)
    ]
    per_rank = [set(keys_of(s)) for s in samplers]
    assert len({len(s) for s in samplers}) == 1, "every rank must take the same number of steps"
    for i in range(world_size):
        for j in range(i + 1, world_size):
            assert not per_rank[i] & per_rank[j]
    everything = set(zip(*index.epoch_windows(5, 0), strict=True))
    seen = set().union(*per_rank)
    assert seen <= everything
    # Only the incomplete tail batches (and the rank-equalising cut) are dropped.
    assert len(seen) >= len(everything) - world_size * 8 * (len(index.montages) + 2)


def test_grouped_batches_are_mostly_single_montage() -> None:
    index = WindowIndex(fake_entries(), L)
    sampler = DistributedWindowBatchSampler(index, 8, seed=0)
    montages = [{index.montage_codes[k.recording_index] for k in batch} for batch in sampler]
    mixed = sum(len(m) > 1 for m in montages)
    # Leftovers of 4 montages fill at most 3 mixed batches.
    assert mixed <= len(index.montages) - 1
    assert all(len(batch) == 8 for batch in sampler)


def test_sampler_is_deterministic_and_epochs_differ() -> None:
    index = WindowIndex(fake_entries(), L)
    a = DistributedWindowBatchSampler(index, 4, seed=9, rank=1, world_size=2)
    b = DistributedWindowBatchSampler(index, 4, seed=9, rank=1, world_size=2)
    assert keys_of(a) == keys_of(b)
    b.set_epoch(1)
    assert keys_of(a) != keys_of(b)
    c = DistributedWindowBatchSampler(index, 4, seed=10, rank=1, world_size=2)
    assert keys_of(a) != keys_of(c)


def test_resume_skips_exactly_the_trained_batches() -> None:
    index = WindowIndex(fake_entries(), L)
    full = DistributedWindowBatchSampler(index, 4, seed=2)
    full.set_epoch(3)
    expected = list(full)
    resumed = DistributedWindowBatchSampler(index, 4, seed=2)
    resumed.resume_from_batch(epoch=3, batches_done=7)
    resumed.set_epoch(3)  # Lightning sets the same epoch again: the skip must survive
    assert len(resumed) == len(expected)
    assert list(resumed) == expected[7:]
    assert list(resumed) == expected, "the skip applies to one iteration only"
    resumed.resume_from_batch(epoch=3, batches_done=7)
    resumed.set_epoch(4)  # a new epoch drops a pending skip
    assert len(list(resumed)) == len(resumed)


def test_dataset_weights_change_the_mix() -> None:
    entries = fake_entries(60)
    plain = WindowIndex(entries, L)
    weighted = WindowIndex(entries, L, dataset_weights={"tuh": 4.0, "egi": 0.0})
    rec_plain, _ = plain.epoch_windows(0, 0)
    rec_w, _ = weighted.epoch_windows(0, 0)
    names = weighted.datasets

    def share(index: WindowIndex, rec: np.ndarray, name: str) -> float:
        return float(np.mean(names[index.dataset_codes[rec]] == name))

    assert share(weighted, rec_w, "egi") == 0.0
    p_tuh, p_mat = share(plain, rec_plain, "tuh"), share(plain, rec_plain, "eegmat")
    expected = 4 * p_tuh / (4 * p_tuh + p_mat)
    assert share(weighted, rec_w, "tuh") == pytest.approx(expected, abs=0.01)
    assert abs(len(rec_w) - len(rec_plain)) <= len(names)


def test_bad_configuration_is_reported_clearly() -> None:
    entries = fake_entries(6)
    with pytest.raises(ValueError, match="not in the shards"):
        WindowIndex(entries, L, dataset_weights={"nope": 1.0})
    with pytest.raises(ValueError, match="shorter `window_s`"):
        WindowIndex(entries, 10**9)
    mixed = [*entries, FakeEntry("x", "d", "m", 3, 10 * L, sfreq=250.0)]
    with pytest.raises(ValueError, match="mix sampling rates"):
        WindowIndex(mixed, L)
    short = [*entries, FakeEntry("short", "d", "m", 3, L - 1)]
    assert WindowIndex(short, L).n_skipped_short == 1


class FakeReader:
    """Deterministic windows: sample value = channel index + start."""

    def __init__(self, entries: list[FakeEntry]) -> None:
        self.channels = {e.recording_id: e.n_channels for e in entries}

    def read_window(self, recording_id: str, start: int, length: int) -> SimpleNamespace:
        C = self.channels[recording_id]
        data = np.arange(C, dtype=np.float32)[:, None] + start + np.zeros(length, np.float32)
        coords = np.tile(np.arange(C, dtype=np.float32)[:, None], (1, 3))
        return SimpleNamespace(data=data, coords=coords, ref_coords=np.full((C, 3), np.nan))


def test_channel_subsampling_is_a_function_of_the_window() -> None:
    entries = fake_entries(8)
    index = WindowIndex(entries, L)
    dataset = ShardWindowDataset(FakeReader(entries), index, max_channels=32)
    sampler = DistributedWindowBatchSampler(index, 4, seed=0, group_by_montage=False)
    for key in [k for batch in sampler for k in batch][:20]:
        a, b = dataset[key], dataset[key]
        n = entries[key.recording_index].n_channels
        assert a["x"].shape == (min(n, 32), L)
        assert np.array_equal(a["x"], b["x"])
        kept = a["coords"][:, 0]
        assert (np.diff(kept) > 0).all(), "channels keep their order"
        assert np.array_equal(a["x"][:, 0], kept + key.start), "signal and coordinates stay paired"
