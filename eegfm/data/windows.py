"""Random fixed-length windows over shard recordings: per-epoch window index, a distributed
batch sampler that is deterministic for (seed, epoch, world size), and the map-style dataset.

An epoch is a grid of non-overlapping windows over every recording, shifted by a seeded random
offset per recording, so each recording contributes windows in proportion to its duration.
Optional per-dataset weights resample that grid; a global permutation is dealt round-robin to
the ranks, so ranks never share a window (unless a weight above 1 repeats windows on purpose).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np
from torch.utils.data import Dataset, Sampler

from eegfm.config import PretrainConfigError

log = logging.getLogger(__name__)

# Stream tags: each random decision of an epoch draws from its own seeded stream, so adding a
# feature never shifts the windows another feature sees.
_OFFSETS, _WEIGHTS, _ORDER, _BATCH_ORDER, _SUBSAMPLE = range(5)


class EntryLike(Protocol):
    """The manifest fields the window index needs (a `eegfm.shards.ManifestEntry`)."""

    recording_id: str
    dataset: str
    montage_id: str
    n_channels: int
    n_samples: int
    sfreq: float


class WindowKey(NamedTuple):
    """One window: which recording, where it starts, and the seed for its channel subsample."""

    recording_index: int
    start: int
    subsample_seed: int


class WindowIndex:
    """Recordings long enough for one window, as arrays, and the per-epoch window draw."""

    def __init__(
        self,
        entries: Sequence[EntryLike],
        window_samples: int,
        *,
        dataset_weights: Mapping[str, float] | None = None,
    ) -> None:
        if window_samples <= 0:
            raise ValueError(f"window_samples must be positive, got {window_samples}")
        sfreqs = sorted({float(e.sfreq) for e in entries})
        if len(sfreqs) > 1:
            raise PretrainConfigError(
                f"shard directories mix sampling rates {sfreqs}: re-run `eegfm prep` with one "
                "common `sfreq` for every directory passed to --data"
            )
        usable = [e for e in entries if e.n_samples >= window_samples]
        self.n_skipped_short = len(entries) - len(usable)
        if self.n_skipped_short:
            log.warning(
                "%d of %d recordings are shorter than one window (%d samples) and are not used",
                self.n_skipped_short,
                len(entries),
                window_samples,
            )
        if not usable:
            raise PretrainConfigError(
                f"no recording holds a full window of {window_samples} samples "
                f"({len(entries)} recordings in the manifest): use a shorter `window_s`"
            )
        self.window_samples = int(window_samples)
        self.sfreq = sfreqs[0]
        self.recording_ids = [e.recording_id for e in usable]
        self.n_samples = np.array([e.n_samples for e in usable], dtype=np.int64)
        self.n_channels = np.array([e.n_channels for e in usable], dtype=np.int64)
        self.datasets, self.dataset_codes = np.unique(
            [e.dataset for e in usable], return_inverse=True
        )
        self.montages, self.montage_codes = np.unique(
            [e.montage_id for e in usable], return_inverse=True
        )
        self.dataset_weights = self._weights_per_code(dataset_weights)

    def _weights_per_code(self, weights: Mapping[str, float] | None) -> np.ndarray | None:
        if not weights:
            return None
        unknown = sorted(set(weights) - set(self.datasets.tolist()))
        if unknown:
            raise PretrainConfigError(
                f"data.dataset_weights names datasets {unknown} that are not in the shards; "
                f"known datasets: {self.datasets.tolist()}"
            )
        values = np.array([float(weights.get(d, 1.0)) for d in self.datasets])
        if (values < 0).any() or not np.isfinite(values).all() or values.sum() == 0:
            raise PretrainConfigError(
                f"data.dataset_weights must be finite, >= 0 and not all 0: {dict(weights)}"
            )
        return values

    def epoch_windows(self, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(recording_index, start) of every window of an epoch, in a seeded global order."""
        L = self.window_samples
        counts = self.n_samples // L
        slack = self.n_samples - counts * L
        offsets = np.random.default_rng([seed, epoch, _OFFSETS]).integers(0, slack + 1)
        recording = np.repeat(np.arange(len(counts)), counts)
        first = np.repeat(np.cumsum(counts) - counts, counts)
        start = offsets[recording] + (np.arange(len(recording)) - first) * L
        if self.dataset_weights is not None:
            keep = self._weighted_draw(recording, np.random.default_rng([seed, epoch, _WEIGHTS]))
            recording, start = recording[keep], start[keep]
        order = np.random.default_rng([seed, epoch, _ORDER]).permutation(len(recording))
        return recording[order], start[order]

    def _weighted_draw(self, recording: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Indices into the grid so dataset d gets a share ∝ weight_d × its duration."""
        codes = self.dataset_codes[recording]
        n_per = np.bincount(codes, minlength=len(self.datasets))
        share = self.dataset_weights * n_per
        targets = np.rint(len(recording) * share / share.sum()).astype(np.int64)
        picks = []
        for code, target in enumerate(targets):
            pool = np.flatnonzero(codes == code)
            if target == 0 or len(pool) == 0:
                continue
            # Up-weighted datasets cycle through fresh permutations of their own grid.
            repeats = -(-target // len(pool))
            picks.append(np.concatenate([rng.permutation(pool) for _ in range(repeats)])[:target])
        return np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)


def _rank_batches(montage: np.ndarray, batch_size: int, group_by_montage: bool) -> np.ndarray:
    """Batches (n_batches, batch_size) of positions into one rank's window list: full
    same-montage batches first, then every montage's leftovers in mixed (padded) batches."""
    n = len(montage)
    if not group_by_montage:
        return np.arange((n // batch_size) * batch_size).reshape(-1, batch_size)
    order = np.argsort(montage, kind="stable")
    bounds = np.flatnonzero(np.diff(montage[order])) + 1
    full_parts, leftovers = [], []
    for group in np.split(order, bounds):
        cut = (len(group) // batch_size) * batch_size
        full_parts.append(group[:cut])
        leftovers.append(group[cut:])
    pool = np.sort(np.concatenate(leftovers))
    pool = pool[: (len(pool) // batch_size) * batch_size]
    return np.concatenate([*full_parts, pool]).reshape(-1, batch_size)


def _count_rank_batches(montage: np.ndarray, batch_size: int, group_by_montage: bool) -> int:
    """len(_rank_batches(...)) from counts alone."""
    if not group_by_montage:
        return len(montage) // batch_size
    per_montage = np.bincount(montage)
    return int((per_montage // batch_size).sum() + (per_montage % batch_size).sum() // batch_size)


class DistributedWindowBatchSampler(Sampler[list[WindowKey]]):
    """Yields this rank's batches of `WindowKey`s for the current epoch.

    Every rank derives every rank's batch count from the index alone and all use the minimum,
    so DDP ranks take the same number of steps. `set_epoch` picks the epoch; `resume_from_batch`
    skips the batches a restored run already trained on.
    """

    def __init__(
        self,
        index: WindowIndex,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        group_by_montage: bool = True,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"data.batch_size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.index, self.batch_size, self.seed = index, int(batch_size), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.group_by_montage = group_by_montage
        self.epoch = 0
        self._skip = 0
        self._plan: _EpochPlan | None = None

    @property
    def sampler(self) -> DistributedWindowBatchSampler:
        """Lightning calls `batch_sampler.sampler.set_epoch(e)`; this sampler is its own."""
        return self

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to iterate; a pending resume offset only survives for its own epoch."""
        if epoch != self.epoch:
            self._skip = 0
        self.epoch = int(epoch)

    @property
    def pending_skip(self) -> int:
        """Batches the next iteration skips (set by `resume_from_batch`)."""
        return self._skip

    def resume_from_batch(self, epoch: int, batches_done: int) -> None:
        """Make the next iteration start at batch `batches_done` of `epoch`."""
        self.epoch, self._skip = int(epoch), int(batches_done)

    def _epoch_plan(self, epoch: int) -> _EpochPlan:
        if self._plan is not None and self._plan.epoch == epoch:
            return self._plan
        recording, start = self.index.epoch_windows(self.seed, epoch)
        # One seed per window, shared by all ranks: a window's channel subsample is its own.
        subsample = np.random.default_rng([self.seed, epoch, _SUBSAMPLE]).integers(
            0, 2**63 - 1, size=len(recording), dtype=np.int64
        )
        montage = self.index.montage_codes[recording]
        world, size, grouped = self.world_size, self.batch_size, self.group_by_montage
        n_batches = min(_count_rank_batches(montage[r::world], size, grouped) for r in range(world))
        mine = slice(self.rank, None, self.world_size)
        positions = _rank_batches(montage[mine], self.batch_size, self.group_by_montage)
        order = np.random.default_rng([self.seed, epoch, _BATCH_ORDER, self.rank]).permutation(
            len(positions)
        )
        self._plan = _EpochPlan(
            epoch, positions[order[:n_batches]], recording[mine], start[mine], subsample[mine]
        )
        return self._plan

    def batch(self, i: int, epoch: int | None = None) -> list[WindowKey]:
        """The i-th batch of this rank in an epoch (default: the current one)."""
        plan = self._epoch_plan(self.epoch if epoch is None else int(epoch))
        return [
            WindowKey(int(plan.recording[p]), int(plan.start[p]), int(plan.subsample[p]))
            for p in plan.positions[i]
        ]

    def __len__(self) -> int:
        return len(self._epoch_plan(self.epoch).positions)

    def __iter__(self) -> Iterator[list[WindowKey]]:
        skip, self._skip = self._skip, 0
        for i in range(skip, len(self)):
            yield self.batch(i)


class _EpochPlan(NamedTuple):
    epoch: int
    positions: np.ndarray  # (n_batches, batch_size) positions into this rank's windows
    recording: np.ndarray  # this rank's windows, in dealt order
    start: np.ndarray
    subsample: np.ndarray


BAD_WINDOW_POLICIES = ("raise", "skip")


class ShardWindowDataset(Dataset):
    """Reads one `WindowKey` from the shards: signal, coordinates, optional channel subsample.

    The reader opens its HDF5 handles lazily, so each DataLoader worker gets its own.
    ``on_bad_window="skip"``: a window that cannot be read (damaged or truncated shard) or holds
    NaN/Inf comes back as ``{"error": ...}`` and `pad_collate` replaces it with another window of
    the batch, with a warning; ``"raise"`` (default) lets the error stop training.
    """

    def __init__(self, reader: Any, index: WindowIndex, *, max_channels: int | None = None,
                 on_bad_window: str = "raise") -> None:
        if max_channels is not None and max_channels < 1:
            raise PretrainConfigError(f"data.max_channels must be >= 1 or null, got {max_channels}")
        if on_bad_window not in BAD_WINDOW_POLICIES:
            raise PretrainConfigError(f"data.on_bad_window must be one of {BAD_WINDOW_POLICIES}, "
                                      f"got {on_bad_window!r}")
        self.reader, self.index, self.max_channels = reader, index, max_channels
        self.on_bad_window = on_bad_window

    def __len__(self) -> int:
        return int((self.index.n_samples // self.index.window_samples).sum())

    def __getitem__(self, key: WindowKey) -> dict[str, Any]:
        recording_id = self.index.recording_ids[key.recording_index]
        try:
            window = self.reader.read_window(recording_id, key.start, self.index.window_samples)
            if self.on_bad_window == "skip" and not np.isfinite(window.data).all():
                raise ValueError("non-finite samples")
        except (OSError, KeyError, ValueError) as error:
            if self.on_bad_window == "raise":
                raise
            return {"error": f"{type(error).__name__}: {error}", "recording_id": recording_id,
                    "recording_index": key.recording_index, "start": key.start}
        data, coords, ref_coords = window.data, window.coords, window.ref_coords
        n_channels = data.shape[0]
        if self.max_channels is not None and n_channels > self.max_channels:
            rng = np.random.default_rng(key.subsample_seed)
            keep = np.sort(rng.choice(n_channels, self.max_channels, replace=False))
            data, coords, ref_coords = data[keep], coords[keep], ref_coords[keep]
        return {
            "x": data,
            "coords": coords,
            "ref_coords": ref_coords,
            "recording_id": recording_id,
            "recording_index": key.recording_index,
            "start": key.start,
        }
