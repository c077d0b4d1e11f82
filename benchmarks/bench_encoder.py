"""Encoder speed and memory: eegfm vs braindecode's REVE, LaBraM, CBraMod and LUNA, in one run.

Forward + backward of a batch (default 8 windows of 4 s at 200 Hz) for 22 ... 1,132 channels;
median of N timed runs after one warm-up, and the peak resident memory of a fresh process per
(model, channel count). Prints a Markdown table, the command and the torch thread count.

    python benchmarks/bench_encoder.py                       # full table (slow: minutes)
    python benchmarks/bench_encoder.py --models eegfm_small luna --channels 22 64 256 --repeats 3

Channel positions come from MNE's colin27_1005 template (farthest-point subsets, spread over the
head) up to its 345 electrodes and from a Fibonacci lattice on the upper head beyond that.
Peers are built with braindecode's defaults except REVE, shrunk to a comparable size; nothing
is downloaded (REVE's name->position bank is written from the same template into a temporary
folder; positions are passed to the models explicitly). A model is skipped at larger channel
counts once it is unsupported, fails, or its median exceeds ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = ("eegfm_small", "reve", "labram", "cbramod", "luna")
REVE_SIZE = dict(embed_dim=256, depth=6, heads=4, head_dim=64)  # ~5.6 M, near the others


def template_positions(n_channels: int) -> np.ndarray:
    """``(n, 3)`` head-frame positions (m): spread-out template electrodes, or a dense lattice."""
    import mne

    montage = mne.channels.make_standard_montage("colin27_1005")
    pool = np.array(list(montage.get_positions()["ch_pos"].values()))
    if n_channels <= len(pool):
        chosen = [int(np.argmax(pool[:, 2]))]  # start at the vertex, then farthest-point
        distance = np.linalg.norm(pool - pool[chosen[0]], axis=1)
        while len(chosen) < n_channels:
            chosen.append(int(np.argmax(distance)))
            distance = np.minimum(distance, np.linalg.norm(pool - pool[chosen[-1]], axis=1))
        return pool[chosen]
    index = np.arange(n_channels) + 0.5
    z = 1.0 - 1.3 * index / n_channels  # upper ~65% of the sphere
    azimuth = np.pi * (1 + 5**0.5) * index
    ring = np.sqrt(1 - z**2)
    return 0.095 * np.stack([ring * np.cos(azimuth), ring * np.sin(azimuth), z], axis=1)


def _write_reve_bank(folder: str) -> None:
    """Give REVE a local name->position bank so its constructor needs no network."""
    import mne

    positions = mne.channels.make_standard_montage("colin27_1005").get_positions()["ch_pos"]
    bank = {name: [float(v) for v in pos] for name, pos in positions.items()}
    Path(folder, "reve_positions.json").write_text(json.dumps(bank))
    os.environ["REVE_POSITIONS_PATH"] = folder


def build(model: str, n_channels: int, n_times: int):
    """Return ``(module, run)`` where ``run(x, coords)`` is one forward pass."""
    if model.startswith("eegfm_"):
        from eegfm.heads import create_head
        from eegfm.models import create_model
        from eegfm.models.classifier import EncoderClassifier

        encoder = create_model(model)
        net = EncoderClassifier(encoder, create_head("linear", encoder.embed_dim, 2),
                                frozen=False)
        return net, lambda x, coords: net(x, coords)
    from braindecode.models import LUNA, REVE, CBraMod, Labram

    signal = dict(n_outputs=2, n_chans=n_channels, n_times=n_times, sfreq=200.0)
    if model == "reve":
        net = REVE(**signal, **REVE_SIZE)
        return net, lambda x, coords: net(x, pos=coords)
    if model == "luna":
        net = LUNA(**signal)
        return net, lambda x, coords: net(x, channel_locations=coords)
    if model == "labram":
        if n_channels > 128:
            raise ValueError("unsupported: LaBraM's position table holds 128 channels")
        from braindecode.models.labram import LABRAM_CHANNEL_ORDER

        net = Labram(**signal)
        names = LABRAM_CHANNEL_ORDER[:n_channels]  # its table is indexed by canonical names
        return net, lambda x, coords: net(x, ch_names=names)
    if model == "cbramod":
        net = CBraMod(**signal)
        return net, lambda x, coords: net(x)
    raise ValueError(f"unknown model {model!r}; choose from {MODELS} or another eegfm_* size")


def worker(model: str, n_channels: int, batch: int, seconds: float, repeats: int) -> dict:
    """Time forward+backward in this (fresh) process; return the figures as a dict."""
    import torch

    with tempfile.TemporaryDirectory() as folder:
        _write_reve_bank(folder)
        n_times = round(seconds * 200)
        torch.manual_seed(0)
        net, run = build(model, n_channels, n_times)
        coords = torch.as_tensor(template_positions(n_channels), dtype=torch.float32)
        coords = coords.expand(batch, -1, -1).contiguous()
        x = 20.0 * torch.randn(batch, n_channels, n_times)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        times = []
        for i in range(repeats + 1):
            net.zero_grad(set_to_none=True)
            start = time.perf_counter()
            run(x, coords).float().pow(2).mean().backward()
            if i:  # the first run warms up allocators and kernels
                times.append(time.perf_counter() - start)
    return {
        "model": model, "channels": n_channels,
        "params": sum(p.numel() for p in net.parameters()),
        "median_s": statistics.median(times), "times_s": times,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "rss_before_gb": rss_before, "threads": torch.get_num_threads(),
    }


def _run_one(args: argparse.Namespace, model: str, n_channels: int) -> dict:
    """Run :func:`worker` in a fresh interpreter so its peak memory is its own."""
    command = [sys.executable, __file__, "--worker", model, str(n_channels), "--batch",
               str(args.batch), "--seconds", str(args.seconds), "--repeats", str(args.repeats)]
    # passive OpenMP waiting: with spinning threads, any other load on a small machine makes
    # a 2-thread run 10-20x slower; set OMP_WAIT_POLICY yourself to override
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "OMP_NUM_THREADS": str(args.threads),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env,
                              timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout > {args.timeout} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        last = (done.stderr.strip().splitlines() or ["killed (out of memory?)"])[-1]
        return {"error": last[:120]}
    return json.loads(lines[-1])


def _cell(result: dict | None) -> str:
    """Markdown cell: ``time s (peak GB)`` or why there is no figure."""
    if result is None:
        return "skipped"
    if "error" in result:
        return "unsupported" if "unsupported" in result["error"] else "fails"
    return f"{result['median_s']:.2f} s ({result['peak_rss_gb']:.1f} GB)"


def main() -> None:
    """Parse arguments, run every (model, channels) cell, print the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--channels", nargs="+", type=int, default=[22, 64, 128, 256, 512, 1132])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=60.0,
                        help="skip a model's larger channel counts once its median exceeds this")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per cell, seconds")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "CHANNELS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.batch, args.seconds,
                                args.repeats)))
        return

    import torch

    print(f"command: python {shlex.join(sys.argv)}")
    wait = os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
    print(f"torch {torch.__version__}, {args.threads} threads (OMP_NUM_THREADS, "
          f"OMP_WAIT_POLICY={wait}), "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    print(f"batch {args.batch} x {args.seconds:g} s at 200 Hz, forward+backward, "
          f"median of {args.repeats} after 1 warm-up; peak RSS of a fresh process\n")
    results: dict[tuple[str, int], dict | None] = {}
    for model in args.models:
        stop = False
        for n_channels in sorted(args.channels):
            if stop:
                results[model, n_channels] = None
                continue
            result = _run_one(args, model, n_channels)
            results[model, n_channels] = result
            print(f"  {model:>12} {n_channels:>5} ch: {_cell(result)}"
                  + (f"  [{result['error']}]" if "error" in result else ""), flush=True)
            stop = "error" in result or result["median_s"] > args.max_seconds
    header = "| model (params) | " + " | ".join(f"{c} ch" for c in sorted(args.channels))
    print("\n" + header + " | growth 64→256 |")
    print("|---" * (len(args.channels) + 2) + "|")
    for model in args.models:
        row = [results[model, c] for c in sorted(args.channels)]
        params = next((r["params"] for r in row if r and "params" in r), None)
        label = f"{model} ({params / 1e6:.1f} M)" if params else model
        a, b = results.get((model, 64)), results.get((model, 256))
        growth = (f"{b['median_s'] / a['median_s']:.1f}×"
                  if a and b and "median_s" in a and "median_s" in b else "–")
        print(f"| {label} | " + " | ".join(_cell(r) for r in row) + f" | {growth} |")


if __name__ == "__main__":
    main()
