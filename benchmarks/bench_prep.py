"""Prep throughput: eegfm prep vs braindecode preprocess + windowing + save, one process each.

Both pipelines convert the same eegmat EDF files with the same steps (keep the 19 scalp channels,
notch 50 Hz, band-pass 0.5-75 Hz, resample to 200 Hz, average reference, volts -> µV); braindecode
then cuts 4-s windows and saves the dataset, eegfm writes HDF5 shards (windows are read from them
on the fly). The figure is seconds of EEG converted per wall-clock second per worker.

Each pipeline runs --repeat times, interleaved, on a fresh output; the best wall time counts
(the machine may be shared), and CPU seconds are reported beside it.

    python benchmarks/bench_prep.py                    # all eegmat files
    python benchmarks/bench_prep.py --files 6          # a quick run
    python benchmarks/bench_prep.py --memory-hours 1   # + peak RSS converting a 1-h 64-ch EDF
    python benchmarks/bench_prep.py --reader           # + ShardReader windows per second
    python benchmarks/bench_prep.py --filters          # + fused vs polyphase filtering per rate
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one worker = one core, for both pipelines

import argparse  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import mne  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "eeg" / "eegmat"
SCALP = [
    "Fp1",
    "Fp2",
    "F3",
    "F4",
    "F7",
    "F8",
    "T3",
    "T4",
    "C3",
    "C4",
    "T5",
    "T6",
    "P3",
    "P4",
    "O1",
    "O2",
    "Fz",
    "Cz",
    "Pz",
]


def run_eegfm(files: list[Path], work: Path) -> tuple[float, float, float, None]:
    """Wall seconds, CPU seconds and EEG seconds of `eegfm prep` (one worker) over the files."""
    from eegfm.prep import load_prep_config, run_prep

    source = work / "eegmat"
    source.mkdir()
    for path in files:
        (source / path.name).symlink_to(path)
    started, cpu = time.perf_counter(), time.process_time()
    summary = run_prep(
        [str(source)], work / "shards", load_prep_config(None), workers=1, progress=False
    )
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert not summary.failures, summary.failures
    return wall, cpu, summary.eeg_seconds, None


def run_braindecode(files: list[Path], work: Path) -> tuple[float, float, float, object]:
    """Wall, CPU and EEG seconds of braindecode preprocess + windows + save, and its dataset."""
    from braindecode.datasets import BaseConcatDataset, RawDataset
    from braindecode.preprocessing import Preprocessor, create_fixed_length_windows, preprocess

    started, cpu = time.perf_counter(), time.process_time()
    datasets = []
    for path in files:
        raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
        datasets.append(RawDataset(raw, description={"file": path.name}))
    concat = BaseConcatDataset(datasets)
    preprocess(
        concat,
        [
            Preprocessor("pick", picks=[f"EEG {name}" for name in SCALP]),
            Preprocessor("notch_filter", freqs=[50.0], verbose="error"),
            Preprocessor("filter", l_freq=0.5, h_freq=75.0, verbose="error"),
            Preprocessor("resample", sfreq=200.0, verbose="error"),
            Preprocessor("set_eeg_reference", ref_channels="average", verbose="error"),
            Preprocessor(lambda data: data * 1e6),
        ],
        n_jobs=1,
    )
    windows = create_fixed_length_windows(
        concat, window_size_samples=800, window_stride_samples=800, drop_last_window=False
    )
    windows.save(str(work / "braindecode"), overwrite=True)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    eeg_seconds = sum(_duration(path) for path in files)
    return wall, cpu, eeg_seconds, concat


def _duration(path: Path) -> float:
    raw = mne.io.read_raw_edf(path, verbose="error")
    return raw.n_times / raw.info["sfreq"]


def agreement(work: Path, concat: object) -> float:
    """Median per-channel correlation of the two outputs for the first file (edges excluded)."""
    from eegfm.shards import ShardReader

    reader = ShardReader(work / "shards")
    ours = reader.read_recording(reader.entries[0].recording_id).data
    theirs = concat.datasets[0].raw.get_data()
    n = min(ours.shape[1], theirs.shape[1])
    cut = slice(2000, n - 2000)
    return float(
        np.median([np.corrcoef(a[cut], b[cut])[0, 1] for a, b in zip(ours, theirs, strict=True)])
    )


def write_long_edf(path: Path, hours: float, n_channels: int = 64, sfreq: int = 1000) -> None:
    """A synthetic EEG-like EDF (alpha + line noise + 1/f-ish noise), written record by record."""
    names = mne.channels.make_standard_montage("biosemi64").ch_names[:n_channels]
    n_records = int(hours * 3600)
    header = (
        f"{'0':<8}{'X X X X':<80}{'Startdate 01-JAN-2020 X X X':<80}01.01.2000.00.00"
        f"{256 * (n_channels + 1):<8}{'':<44}{n_records:<8}{'1':<8}{n_channels:<4}"
    )
    fields = [
        (16, lambda n: n),
        (80, lambda n: ""),
        (8, lambda n: "uV"),
        (8, lambda n: "-3276.8"),
        (8, lambda n: "3276.7"),
        (8, lambda n: "-32768"),
        (8, lambda n: "32767"),
        (80, lambda n: ""),
        (8, lambda n: str(sfreq)),
        (32, lambda n: ""),
    ]
    for width, value in fields:
        header += "".join(f"{value(name):<{width}}" for name in names)
    rng = np.random.default_rng(0)
    t = np.arange(sfreq) / sfreq
    with open(path, "wb") as handle:
        handle.write(header.encode("ascii"))
        drift = np.zeros(n_channels)
        for record in range(n_records):
            drift = 0.999 * drift + rng.normal(scale=2.0, size=n_channels)
            signal_uv = (
                (
                    20 * np.sin(2 * np.pi * 10 * (t + record))
                    + 5 * np.sin(2 * np.pi * 50 * (t + record))
                )[None, :]
                + drift[:, None]
                + rng.normal(scale=8.0, size=(n_channels, sfreq))
            )
            handle.write(np.clip(signal_uv * 10, -32768, 32767).astype("<i2").tobytes())


# VmHWM (peak resident set of this process image; ru_maxrss would carry over the parent's peak
# through fork + exec), printed in MB
PEAK_RSS = (
    "print(next(int(line.split()[1]) for line in open('/proc/self/status') "
    "if line.startswith('VmHWM')) / 1024)"
)


def measure_memory(hours: float, work: Path) -> str:
    """Peak RSS of `eegfm prep` converting a long 64-channel 1 kHz EDF, in a fresh process."""
    path = work / "long.edf"
    write_long_edf(path, hours)
    argv = ["prep", str(path), "--out", str(work / "long"), "--no-progress"]
    code = (
        f"import sys; from eegfm.cli import main; code = main({argv!r}); {PEAK_RSS}; sys.exit(code)"
    )
    baseline = f"import eegfm.prep.jobs, eegfm.prep.pipeline, eegfm.montage, mne, h5py; {PEAK_RSS}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
    )
    wall = time.perf_counter() - started
    peak_mb = float(run.stdout.split()[-1])
    idle = subprocess.run(
        [sys.executable, "-c", baseline], check=True, capture_output=True, text=True, env=env
    )
    size_mb = path.stat().st_size / 1e6
    return (
        f"| {hours:g} h, 64 ch, 1 kHz EDF | {size_mb:.0f} MB | {peak_mb:.0f} MB "
        f"({float(idle.stdout):.0f} MB after imports) | {hours * 3600 / wall:.0f} |"
    )


def measure_reader(work: Path, seconds: float = 4.0, n_windows: int = 20_000) -> list[str]:
    """Random windows per second from ShardReader (the pretraining loader's inner loop)."""
    from eegfm.shards import PREP_CONFIG, Recording, ShardReader, ShardWriter

    rng = np.random.default_rng(0)
    rows = []
    for n_channels in (22, 64):
        root = work / f"reader_{n_channels}"
        with ShardWriter(root, sfreq=200.0) as writer:
            for index in range(20):  # 20 ten-minute recordings
                data = rng.normal(size=(n_channels, 120_000)).astype(np.float32)
                coords = rng.normal(size=(n_channels, 3)).astype(np.float32) * 0.05
                writer.write(
                    Recording(
                        f"r{index}",
                        data,
                        coords,
                        np.full((n_channels, 3), np.nan, np.float32),
                        [f"E{c}" for c in range(n_channels)],
                    )
                )
        (root / PREP_CONFIG).write_text("benchmark: true\n")
        reader = ShardReader(root)
        length = int(seconds * 200)
        ids = [e.recording_id for e in reader.entries]
        picks = rng.integers(0, len(ids), n_windows)
        starts = rng.integers(0, 120_000 - length, n_windows)
        for name in ids:  # open handles once, as a long-running worker has
            reader.read_window(name, 0, length)
        started = time.perf_counter()
        for pick, start in zip(picks, starts, strict=True):
            reader.read_window(ids[pick], int(start), length)
        rate = n_windows / (time.perf_counter() - started)
        rows.append(f"| {n_channels} | {seconds:g} s | {rate:,.0f} | {1e6 / rate:.0f} |")
    return rows


FILTER_RATES = (100, 128, 160, 250, 256, 300, 400, 500, 512, 600)
FILTER_RATES += (1000, 1024, 1200, 2000, 2048, 5000)


def measure_filters(n_channels: int = 19, seconds: float = 60.0, repeat: int = 5) -> list[str]:
    """ms per block of resampling + band-pass at each rate: one product of spectra vs upfirdn + FIR.

    The input is a random walk (EEG-like drift) at the recording rate; the block is `seconds` of
    output at 200 Hz with the FIR's margins, as `eegfm prep` cuts it.
    """
    from eegfm.prep import steps
    from eegfm.prep.config import load_prep_config

    config = load_prep_config(None)
    rng = np.random.default_rng(0)
    fir = steps.filter_kernel(config.sfreq, config, line_freq=50.0) * steps.VOLTS_TO_UV
    margin = (len(fir) - 1) // 2
    lo = 1000 - margin
    hi = 1000 + round(seconds * config.sfreq) + margin
    rows = []
    for sfreq in FILTER_RATES:
        up, down = steps.resample_ratio(sfreq, config.sfreq)
        kernel = steps.resample_kernel(up, down, sfreq, config.lowpass_hz)
        filters = steps.ResampleFilter(up, down, kernel, fir)
        chosen = filters.fused
        x = rng.normal(size=(n_channels, int((seconds + 20) * sfreq))).cumsum(axis=1) * 1e-6
        times = {}
        for fused in (True, False):
            filters.fused = fused
            k0, k1 = filters.input_span(lo, hi)
            padded = np.zeros((n_channels, filters.padded_length(k1 - k0)))
            padded[:, : k1 - k0] = x[:, k0:k1]
            filters.block(padded, k0, lo, hi)  # transforms cached, as for every later block
            started = time.perf_counter()
            for _ in range(repeat):
                filters.block(padded, k0, lo, hi)
            times[fused] = (time.perf_counter() - started) / repeat * 1e3
        rows.append(
            f"| {sfreq} | {up}/{down} | {len(kernel)} | {times[True]:.1f} | {times[False]:.1f} "
            f"| {'fused' if chosen else 'polyphase + FIR'} |"
        )
    return rows


def main() -> None:
    """Run both pipelines side by side and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of eegmat EDFs")
    parser.add_argument("--files", type=int, default=0, help="first N files (0: all)")
    parser.add_argument(
        "--reader",
        action="store_true",
        help="also measure random 4-s windows per second from ShardReader",
    )
    parser.add_argument(
        "--filters",
        action="store_true",
        help="also time one block of resampling + filtering per input rate, both ways",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each pipeline")
    parser.add_argument(
        "--memory-hours",
        type=float,
        default=0.0,
        help="also convert a synthetic recording this long, report peak RSS",
    )
    args = parser.parse_args()
    mne.set_log_level("ERROR")
    files = sorted(args.data.glob("*.edf"))[: args.files or None]
    best: dict[str, tuple] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs = {"eegfm": run_eegfm, "braindecode": run_braindecode}
        for name, run in runs.items():  # warm-up: imports and caches, not timed
            (work / f"warm_{name}").mkdir()
            run(files[:1], work / f"warm_{name}")
        for repeat in range(args.repeat):
            for name, run in runs.items():
                folder = work / f"{name}_{repeat}"
                folder.mkdir()
                result = run(files, folder)
                if name not in best or result[0] < best[name][0]:
                    best[name] = (*result, folder)
        correlation = agreement(best["eegfm"][4], best["braindecode"][3])
        memory = measure_memory(args.memory_hours, work) if args.memory_hours else ""
        reader_rows = measure_reader(work) if args.reader else []
    (ours_wall, ours_cpu, eeg, _, _), (their_wall, their_cpu, *_) = (
        best["eegfm"],
        best["braindecode"],
    )
    print(f"command: python benchmarks/bench_prep.py {' '.join(sys.argv[1:])}".rstrip())
    print(
        f"{len(files)} eegmat files, {eeg / 3600:.2f} h of EEG, one worker each, best of "
        f"{args.repeat} interleaved runs, {os.cpu_count()} CPUs on this machine\n"
    )
    print("| pipeline | wall s | CPU s | s of EEG per wall-s per worker | speed-up |")
    print("|---|---|---|---|---|")
    print(
        f"| braindecode {_version('braindecode')} preprocess + windows + save | "
        f"{their_wall:.2f} | {their_cpu:.2f} | {eeg / their_wall:.0f} | 1.0x |"
    )
    print(
        f"| eegfm prep (HDF5 shards) | {ours_wall:.2f} | {ours_cpu:.2f} | "
        f"{eeg / ours_wall:.0f} | {their_wall / ours_wall:.1f}x |"
    )
    print(f"\nmedian per-channel correlation of the two outputs (first file): {correlation:.4f}")
    if memory:
        print("\n| recording | file size | peak RSS of eegfm prep | s of EEG per wall-s |")
        print("|---|---|---|---|")
        print(memory)
    if args.filters:
        print(
            "\n| input Hz | up/down | polyphase taps | fused ms | polyphase + FIR ms | used |"
        )
        print("|---|---|---|---|---|---|")
        print("\n".join(measure_filters()))
    if reader_rows:
        print("\n| channels | window | windows/s (one process, random access) | µs per window |")
        print("|---|---|---|---|")
        print("\n".join(reader_rows))


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main()
