"""`eegfm pretrain` end to end on shards prepared from real recordings of several montages:
CPU run whose loss falls, 2-process DDP (gloo), and runs stopped by SLURM's signals, SIGKILL and
Ctrl-C that resume exactly as an uninterrupted run, past the learning-rate warm-up.

Every run is a subprocess (the CLI as a user runs it). The callbacks below are loaded there
through `--trainer.callbacks+=test_pretrain.<Name>` with this folder on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import shutil
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
from eegfm.training.pretrain.metrics_csv import read_csv_rows

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "pretrain" / "tiny.yaml"
EEGMAT = ["Subject00_1.edf", "Subject00_2.edf", "Subject01_1.edf", "Subject01_2.edf"]
FORMATS = [
    "EGI/test_egi_multiepoch_paused.mff",  # 257 electrodes (subsampled to 32)
    "antio/CA_208/test_CA_208.vhdr",  # ANT cap, 10-05 names
    "NihonKohden/MB0400FU.EEG",  # clinical 10-20, same montage as eegmat
    "BDF/test_bdf_stim_channel.bdf",  # 3 electrodes
]


class StopAt(L.Callback):
    """Stop this process right after optimizer step `step`, as `how` says:

    * "sigterm": SIGTERM to this process (what SLURM sends at a requeue, a pre-emption or
      `scancel`); Lightning's handler sets a flag and ends the run after the step;
    * "sigkill": SIGKILL (a hard kill: nothing is flushed, no handler runs);
    * "sigint": SIGINT, i.e. Ctrl-C (KeyboardInterrupt; Lightning shuts down "gracefully");
    * "stop": `trainer.should_stop` (a clean end, used by the uninterrupted reference).

    With `signal_step`, first send SIGUSR1 in the middle of the step after `signal_step`
    (between forward and backward), as SLURM does 90 s before a time limit: Lightning's handler
    writes RUN_DIR/hpc_ckpt_1.ckpt there and tries `scontrol requeue` (absent here: it only
    warns)."""

    def __init__(self, step: int, how: str = "stop", signal_step: int | None = None) -> None:
        self.step, self.how, self.signal_step = step, how, signal_step

    def on_before_backward(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.signal_step:
            os.kill(os.getpid(), signal.SIGUSR1)

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step != self.step:
            return
        if self.how == "stop":
            trainer.should_stop = True
            return
        if self.how == "sigint":
            # Python's Ctrl-C handler, as in a terminal: a process started by one that ignores
            # SIGINT (e.g. pytest run as a background job of a non-interactive shell) inherits
            # the ignoring, and Python then installs no handler
            signal.signal(signal.SIGINT, signal.default_int_handler)
        number = {"sigterm": signal.SIGTERM, "sigkill": signal.SIGKILL, "sigint": signal.SIGINT}
        os.kill(os.getpid(), number[self.how])


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


def test_cpu_pretraining_loss_falls_with_checkpoints_and_encoder_export(
    shards: Path, tmp_path: Path
) -> None:
    """tiny.yaml as shipped (300 steps): checkpoints, encoder export, falling loss. (Stopping
    and resuming: `test_runs_stopped_by_slurm_sigkill_and_ctrl_c_resume_exactly`.)"""
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
    encoder = from_pretrained(run / "encoder")  # the model folder, exported with last.ckpt
    for name, value in encoder.state_dict().items():
        assert torch.equal(value, state["state_dict"][f"pretrainer.encoder.{name}"]), name
    exported = json.loads((run / "encoder" / "config.json").read_text())
    assert exported["extra"]["global_step"] == 300 and exported["kind"] == "encoder"
    assert (run / "config.yaml").is_file()
    # run again when finished, its encoder folder gone (as in a run directory of an earlier
    # eegfm): nothing trains, and the folder is written from last.ckpt
    shutil.rmtree(run / "encoder")
    check_ok(pretrain(shards, run))
    assert [int(r["step"]) for r in read_csv_rows(run / "metrics.csv")] == list(range(1, 301))
    again = from_pretrained(run / "encoder")
    for name, value in again.state_dict().items():
        assert torch.equal(value, encoder.state_dict()[name]), name


RESUMED_STEPS = 50  # 2.5x tiny.yaml's 20 warm-up steps, of a cosine schedule planned for 300
TIMING = {"epoch", "samples_per_s", "tokens_per_s", "data_wait_s", "step_time_s"}


def stop_at(step: int, how: str, *extra: str) -> list[str]:
    """Arguments adding a `StopAt` callback to a run."""
    return ["--trainer.callbacks+=test_pretrain.StopAt", f"--trainer.callbacks.step={step}",
            f"--trainer.callbacks.how={how}", *extra]


def steps_logged(run: Path) -> list[int]:
    return [int(r["step"]) for r in read_csv_rows(run / "metrics.csv")]


def resumed_from(result: subprocess.CompletedProcess) -> str:
    lines = [x for x in (result.stdout + result.stderr).splitlines() if "resuming from" in x]
    assert len(lines) == 1, result.stderr[-3000:]
    return Path(lines[0].split("resuming from", 1)[1].strip()).name


@pytest.mark.slow
def test_runs_stopped_by_slurm_sigkill_and_ctrl_c_resume_exactly(
    shards: Path, tmp_path: Path
) -> None:
    """README: "a stopped run (Ctrl-C, SLURM time limit) resumes exactly"; docs/pretrain.md,
    "Exact resume": step k+1 of a resumed run equals step k+1 of an uninterrupted one.

    One run of tiny.yaml (a 300-step schedule, checkpoints every 8 steps) is stopped three
    ways, each resume continuing from the previous one, and compared, step by step and to the
    bit, with an uninterrupted run over steps 1-50 (loss, its parts, learning rate, gradient
    norm in metrics.csv), then on the final weights, AdamW moments and step counts and the
    schedule's state. All stops fall after the 20 warm-up steps, and the resumed runs are given
    `--trainer.max_steps 50`: the cosine schedule must keep the length it had at the first start
    (300), which only its saved state knows."""
    reference = tmp_path / "reference"
    check_ok(pretrain(shards, reference, *stop_at(RESUMED_STEPS, "stop")))
    expected = read_csv_rows(reference / "metrics.csv")
    assert [int(r["step"]) for r in expected] == list(range(1, RESUMED_STEPS + 1))

    run = tmp_path / "run"
    every = ["--checkpoint.every_n_train_steps", "8"]
    capped = [*every, "--trainer.max_steps", str(RESUMED_STEPS)]
    # 1. A SLURM job with one loader worker: the time-limit signal (SIGUSR1) lands inside step
    # 27; every rank acts on it at the next step boundary, writing hpc_ckpt_1 (step 27) before
    # step 28; SIGTERM (the requeue's kill) comes after step 29 and the run ends before step 30,
    # its rows flushed.
    slurm = {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "pretrain", "SLURM_JOB_ID": "4242"}
    slurm |= {"SLURM_NODELIST": "localhost", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
    slurm |= {"SLURM_NODEID": "0"}
    first = pretrain(shards, run, *every, "--data.num_workers", "1",
                     *stop_at(29, "sigterm", "--trainer.callbacks.signal_step=26"), env=slurm)
    assert first.returncode == 128 + signal.SIGTERM, first.stderr[-3000:]  # not 0: unfinished
    assert "stopped by SIGTERM after step 29" in first.stdout + first.stderr
    assert (run / "hpc_ckpt_1.ckpt").is_file(), first.stderr[-3000:]
    hpc = torch.load(run / "hpc_ckpt_1.ckpt", map_location="cpu", weights_only=True)
    assert hpc["global_step"] == 27, "written at the step boundary, not inside step 27"
    assert steps_logged(run) == list(range(1, 30)), "rows up to the stop, flushed"
    # 2. Requeued: resumes from hpc_ckpt_1 (step 27, newer than last.ckpt of step 24), drops
    # rows 28-29, and is hard-killed after step 37: rows past the last checkpoint (32) are lost.
    second = pretrain(shards, run, *capped, *stop_at(37, "sigkill"))
    assert second.returncode == -signal.SIGKILL, second.stderr[-3000:]
    assert resumed_from(second) == "hpc_ckpt_1.ckpt"
    assert steps_logged(run) == list(range(1, 33)), "rows up to the last checkpoint"
    # 3. Restarted: resumes from last.ckpt (step 32); Ctrl-C after step 43.
    third = pretrain(shards, run, *capped, *stop_at(43, "sigint"))
    assert third.returncode == 130, third.stderr[-3000:]  # as every command on Ctrl-C
    assert third.stderr.rstrip().endswith("eegfm pretrain: interrupted")
    assert resumed_from(third) == "last.ckpt"
    # 4. Restarted with one loader worker: resumes from last.ckpt (step 40) and ends at 50.
    fourth = pretrain(shards, run, *capped, "--data.num_workers", "1")
    check_ok(fourth)
    assert resumed_from(fourth) == "last.ckpt"

    again = read_csv_rows(run / "metrics.csv")
    assert [int(r["step"]) for r in again] == list(range(1, RESUMED_STEPS + 1)), "each step once"
    assert set(again[0]) == set(expected[0])
    for a, b in zip(expected, again, strict=True):
        for key in sorted(set(a) - TIMING):
            np.testing.assert_array_equal(b[key], a[key], err_msg=f"step {int(a['step'])} {key}")
    assert again[-1]["lr"] < 0.98 * 2e-3, "past the warm-up, on the cosine"

    load = lambda path: torch.load(path, map_location="cpu", weights_only=True)  # noqa: E731
    want = load(reference / "checkpoints" / "last.ckpt")
    got = load(run / "checkpoints" / "last.ckpt")
    assert want["global_step"] == got["global_step"] == RESUMED_STEPS
    assert want["state_dict"].keys() == got["state_dict"].keys()
    for name, value in want["state_dict"].items():
        assert torch.equal(got["state_dict"][name], value), name
    (want_opt,), (got_opt,) = want["optimizer_states"], got["optimizer_states"]
    assert want_opt["param_groups"] == got_opt["param_groups"]
    assert want_opt["state"].keys() == got_opt["state"].keys()
    for index, moments in want_opt["state"].items():
        assert moments.keys() == got_opt["state"][index].keys()
        for key, value in moments.items():  # step, exp_avg, exp_avg_sq
            assert torch.equal(got_opt["state"][index][key], value), (index, key)
    assert want["lr_schedulers"] == got["lr_schedulers"]
    assert got["lr_schedulers"][0]["lr_lambdas"][0]["total_steps"] == 300


def test_ddp_ranks_see_disjoint_windows_and_end_identical(shards: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = pretrain(
        shards, run,
        "--trainer.devices", "2", "--trainer.max_steps", "6",
        "--trainer.strategy", "ddp",  # fails if a parameter got no gradient in a step
        "--trainer.callbacks+=eegfm.training.pretrain.callbacks.WindowAuditLog",
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
