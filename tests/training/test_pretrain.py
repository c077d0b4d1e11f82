"""`eegfm pretrain` end to end on shards prepared from real recordings of several montages:
CPU run whose loss falls, 2-process DDP (gloo), and kill + resume matching an uninterrupted run.

Every run is a subprocess (the CLI as a user runs it). The callbacks below are loaded there
through `--trainer.callbacks+=test_pretrain.<Name>` with this folder on PYTHONPATH.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from eegfm.checkpoint import from_pretrained
from eegfm.prep import run_prep
from eegfm.training.callbacks import StepMetricsLogger
from eegfm.training.logging import read_csv_rows

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "pretrain" / "tiny.yaml"
EEGMAT = ["Subject00_1.edf", "Subject00_2.edf", "Subject01_1.edf", "Subject01_2.edf"]
FORMATS = [
    "EGI/test_egi_multiepoch_paused.mff",  # 257 electrodes (subsampled to 32)
    "antio/CA_208/test_CA_208.vhdr",  # ANT cap, 10-05 names
    "NihonKohden/MB0400FU.EEG",  # clinical 10-20, same montage as eegmat
    "BDF/test_bdf_stim_channel.bdf",  # 3 electrodes
]


class CrashAfterStep(L.Callback):
    """Die like a killed job right after optimizer step `step`, with the rows logged since the
    last checkpoint already on disk (as a periodic flush leaves them). With `signal_step`, first
    send SIGUSR1 to this process in the middle of the step after `signal_step` (between forward
    and backward), as SLURM does before a time limit: Lightning's handler writes
    RUN_DIR/hpc_ckpt_1.ckpt there and tries `scontrol requeue` (absent here: it only warns)."""

    def __init__(self, step: int, signal_step: int | None = None) -> None:
        self.step, self.signal_step = step, signal_step

    def on_before_backward(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.signal_step:
            os.kill(os.getpid(), signal.SIGUSR1)

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            for callback in trainer.callbacks:
                if isinstance(callback, StepMetricsLogger) and callback.csv is not None:
                    callback.csv.flush()
            os._exit(3)


class SaveRankWeights(L.Callback):
    """Write each rank's final weights to RUN_DIR/weights_rank{r}.pt, and its own and the
    rank-averaged loss of every step to RUN_DIR/losses_rank{r}.pt."""

    def __init__(self) -> None:
        self.losses: list[tuple[float, float]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: dict, *args: object) -> None:
        self.losses.append((float(outputs["loss"]), float(pl_module.step_metrics["loss"])))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        root, rank = Path(trainer.default_root_dir), trainer.global_rank
        torch.save(pl_module.state_dict(), root / f"weights_rank{rank}.pt")
        torch.save(torch.tensor(self.losses), root / f"losses_rank{rank}.pt")


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory, eegmat_dir: Path, formats_dir: Path) -> Path:
    """Shards of 4 eegmat recordings + 4 devices: montages of 257, 61, 19 and 3 electrodes."""
    out = tmp_path_factory.mktemp("pretrain_shards")
    sources = [str(eegmat_dir / f) for f in EEGMAT] + [str(formats_dir / f) for f in FORMATS]
    summary = run_prep(sources, out, None, progress=False)
    assert not summary.failures, summary.failures
    return out


def pretrain(
    shards: Path,
    run_dir: Path,
    *args: str,
    launcher: list[str] | None = None,
    env: dict[str, str] | None = None,
):
    """Run `eegfm pretrain` with the tiny config in a subprocess."""
    env = {
        **os.environ,
        **(env or {}),
        "OMP_NUM_THREADS": "1",  # two cores shared by the suite: avoid thread oversubscription
        "PYTHONPATH": os.pathsep.join([str(REPO), str(Path(__file__).parent)]),
    }
    command = [
        *(launcher or [sys.executable]),
        "-m", "eegfm", "pretrain",
        "--config", str(TINY),
        "--data", str(shards),
        "--run_dir", str(run_dir),
        "--trainer.enable_progress_bar", "false",
        *args,
    ]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def check_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]


def test_cpu_pretraining_loss_falls_and_a_killed_run_resumes_exactly(
    shards: Path, tmp_path: Path
) -> None:
    """tiny.yaml as shipped (300 steps): checkpoints, encoder export, falling loss. Then the
    same run requeued by SLURM's signal, killed, and resumed: steps 1..14 match the
    uninterrupted run and metrics.csv holds each step once. (One test, so the 300-step
    reference run is not repeated on another xdist worker.)"""
    run = tmp_path / "run"
    check_ok(pretrain(shards, run))
    rows = read_csv_rows(run / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 301))
    ratio = np.array([r["loss"] / r["loss_zero"] for r in rows])
    first, last = ratio[:40].mean(), ratio[-40:].mean()
    print(f"loss / zero-baseline: first 40 steps {first:.3f}, last 40 steps {last:.3f}")
    assert last < 0.97 and last < first - 0.02, (first, last)
    assert all(r["samples_per_s"] > 0 and r["tokens_per_s"] > 0 for r in rows)
    assert {"loss_patch", "loss_channel", "loss_block", "lr", "grad_norm"} <= set(rows[0])

    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["last.ckpt", "step=00000200.ckpt", "step=00000300.ckpt"]  # save_top_k: 2
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 300
    encoder = from_pretrained(run / "encoder.pt")
    for name, value in encoder.state_dict().items():
        assert torch.equal(value, state["state_dict"][f"pretrainer.encoder.{name}"]), name
    assert (run / "config.yaml").is_file()

    # The same run as a SLURM job (checkpoints every 6 steps, 1 worker): the requeue signal
    # lands inside step 9 (Lightning saves hpc_ckpt_1 at step 8), training goes on, the job
    # dies after step 11 with rows 9-11 on disk. The resume starts from the newer hpc
    # checkpoint (not last.ckpt of step 6), drops rows 9-11 and continues to step 14.
    resumed = tmp_path / "resumed"
    args = ["--checkpoint.every_n_train_steps", "6", "--data.num_workers", "1"]
    crash = [
        "--trainer.callbacks+=test_pretrain.CrashAfterStep",
        "--trainer.callbacks.step=11",
        "--trainer.callbacks.signal_step=8",
    ]
    slurm = {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "pretrain", "SLURM_JOB_ID": "4242"}
    slurm |= {"SLURM_NODELIST": "localhost", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
    killed = pretrain(shards, resumed, *args, *crash, env={**slurm, "SLURM_NODEID": "0"})
    assert killed.returncode == 3, killed.stderr[-3000:]
    assert (resumed / "hpc_ckpt_1.ckpt").is_file(), killed.stderr[-3000:]
    partial = [int(r["step"]) for r in read_csv_rows(resumed / "metrics.csv")]
    assert partial == list(range(1, 11)), "rows up to the crash, flushed"
    result = pretrain(shards, resumed, *args, "--trainer.max_steps", "14")
    check_ok(result)
    assert "resuming from" in result.stdout + result.stderr
    assert "hpc_ckpt_1.ckpt" in result.stdout + result.stderr
    again = read_csv_rows(resumed / "metrics.csv")
    assert [int(r["step"]) for r in again] == list(range(1, 15)), "every step exactly once"
    for a, b in zip(rows[:14], again, strict=True):
        for key in ("loss", "loss_zero", "loss_mse", "lr"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), (int(a["step"]), key)


def test_ddp_ranks_see_disjoint_windows_and_end_identical(shards: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = pretrain(
        shards, run,
        "--trainer.devices", "2", "--trainer.max_steps", "6",
        "--trainer.strategy", "ddp",  # fails if a parameter got no gradient in a step
        "--trainer.callbacks+=eegfm.training.callbacks.WindowAuditLog",
        "--trainer.callbacks+=test_pretrain.SaveRankWeights",
        launcher=torchrun,
    )  # fmt: skip
    check_ok(result)
    seen = []
    for rank in (0, 1):
        rows = (run / "windows" / f"rank{rank}.csv").read_text().splitlines()[1:]
        seen.append({tuple(row.split(",")[1:]) for row in rows})
        assert len(rows) == len(seen[rank]) == 6 * 8, "8 distinct windows per step and rank"
    assert not seen[0] & seen[1], "ranks shared windows"
    weights = [torch.load(run / f"weights_rank{r}.pt", weights_only=True) for r in (0, 1)]
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name
    losses = [torch.load(run / f"losses_rank{r}.pt", weights_only=True) for r in (0, 1)]
    own_mean = (losses[0][:, 0] + losses[1][:, 0]) / 2
    assert not torch.equal(losses[0][:, 0], losses[1][:, 0]), "ranks trained on the same data"
    for rank in (0, 1):  # the logged loss is the mean over ranks, on every rank
        torch.testing.assert_close(losses[rank][:, 1], own_mean)
    assert [int(r["step"]) for r in read_csv_rows(run / "metrics.csv")] == list(range(1, 7))
