"""Pretraining data: random windows from one or many shard directories, per DDP rank, resumable
mid-epoch through the DataLoader's `state_dict` (which Lightning stores in its checkpoints)."""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader

from eegfm.config import PretrainConfigError
from eegfm.data.collate import PadCollate, detach_batch, pad_collate
from eegfm.data.windows import DistributedWindowBatchSampler, ShardWindowDataset, WindowIndex
from eegfm.shards import ShardReader

log = logging.getLogger(__name__)


class ResumableDataLoader(DataLoader):
    """A DataLoader over a `DistributedWindowBatchSampler` whose state is the position reached.

    Lightning saves `state_dict()` in every checkpoint and calls `load_state_dict()` before it
    iterates again. The position is counted from the trainer's optimizer steps (not from batches
    handed out), so it matches the weights even when a checkpoint is written mid-step, e.g. by
    the SLURM requeue signal handler.

    With a `PadCollate` and worker processes, each batch arrives in a shared-memory block its
    worker will reuse, and is copied to private memory before it is yielded (the pin-memory
    thread's copy does this when pinning is on), so batches a caller keeps never change.
    """

    def __init__(
        self,
        dataset: ShardWindowDataset,
        batch_sampler: DistributedWindowBatchSampler,
        *,
        batches_trained: Callable[[], int] | None = None,
        **loader_kwargs: Any,
    ) -> None:
        super().__init__(dataset, batch_sampler=batch_sampler, **loader_kwargs)
        collate = self.collate_fn
        self._pooled = isinstance(collate, PadCollate) and self.num_workers > 0
        if self._pooled and collate.prefetch_factor < self.prefetch_factor:
            raise ValueError(
                f"PadCollate(prefetch_factor={collate.prefetch_factor}) would reuse its buffers "
                f"too early for a loader with prefetch_factor={self.prefetch_factor}: build it "
                "with the loader's prefetch_factor"
            )
        self._batches_trained = batches_trained
        self._epoch: int | None = None  # epoch of the current (or last) iteration
        self._epoch_base = 0  # batches_trained() when that epoch's first batch started
        self._yielded = 0

    def __iter__(self) -> Iterator[Any]:
        sampler: DistributedWindowBatchSampler = self.batch_sampler
        skip = sampler.pending_skip
        self._epoch, self._yielded = sampler.epoch, skip
        if self._batches_trained is not None:
            self._epoch_base = self._batches_trained() - skip
        # The received views of each worker's blocks, kept so torch's receive cache holds their
        # mappings: a block seen again is then neither mapped nor page-faulted again.
        received: deque[dict[str, Any]] = deque(
            maxlen=self.num_workers * self.collate_fn.n_slots if self._pooled else 0
        )
        for batch in super().__iter__():
            if self._pooled:
                detached = detach_batch(batch)
                if detached is not batch:  # not already copied by the pin-memory thread
                    received.append(batch)
                batch = detached
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """Where training is in the window order: epoch and batches of it already trained."""
        sampler: DistributedWindowBatchSampler = self.batch_sampler
        if self._epoch is None:  # not iterated yet: whatever position is pending
            epoch, done = sampler.epoch, sampler.pending_skip
        elif self._batches_trained is None:
            epoch, done = self._epoch, self._yielded
        else:
            epoch, done = self._epoch, self._batches_trained() - self._epoch_base
        return {
            "epoch": int(epoch),
            "batches_done": int(done),
            "seed": sampler.seed,
            "world_size": sampler.world_size,
            "batch_size": sampler.batch_size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a saved position (approximately if world or batch size changed)."""
        sampler: DistributedWindowBatchSampler = self.batch_sampler
        done = int(state["batches_done"])
        if state.get("seed", sampler.seed) != sampler.seed:
            log.warning("data.seed changed since the checkpoint: the window order starts afresh")
        old = state.get("world_size", 1) * state.get("batch_size", sampler.batch_size)
        new = sampler.world_size * sampler.batch_size
        if old != new:
            log.warning(
                "world size x batch size changed (%d -> %d windows per step): resuming at the "
                "same fraction of the epoch, not at the exact window",
                old,
                new,
            )
            done = done * old // new
        sampler.resume_from_batch(int(state["epoch"]), done)


class PretrainDataModule(L.LightningDataModule):
    """Random fixed-length windows across all recordings of one or more shard directories.

    Args:
        roots: shard directories (outputs of `eegfm prep`), read together.
        window_s: window length in seconds (must be a multiple of the model's patch length).
        batch_size: windows per batch on each rank.
        num_workers: DataLoader worker processes per rank; each opens its own HDF5 handles.
        group_by_montage: batch windows of one montage together (no padding); leftovers go
            into padded mixed batches. False: every batch mixes montages, padded.
        max_channels: draw this many channels at random from windows with more (None: all).
        dataset_weights: multiply the duration-proportional share of a dataset (manifest
            `dataset` field); unnamed datasets keep 1.0, 0 drops one.
        seed: seeds the window order (with the epoch); the same seed, epoch and world size
            give the same batches on every rank.
        pin_memory: pin host memory (None: when CUDA is available).
        persistent_workers: keep workers alive between epochs.
        prefetch_factor: batches each worker prepares ahead (None: 2, PyTorch's default).
        on_bad_window: "raise" (default) stops on a window that cannot be read or holds
            NaN/Inf; "skip" replaces it by another window of its batch and warns once per
            recording (run `eegfm validate` to find damaged shards).
        verify: check each recording's checksums when a loader process first opens it (the
            data's, and from shard format 2 on the metadata's: positions, channel names,
            events, attrs), as `eegfm validate` does, so a damaged recording stops the run (or,
            with on_bad_window "skip", is left out) instead of being trained on. Costs one read
            of every recording per loader process (docs/pretrain.md).

    Options only the shards can reject (a missing --data directory, a batch larger than an epoch,
    a window longer than every recording) raise `PretrainConfigError` in `setup`, which
    `eegfm pretrain` reports as a configuration error.
    """

    def __init__(
        self,
        roots: list[str],
        window_s: float = 4.0,
        batch_size: int = 32,
        num_workers: int = 4,
        group_by_montage: bool = True,
        max_channels: int | None = None,
        dataset_weights: dict[str, float] | None = None,
        seed: int = 0,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
        on_bad_window: Literal["raise", "skip"] = "raise",
        verify: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(roots, str):
            roots = [roots]
        if not roots:
            raise PretrainConfigError(
                "data.roots is empty: pass shard directories with --data DIR [DIR...]"
            )
        if window_s <= 0:
            raise PretrainConfigError(f"data.window_s must be positive, got {window_s}")
        # checked again by the sampler and the dataset; here, before anything is written
        if batch_size <= 0:
            raise PretrainConfigError(f"data.batch_size must be positive, got {batch_size}")
        if max_channels is not None and max_channels < 1:
            raise PretrainConfigError(f"data.max_channels must be >= 1 or null, got {max_channels}")
        self.save_hyperparameters()
        self.roots = [str(r) for r in roots]
        self.reader: ShardReader | None = None
        self.index: WindowIndex | None = None
        self.sampler: DistributedWindowBatchSampler | None = None

    @property
    def sfreq(self) -> float:
        """Sampling rate of the shards (Hz)."""
        return self._index().sfreq

    @property
    def window_samples(self) -> int:
        """Window length in samples at the shard rate."""
        return self._index().window_samples

    def _index(self) -> WindowIndex:
        if self.index is None:
            try:
                self.reader = ShardReader(self.roots, verify=self.hparams.verify)
            except (FileNotFoundError, ValueError) as error:
                # only the manifests are read here: what they reject is the --data argument (a
                # missing or foreign directory, a malformed manifest), not a shard's content
                raise PretrainConfigError(str(error)) from error
            if not self.reader.entries:
                raise PretrainConfigError(
                    f"no recordings in the manifests of {self.roots}: run eegfm prep"
                )
            sfreq = float(self.reader.entries[0].sfreq)
            window = round(self.hparams.window_s * sfreq)
            if window < 1:
                raise PretrainConfigError(
                    f"data.window_s={self.hparams.window_s} is shorter than one sample at "
                    f"{sfreq} Hz: choose a window of whole patches"
                )
            self.index = WindowIndex(
                self.reader.entries, window, dataset_weights=self.hparams.dataset_weights
            )
        return self.index

    def setup(self, stage: str | None = None) -> None:
        """Build the window index and this rank's sampler (rank and world from the trainer)."""
        index = self._index()
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        self.sampler = DistributedWindowBatchSampler(
            index,
            self.hparams.batch_size,
            seed=self.hparams.seed,
            rank=rank,
            world_size=world,
            group_by_montage=self.hparams.group_by_montage,
        )
        hours = float(index.n_samples.sum()) / index.sfreq / 3600
        log.info(
            "rank %d/%d: %d recordings (%.2f h), %d montages, %d batches per epoch",
            rank,
            world,
            len(index.recording_ids),
            hours,
            len(index.montages),
            len(self.sampler),
        )
        if len(self.sampler) == 0:
            raise PretrainConfigError(
                f"data.batch_size={self.hparams.batch_size} x {world} ranks is larger than one "
                f"epoch of windows ({math.fsum(index.n_samples // index.window_samples):.0f}): "
                "lower the batch size or add recordings"
            )

    def train_dataloader(self) -> ResumableDataLoader:
        """This rank's loader; resumable mid-epoch from a Lightning checkpoint."""
        if self.sampler is None:
            self.setup("fit")
        hp = self.hparams
        trainer = self.trainer
        batches_trained = None
        if trainer is not None:

            def batches_trained() -> int:
                return trainer.global_step * trainer.accumulate_grad_batches

        workers = int(hp.num_workers)
        pin = torch.cuda.is_available() if hp.pin_memory is None else hp.pin_memory
        extra: dict[str, Any] = {}
        collate: Callable[[list[dict[str, Any]]], dict[str, Any]] = pad_collate
        if workers > 0:
            # Explicit, because the collate's buffer pool is sized from it.
            prefetch = 2 if hp.prefetch_factor is None else int(hp.prefetch_factor)
            extra["persistent_workers"] = hp.persistent_workers
            extra["prefetch_factor"] = prefetch
            collate = PadCollate(prefetch)
        dataset = ShardWindowDataset(self.reader, self.index, max_channels=hp.max_channels,
                                     on_bad_window=hp.on_bad_window)
        return ResumableDataLoader(
            dataset,
            self.sampler,
            batches_trained=batches_trained,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=pin,
            **extra,
        )
