"""What Lightning costs a pretraining step on a CPU: `eegfm pretrain`'s module under a Trainer
against a plain loop doing the same work (issue #14, item 5).

Both run `eegfm_tiny` with configs/pretrain/tiny.yaml's settings (batch 8 x 4 s, AdamW, warm-up +
cosine, clipping at 1.0) on the same batches of real eegmat windows, held in memory so that data
loading is not part of the comparison, with the same per-step seeds; the plain loop uses the
same `MaskedPretrainer`, `param_groups` and `WarmupCosine`. The runs alternate, and the losses
of the two are compared step by step (they must agree: same work, same numbers).

    python benchmarks/bench_lightning_overhead.py --steps 300 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from eegfm.prep import load_prep_config, run_prep
from eegfm.training.optim import WarmupCosine, param_groups
from eegfm.training.pretrain.callbacks import StepBoundarySignals, StepMetricsLogger
from eegfm.training.pretrain.datamodule import PretrainDataModule
from eegfm.training.pretrain.module import MaskedPretrainModule, step_seed

SHARED = Path(__file__).resolve().parents[2] / "shared" / "eeg" / "eegmat"
HPARAMS = {"encoder": "eegfm_tiny", "lr": 2e-3, "weight_decay": 0.05, "warmup_steps": 20,
           "min_lr_ratio": 0.1}


def batches(work: Path, n: int) -> list[dict]:
    """``n`` batches of the pretraining loader on 4 eegmat subjects (prepped into ``work``)."""
    source = work / "eegmat"
    source.mkdir()
    for subject in ("00", "01", "02", "03"):
        for run in (1, 2):
            name = f"Subject{subject}_{run}.edf"
            (source / name).symlink_to(SHARED / name)
    run_prep([str(source)], work / "shards", load_prep_config(None), progress=False)
    data = PretrainDataModule([str(work / "shards")], window_s=4.0, batch_size=8,
                              num_workers=0, max_channels=32, seed=0, persistent_workers=False)
    data.setup("fit")
    out = []
    while len(out) < n:
        out += [{k: v for k, v in b.items() if isinstance(v, torch.Tensor)}
                for b in data.train_dataloader()]
    return out[:n]


class _StepClock(L.Callback):
    """Wall time between consecutive step ends, and each step's loss."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.losses: list[float] = []
        self.last = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.times.append(now - self.last)
        self.last = now
        self.losses.append(float(outputs["loss"]))


def lightning_run(data: list[dict], work: Path) -> tuple[list[float], list[float]]:
    """Per-step seconds and losses of the Trainer, with `eegfm pretrain`'s step callbacks."""
    torch.manual_seed(0)
    module = MaskedPretrainModule(**HPARAMS, total_steps=len(data))
    clock = _StepClock()
    trainer = L.Trainer(max_steps=len(data), accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, gradient_clip_val=1.0,
                        use_distributed_sampler=False, default_root_dir=work,
                        callbacks=[StepBoundarySignals(), StepMetricsLogger(), clock])
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=None))
    return clock.times, clock.losses


def plain_run(data: list[dict]) -> tuple[list[float], list[float]]:
    """Per-step seconds and losses of a bare loop over the same model and optimisation."""
    torch.manual_seed(0)
    pretrainer = MaskedPretrainModule(**HPARAMS, total_steps=len(data)).pretrainer.train()
    optimizer = torch.optim.AdamW(param_groups(pretrainer, HPARAMS["weight_decay"]),
                                  lr=HPARAMS["lr"], betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(HPARAMS["warmup_steps"], len(data), HPARAMS["min_lr_ratio"]))
    times, losses, last = [], [], None
    for step, batch in enumerate(data):
        torch.manual_seed(step_seed(0, step, 0))
        loss, _ = pretrainer(batch["x"], batch["coords"], batch["channel_mask"],
                             batch["ref_coords"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(pretrainer.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        now = time.perf_counter()
        if last is not None:
            times.append(now - last)
        last = now
    return times, losses


def main() -> int:
    """Alternate the two runs and print median step times and the loss agreement."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = batches(work, args.steps)
        medians: dict[str, list[float]] = {"lightning": [], "plain": []}
        for round_ in range(args.rounds):
            lt, ll = lightning_run(data, work / f"run{round_}")
            pt, pl = plain_run(data)
            medians["lightning"].append(statistics.median(lt[20:]))
            medians["plain"].append(statistics.median(pt[20:]))
            worst = max(abs(a - b) for a, b in zip(ll, pl, strict=True))
        print(f"eegfm_tiny, batch 8 x 19 ch x 4 s, {args.steps} steps x {args.rounds} rounds, "
              f"torch {torch.__version__}, Lightning {L.__version__}, {os.cpu_count()} CPUs, "
              f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset (runtime default)')}")
        for name, values in medians.items():
            print(f"{name:>9}: median step {1e3 * statistics.median(values):.1f} ms "
                  f"(rounds: {', '.join(f'{1e3 * v:.1f}' for v in values)})")
        overhead = statistics.median(medians["lightning"]) - statistics.median(medians["plain"])
        print(f"Lightning + callbacks: {1e3 * overhead:+.1f} ms per step; largest loss "
              f"difference between the two runs: {worst:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
