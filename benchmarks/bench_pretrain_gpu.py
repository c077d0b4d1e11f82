"""GPU pretraining throughput and model FLOPs utilisation (MFU) of a masked-pretraining step.

One optimizer step of `MaskedPretrainer` (bf16 autocast, fused AdamW, gradient clipping: what
`eegfm pretrain --config configs/pretrain/base.yaml` runs) on real windows read from shards, for
each channel count x batch size x execution mode. FLOPs are counted by
`torch.utils.flop_counter.FlopCounterMode` over one forward + backward (matrix products,
convolutions and attention; element-wise work is not counted, as is usual for MFU). MFU is
counted FLOPs per second over the GPU's dense bf16 peak (989 TFLOP/s for H100/H200 SXM, or
``--peak-tflops``); the bf16 matmul rate measured on the same card is printed beside it.

    python benchmarks/bench_pretrain_gpu.py --data SHARDS [SHARDS ...] --channels 19 64 128 \
        --batch-sizes 64 256 --modes eager compiled

"step" times the whole training step, mask drawing included (as `eegfm pretrain` runs it);
"model" reuses pre-drawn masks, so it times the model alone. Modes: eager, "compiled"
(`torch.compile` of each block) and "cudagraphs" (mode "reduce-overhead": CUDA graphs).
Batches rotate over several real batches so the card does not re-read one buffer from cache.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

DEFAULT_PEAK_TFLOPS = 989.4  # H100/H200 SXM dense bf16
COMPILE_MODES = {"compiled": "default", "cudagraphs": "reduce-overhead"}


def matmul_tflops(n: int = 8192, repeats: int = 20) -> float:
    """Measured bf16 matmul rate of this card (TFLOP/s) on random data."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * n**3 * repeats / (start.elapsed_time(end) / 1e3) / 1e12


def real_batches(roots: list[str], n_channels: int, batch_size: int, n_batches: int,
                 window_s: float, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``n_batches`` batches of real windows with exactly ``n_channels`` channels each.

    Windows are drawn at random (with replacement) from recordings with at least that many
    channels, and ``n_channels`` of their channels at random, as ``data.max_channels`` does.
    """
    import numpy as np

    from eegfm.data.collate import pad_collate
    from eegfm.shards.reader import ShardReader

    reader = ShardReader(roots)
    pool = [(entry, round(window_s * entry.sfreq)) for entry in reader.entries]
    pool = [(entry, length) for entry, length in pool
            if entry.n_channels >= n_channels and entry.n_samples >= length]
    if not pool:
        raise SystemExit(f"no recording with >= {n_channels} channels and one {window_s}-s "
                         f"window in {roots}")
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(n_batches):
        samples = []
        for _ in range(batch_size):
            entry, length = pool[rng.integers(len(pool))]
            start = int(rng.integers(entry.n_samples - length + 1))
            window = reader.read_window(entry.recording_id, start, length)
            keep = np.sort(rng.choice(entry.n_channels, n_channels, replace=False))
            samples.append({"x": window.data[keep], "coords": window.coords[keep],
                            "ref_coords": window.ref_coords[keep],
                            "recording_id": entry.recording_id, "start": start,
                            "recording_index": 0})
        batches.append(pad_collate(samples))
    return batches


def to_device(batch: dict[str, Any]) -> dict[str, Any]:
    """The batch's tensors on the GPU."""
    return {k: v.cuda(non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def build(model_name: str) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """Pretrainer + fused AdamW as `MaskedPretrainModule` builds them, on the GPU."""
    from eegfm.models import MaskedPretrainer, create_model
    from eegfm.training.pretrain.module import param_groups

    pretrainer = MaskedPretrainer(create_model(model_name), mask_ratio=0.5).cuda()
    optimizer = torch.optim.AdamW(param_groups(pretrainer, 0.05), lr=1e-4, betas=(0.9, 0.95),
                                  fused=True)
    return pretrainer, optimizer


def train_step(pretrainer: torch.nn.Module, optimizer: torch.optim.Optimizer,
               batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """One bf16 masked-reconstruction step with clipping, as the Lightning module runs it."""
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, _ = pretrainer(batch["x"], batch["coords"], batch["channel_mask"],
                             batch["ref_coords"])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(pretrainer.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


@contextlib.contextmanager
def fixed_masks(pretrainer: torch.nn.Module, masks: list[tuple[torch.Tensor, torch.Tensor]]):
    """Serve pre-drawn masks in turn, so a step times the GPU work alone."""
    original = pretrainer.make_mask
    state = {"i": 0}

    def make_mask(*_args: Any, **_kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        mask = masks[state["i"] % len(masks)]
        state["i"] += 1
        return mask

    pretrainer.make_mask = make_mask
    try:
        yield
    finally:
        pretrainer.make_mask = original


def count_flops(pretrainer: torch.nn.Module, batch: dict[str, torch.Tensor]) -> int:
    """FLOPs of one forward + backward (matrix products, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.autocast("cuda", dtype=torch.bfloat16):
        loss, _ = pretrainer(batch["x"], batch["coords"], batch["channel_mask"],
                             batch["ref_coords"])
        loss.backward()
    pretrainer.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def time_steps(pretrainer: torch.nn.Module, optimizer: torch.optim.Optimizer,
               batches: list[dict[str, torch.Tensor]], warmup: int, steps: int) -> float:
    """Median wall seconds per training step (host clock after a device synchronize)."""
    for i in range(warmup):
        train_step(pretrainer, optimizer, batches[i % len(batches)])
    torch.cuda.synchronize()
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        train_step(pretrainer, optimizer, batches[i % len(batches)])
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def profile_top(pretrainer: torch.nn.Module, optimizer: torch.optim.Optimizer,
                batches: list[dict[str, torch.Tensor]], rows: int = 25) -> str:
    """Top GPU kernels of a few steps (torch.profiler table)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for i in range(5):
            train_step(pretrainer, optimizer, batches[i % len(batches)])
        torch.cuda.synchronize()
    averages = prof.key_averages()
    return (averages.table(sort_by="cuda_time_total", row_limit=rows) + "\n"
            + averages.table(sort_by="self_cpu_time_total", row_limit=rows))


def run_case(args: argparse.Namespace, n_channels: int, batch_size: int, mode: str,
             peak: float, measured: float) -> dict[str, Any]:
    """Measure one (channels, batch, mode) case; returns its table row."""
    torch.manual_seed(0)
    batches = [to_device(b) for b in real_batches(args.data, n_channels, batch_size,
                                                  args.n_batches, args.window_s)]
    pretrainer, optimizer = build(args.model)
    n_patches = batches[0]["x"].shape[-1] // pretrainer.encoder.patch_len
    tokens = batch_size * n_channels * n_patches
    # counted before compiling: under the counter's dispatch mode dynamo would not compile
    flops = count_flops(pretrainer, batches[0])
    if mode != "eager":
        for block in pretrainer.encoder.blocks:
            block.compile(mode=COMPILE_MODES[mode])
    step_s = time_steps(pretrainer, optimizer, batches, args.warmup, args.steps)
    masks = []
    for batch in batches:
        inputs = pretrainer.encoder.prepare(batch["x"], batch["coords"], batch["channel_mask"])
        masks.append(pretrainer.make_mask(batch["coords"], inputs.valid, inputs.n_patches))
    t0 = time.perf_counter()
    for batch in batches:
        inputs = pretrainer.encoder.prepare(batch["x"], batch["coords"], batch["channel_mask"])
        pretrainer.make_mask(batch["coords"], inputs.valid, inputs.n_patches)
    mask_s = (time.perf_counter() - t0) / len(batches)
    with fixed_masks(pretrainer, masks):
        model_s = time_steps(pretrainer, optimizer, batches, 3, args.steps)
        profile = (profile_top(pretrainer, optimizer, batches)
                   if args.profile and (n_channels, batch_size, mode) == tuple(args.profile)
                   else None)
    row = {
        "channels": n_channels, "batch": batch_size, "mode": mode, "tokens": tokens,
        "gflop_step": flops / 1e9, "step_ms": step_s * 1e3, "model_ms": model_s * 1e3,
        "mask_ms": mask_s * 1e3, "tokens_per_s": tokens / step_s,
        "model_tokens_per_s": tokens / model_s,
        "tflops_model": flops / model_s / 1e12, "mfu_step": flops / step_s / 1e12 / peak,
        "mfu_model": flops / model_s / 1e12 / peak,
        "of_measured_matmul": flops / model_s / 1e12 / measured,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
    }
    del pretrainer, optimizer, batches
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    if profile:
        print(f"\nprofile: {n_channels} ch, batch {batch_size}, {mode} (pre-drawn masks)\n"
              f"{profile}", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    """Run every case and print a Markdown table (and JSON lines with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True, help="shard directories")
    parser.add_argument("--model", default="eegfm_base")
    parser.add_argument("--channels", nargs="+", type=int, default=[19, 64, 128])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 256])
    parser.add_argument("--modes", nargs="+", choices=["eager", *COMPILE_MODES],
                        default=["eager", "compiled"])
    parser.add_argument("--window-s", type=float, default=4.0)
    parser.add_argument("--n-batches", type=int, default=4, help="distinct batches rotated")
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--peak-tflops", type=float, default=DEFAULT_PEAK_TFLOPS)
    parser.add_argument("--profile", nargs=3, metavar=("CHANNELS", "BATCH", "MODE"),
                        help="print the top kernels of this case")
    parser.add_argument("--json", type=Path, help="also write one JSON object per case here")
    args = parser.parse_args(argv)
    if args.profile:
        args.profile = [int(args.profile[0]), int(args.profile[1]), args.profile[2]]
    if not torch.cuda.is_available():
        raise SystemExit("bench_pretrain_gpu.py needs a CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = True
    measured = matmul_tflops()
    name = torch.cuda.get_device_name()
    print(f"{name}; torch {torch.__version__}; bf16 matmul 8192^3 measured {measured:.0f} "
          f"TFLOP/s; MFU against {args.peak_tflops:.0f} TFLOP/s", flush=True)
    rows = []
    for n_channels in args.channels:
        for batch_size in args.batch_sizes:
            for mode in args.modes:
                try:
                    row = run_case(args, n_channels, batch_size, mode, args.peak_tflops,
                                   measured)
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    print(f"{n_channels} ch x {batch_size}, {mode}: out of memory", flush=True)
                    continue
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.json:
                    with args.json.open("a") as f:
                        f.write(json.dumps({"device": name, "model": args.model, **row}) + "\n")
    print(f"\n{args.model} on {name}, bf16, 4-s windows (4 patches), command: "
          f"python {' '.join(sys.argv)}")
    print("| channels | batch | mode | tokens/step | GFLOP/step | step ms | tokens/s | "
          "MFU (step) | model-only ms | MFU (model) | mask ms | peak GiB |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['channels']} | {r['batch']} | {r['mode']} | {r['tokens']:,} | "
              f"{r['gflop_step']:.0f} | {r['step_ms']:.1f} | {r['tokens_per_s']:,.0f} | "
              f"{100 * r['mfu_step']:.1f} % | {r['model_ms']:.1f} | "
              f"{100 * r['mfu_model']:.1f} % | {r['mask_ms']:.1f} | {r['peak_mem_gib']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
