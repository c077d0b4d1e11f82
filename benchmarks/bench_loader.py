"""Pretraining loader throughput: windows/s per DataLoader worker, eegfm shards vs braindecode.

Builds the same recordings three ways from real eegmat EDFs (resampled to 200 Hz, channels
tiled to 22 and 64 so every loader reads identical arrays): eegfm shards read through the loader
`PretrainDataModule.train_dataloader` builds, and braindecode windows from
`create_fixed_length_windows` on lazily read FIF raws (preload=False) and preloaded. Every loader
draws shuffled 4 s windows in batches and is iterated like training would (collate included). A
fourth row, "no-I/O ceiling", runs that same loader (class, collate, worker and pinning options)
over a dataset that reads nothing, with one endless epoch: what the DataLoader itself
(worker -> main process transfer) allows on this machine.

    python benchmarks/bench_loader.py [--eegmat ../shared/eeg/eegmat] [--seconds 3]
"""

from __future__ import annotations

import argparse
import glob
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import mne
import numpy as np
import torch
from torch.utils.data import DataLoader

from eegfm.data.windows import DistributedWindowBatchSampler, WindowIndex
from eegfm.shards import Recording, ShardWriter
from eegfm.training.pretrain.datamodule import PretrainDataModule, ResumableDataLoader

SFREQ = 200.0


def load_recordings(eegmat: Path, n_files: int, n_channels: int) -> list[tuple[str, np.ndarray]]:
    """(recording_id, data (C, T) µV float32) from eegmat EDFs, channels tiled to n_channels."""
    files = sorted(glob.glob(str(eegmat / "Subject*_*.edf")))[:n_files]
    if not files:
        raise SystemExit(f"no eegmat EDF files under {eegmat}: pass --eegmat")
    recordings = []
    for path in files:
        raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
        raw.pick(list(range(19))).resample(SFREQ, verbose="error")
        data = (raw.get_data() * 1e6).astype(np.float32)
        tiled = np.concatenate([data] * (n_channels // len(data) + 1))[:n_channels]
        recordings.append((Path(path).stem, np.ascontiguousarray(tiled)))
    return recordings


def write_shards(recordings: list[tuple[str, np.ndarray]], out: Path) -> None:
    """The recordings as one eegfm shard directory."""
    rng = np.random.default_rng(0)
    C = recordings[0][1].shape[0]
    coords = (rng.normal(size=(C, 3)) * 0.05).astype(np.float32)
    with ShardWriter(out, sfreq=SFREQ) as writer:
        for recording_id, data in recordings:
            attrs = {"dataset": "eegmat", "montage_id": f"tiled{C}"}
            ref = np.full_like(coords, np.nan)
            names = [f"E{i}" for i in range(C)]
            writer.write(Recording(recording_id, data, coords, ref, names, attrs=attrs))


def write_fifs(recordings: list[tuple[str, np.ndarray]], out: Path) -> list[Path]:
    """The recordings as FIF files (float32) that MNE can read lazily."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for recording_id, data in recordings:
        info = mne.create_info([f"E{i}" for i in range(len(data))], SFREQ, "eeg")
        path = out / f"{recording_id}_raw.fif"
        raw = mne.io.RawArray(data * 1e-6, info, verbose="error")
        raw.save(path, fmt="single", verbose="error")
        paths.append(path)
    return paths


def windows_per_s(loader: DataLoader, seconds: float, warmup_batches: int = 3) -> float:
    """Windows per second over `seconds` of iteration (epochs repeat), after worker start-up."""
    n, seen, start = 0, 0, None
    for epoch in range(10**6):
        if hasattr(loader.batch_sampler, "set_epoch"):
            loader.batch_sampler.set_epoch(epoch)
        for batch in loader:
            x = batch["x"] if isinstance(batch, dict) else batch[0]
            seen += 1
            if seen == warmup_batches:
                start, n = time.perf_counter(), 0
            n += len(x)
            if start is not None and time.perf_counter() - start > seconds:
                return n / (time.perf_counter() - start)
    raise AssertionError("unreachable")


def shard_loader(root: Path, workers: int, batch_size: int) -> ResumableDataLoader:
    """The pretraining loader `PretrainDataModule` builds over a shard directory."""
    data = PretrainDataModule([str(root)], window_s=4.0, batch_size=batch_size,
                              num_workers=workers)
    return data.train_dataloader()


class ConstantWindows(torch.utils.data.Dataset):
    """The shard dataset's sample without reading anything: the DataLoader's own ceiling."""

    def __init__(self, n_channels: int) -> None:
        self.sample = {
            "x": np.random.default_rng(0).normal(size=(n_channels, int(4 * SFREQ))).astype("f4"),
            "coords": np.zeros((n_channels, 3), np.float32),
            "ref_coords": np.full((n_channels, 3), np.nan, np.float32),
            "recording_id": "constant",
            "recording_index": 0,
            "start": 0,
        }

    def __len__(self) -> int:
        return 10**9

    def __getitem__(self, key: object) -> dict:
        return self.sample


def ceiling_loader(
    root: Path, n_channels: int, workers: int, batch_size: int
) -> ResumableDataLoader:
    """The shard loader's class, collate and options over `ConstantWindows`: transfer cost only."""
    shards = shard_loader(root, workers, batch_size)
    # One recording long enough for 10,000 batches: an epoch outlasts the measurement.
    window = int(4 * SFREQ)
    entry = SimpleNamespace(recording_id="constant", dataset="constant", montage_id="constant",
                            n_channels=n_channels, n_samples=window * batch_size * 10_000,
                            sfreq=SFREQ)
    sampler = DistributedWindowBatchSampler(WindowIndex([entry], window), batch_size)
    extra = {}
    if workers:
        extra = {"persistent_workers": shards.persistent_workers,
                 "prefetch_factor": shards.prefetch_factor}
    return ResumableDataLoader(
        ConstantWindows(n_channels), sampler, num_workers=workers, collate_fn=shards.collate_fn,
        pin_memory=shards.pin_memory, **extra
    )


def braindecode_loader(fifs: list[Path], preload: bool, workers: int, batch_size: int):
    """braindecode fixed-length windows (lazy raws when preload=False), shuffled."""
    from braindecode.datasets import BaseConcatDataset, RawDataset
    from braindecode.preprocessing import create_fixed_length_windows

    raws = [mne.io.read_raw_fif(p, preload=False, verbose="error") for p in fifs]
    datasets = [RawDataset(r, {"recording": p.stem}) for r, p in zip(raws, fifs, strict=True)]
    concat = BaseConcatDataset(datasets)
    windows = create_fixed_length_windows(
        concat,
        window_size_samples=int(4 * SFREQ),
        window_stride_samples=int(4 * SFREQ),
        drop_last_window=True,
        preload=preload,
    )
    generator = torch.Generator().manual_seed(0)
    extra = {"persistent_workers": True} if workers else {}
    return DataLoader(
        windows,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        generator=generator,
        **extra,
    )


def main() -> None:
    """Measure every loader at 22 and 64 channels with 0 and 1 workers; print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_eegmat = Path(__file__).resolve().parents[2] / "shared" / "eeg" / "eegmat"
    parser.add_argument("--eegmat", type=Path, default=default_eegmat)
    parser.add_argument("--files", type=int, default=12, help="eegmat EDF files to use")
    parser.add_argument("--channels", type=int, nargs="+", default=[22, 64])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per measurement")
    parser.add_argument("--no-braindecode", action="store_true",
                        help="measure the eegfm rows only (no FIF files, no ratio column)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for C in args.channels:
            recordings = load_recordings(args.eegmat, args.files, C)
            hours = sum(d.shape[1] for _, d in recordings) / SFREQ / 3600
            write_shards(recordings, Path(tmp) / f"shards{C}")
            fifs = [] if args.no_braindecode else write_fifs(recordings, Path(tmp) / f"fif{C}")
            shards = Path(tmp) / f"shards{C}"
            for workers in args.workers:
                candidates = [
                    ("eegfm shards", shard_loader, (shards, workers, args.batch_size)),
                    ("no-I/O ceiling", ceiling_loader, (shards, C, workers, args.batch_size)),
                    (
                        "braindecode lazy",
                        braindecode_loader,
                        (fifs, False, workers, args.batch_size),
                    ),
                    (
                        "braindecode preloaded",
                        braindecode_loader,
                        (fifs, True, workers, args.batch_size),
                    ),
                ]
                if args.no_braindecode:
                    candidates = candidates[:2]
                for name, make, make_args in candidates:
                    rate = windows_per_s(make(*make_args), args.seconds)
                    rows.append((name, C, workers, rate))
                    print(f"{name:<22} {C:>3} ch  workers={workers}  {rate:>9,.0f} windows/s")
            print(f"({len(recordings)} recordings, {hours:.2f} h at {C} channels)")
    print("\n| loader | channels | workers | windows/s | vs braindecode lazy |")
    print("|---|---|---|---|---|")
    lazy = {(c, w): r for n, c, w, r in rows if n == "braindecode lazy"}
    for name, C, workers, rate in rows:
        ratio = f"{rate / lazy[(C, workers)]:.1f}x" if lazy else "-"
        print(f"| {name} | {C} | {workers} | {rate:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
