"""Batch windows of different montages: pad channels to the largest window and mark the padding.

Inside a DataLoader worker a batch is written straight into shared memory, all its tensors in one
block, so the worker -> main transfer passes one file descriptor and copies nothing. `PadCollate`
goes further for the pretraining loader: each worker reuses a few such blocks, so after warm-up
no batch allocates, maps or page-faults shared memory (see its docstring for the contract).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

# (shape, dtype) of each tensor a batch needs; an allocator returns one tensor per spec.
TensorSpec = tuple[tuple[int, ...], torch.dtype]
Allocator = Callable[[Sequence[TensorSpec]], list[torch.Tensor]]

_ALIGN_BYTES = 64  # start every tensor of a shared block on a cache line


def pad_collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack window samples into a batch, padding channels.

    Returns ``x (B, C, T)`` µV with zeros in padded channels, ``coords (B, C, 3)`` with zeros and
    ``ref_coords (B, C, 3)`` with NaN there, ``channel_mask (B, C)`` (True = real channel),
    ``recording_index (B,)``, ``start (B,)`` and ``recording_id`` (list of B str).
    A window holding NaN/Inf raises, naming it. Samples a dataset marked unreadable
    (``{"error": ...}``, `ShardWindowDataset(on_bad_window="skip")`) are replaced by the batch's
    readable windows, so the batch keeps its size and every DDP rank its step count.
    """
    # In a worker, one fresh shared block per batch: the queue then sends it without a copy and
    # with one file descriptor instead of one per tensor.
    allocate = _allocate_private if get_worker_info() is None else _allocate_shared
    return _collate(samples, allocate)


class PadCollate:
    """`pad_collate` whose batches, inside DataLoader workers, reuse shared-memory blocks.

    Each worker writes its n-th batch into block ``n % (prefetch_factor + 2)`` of its own pool
    (allocated once, replaced by a larger one when a batch needs more), so steady state allocates
    no shared memory, and the main process finds the block already mapped (torch caches shared
    storages by file). A block is rewritten while the main process may still hold the batch it
    carried, so the consumer must copy each batch out on receipt: `ResumableDataLoader` does
    (`detach_batch`); do not hand a `PadCollate` to a plain DataLoader. `prefetch_factor` must be
    the loader's. Outside a worker it is `pad_collate`.
    """

    def __init__(self, prefetch_factor: int) -> None:
        if prefetch_factor < 1:
            raise ValueError(f"data.prefetch_factor must be >= 1, got {prefetch_factor}")
        self.prefetch_factor = int(prefetch_factor)
        # The DataLoader sends a worker its n-th index just before it returns that worker's
        # batch n - prefetch_factor, so prefetch_factor + 1 blocks can be in use; one is margin.
        self.n_slots = self.prefetch_factor + 2
        self._pool: _SlotPool | None = None

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Collate like `pad_collate`, into this worker's next pooled block."""
        if get_worker_info() is None:
            return pad_collate(samples)
        if self._pool is None:  # first batch of this worker process
            self._pool = _SlotPool(self.n_slots)
        return _collate(samples, self._pool)

    def __getstate__(self) -> dict[str, Any]:
        # Spawned workers unpickle the collate: each starts with an empty pool of its own.
        return {**self.__dict__, "_pool": None}


def detach_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """The batch with its shared-memory tensors copied to private memory (itself if none)."""
    shared = [k for k, v in batch.items() if isinstance(v, torch.Tensor) and v.is_shared()]
    if not shared:
        return batch
    return {**batch, **{k: batch[k].clone() for k in shared}}


def _collate(samples: Sequence[dict[str, Any]], allocate: Allocator) -> dict[str, Any]:
    """`pad_collate` writing into the tensors `allocate` returns."""
    if not samples:
        raise ValueError("pad_collate got an empty batch")
    samples = _replace_bad(samples)
    B = len(samples)
    C = max(s["x"].shape[0] for s in samples)
    T = samples[0]["x"].shape[1]
    if any(s["x"].shape[1] != T for s in samples):
        raise ValueError(f"windows in a batch differ in length: {[s['x'].shape for s in samples]}")
    x, coords, ref_coords, channel_mask, recording_index, start = allocate([
        ((B, C, T), torch.float32),
        ((B, C, 3), torch.float32),
        ((B, C, 3), torch.float32),
        ((B, C), torch.bool),
        ((B,), torch.int64),
        ((B,), torch.int64),
    ])
    # Stack through numpy views of the batch tensors: each window is copied once, straight
    # into its place; only windows of smaller montages are padded first.
    np.stack([_pad(s["x"], C, 0.0) for s in samples], out=x.numpy())
    np.stack([_pad(s["coords"], C, 0.0) for s in samples], out=coords.numpy())
    np.stack([_pad(s["ref_coords"], C, np.nan) for s in samples], out=ref_coords.numpy())
    n_channels = np.array([s["x"].shape[0] for s in samples])
    np.less(np.arange(C), n_channels[:, None], out=channel_mask.numpy())
    recording_index.numpy()[:] = [s["recording_index"] for s in samples]
    start.numpy()[:] = [s["start"] for s in samples]
    # One reduction instead of an elementwise mask: a NaN/Inf anywhere makes the sum non-finite.
    if not torch.isfinite(x.sum()):
        bad = [b for b in range(B) if not torch.isfinite(x[b]).all()]
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
        "recording_index": recording_index,
        "start": start,
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


def _allocate_private(specs: Sequence[TensorSpec]) -> list[torch.Tensor]:
    """Ordinary tensors (in-process loading)."""
    return [torch.empty(shape, dtype=dtype) for shape, dtype in specs]


def _allocate_shared(specs: Sequence[TensorSpec]) -> list[torch.Tensor]:
    """Views of one new shared-memory block."""
    return _views(_shared_block(_block_bytes(specs)), specs)


class _SlotPool:
    """A worker's shared-memory blocks, handed out round robin, one per batch."""

    def __init__(self, n_slots: int) -> None:
        self._blocks: list[torch.Tensor | None] = [None] * n_slots
        self._batches = 0

    def __call__(self, specs: Sequence[TensorSpec]) -> list[torch.Tensor]:
        slot = self._batches % len(self._blocks)
        self._batches += 1
        nbytes = _block_bytes(specs)
        block = self._blocks[slot]
        if block is None or block.numel() < nbytes:
            # Replaced, not resized in place: a batch the main process still maps keeps the old.
            block = _shared_block(nbytes)
            self._blocks[slot] = block
        return _views(block, specs)


def _shared_block(nbytes: int) -> torch.Tensor:
    """A uint8 tensor over new shared memory."""
    # Allocated in shared memory, as default_collate does; `share_memory_()` on a new tensor
    # would fault in private pages and copy them over.
    storage = torch.UntypedStorage._new_shared(nbytes)
    return torch.empty(0, dtype=torch.uint8).set_(storage)


def _block_bytes(specs: Sequence[TensorSpec]) -> int:
    """Bytes of a block holding every spec, each aligned."""
    return sum(_aligned(math.prod(shape) * dtype.itemsize) for shape, dtype in specs)


def _aligned(nbytes: int) -> int:
    return -(-nbytes // _ALIGN_BYTES) * _ALIGN_BYTES


def _views(block: torch.Tensor, specs: Sequence[TensorSpec]) -> list[torch.Tensor]:
    """Tensors of the given shapes and dtypes laid out one after another in a uint8 block."""
    views, offset = [], 0
    for shape, dtype in specs:
        nbytes = math.prod(shape) * dtype.itemsize
        views.append(block[offset : offset + nbytes].view(dtype).view(shape))
        offset += _aligned(nbytes)
    return views
