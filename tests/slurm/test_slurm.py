"""The cluster recipes under a real SLURM: a one-node cluster started for these tests.

`data_prep/slurm/prep_array.sbatch` and `pretrain/slurm/pretrain.sbatch` are submitted with
`sbatch` exactly as docs/pretrain.md and data_prep/README.md tell users to, on small
allocations (one CPU per task, no GPU), and checked against runs without SLURM or without
interruption. Skipped, with the reason, where SLURM cannot start (see `cluster.unavailable`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cluster import Cluster, unavailable

from eegfm.prep import load_prep_config, run_prep
from eegfm.shards.format import read_manifest
from eegfm.training.pretrain.metrics_csv import read_csv_rows

REPO = Path(__file__).resolve().parents[2]
PREP_RECIPE = REPO / "data_prep" / "slurm" / "prep_array.sbatch"
PRETRAIN_RECIPE = REPO / "pretrain" / "slurm" / "pretrain.sbatch"
PREP_CONFIG = REPO / "configs" / "prep" / "default.yaml"
TINY = REPO / "configs" / "pretrain" / "tiny.yaml"
EEGMAT = [f"Subject{s:02d}_{run}.edf" for s in range(3) for run in (1, 2)]
STEPS = 40  # every pretraining run below: a 40-step schedule
HOLD = 25  # interrupted runs wait after this step for their signal (see slurm_hold.HoldAt)
TIMING = {"epoch", "samples_per_s", "tokens_per_s", "data_wait_s", "step_time_s"}
# 2 tasks x 1 CPU, no GPU: the smallest allocation DDP runs on
SMALL = ["--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=0", "--cpus-per-task=1"]

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.xdist_group("slurm"),  # one cluster, on one worker
    pytest.mark.skipif(unavailable() is not None, reason=str(unavailable())),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """A one-node cluster for this module; no daemon or job outlives it."""
    running = Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        yield running.start(cpus=2)
    finally:
        running.stop()
        left = running.leftovers()
        assert not left, f"SLURM processes left behind: {left}"


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory, eegmat_dir: Path) -> Path:
    """A folder of links to six eegmat recordings (three subjects)."""
    folder = tmp_path_factory.mktemp("src") / "eegmat"
    folder.mkdir()
    for name in EEGMAT:
        (folder / name).symlink_to(eegmat_dir / name)
    return folder


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory, sources: Path) -> Path:
    """Shards of the six recordings, prepped without SLURM."""
    out = tmp_path_factory.mktemp("shards")
    summary = run_prep([str(sources)], out, load_prep_config(PREP_CONFIG), progress=False)
    assert not summary.failures and len(read_manifest(out)) == len(EEGMAT)
    return out


def job_env(**extra: str) -> dict[str, str]:
    """What a job needs from the submitting shell: this Python's `eegfm`, the test callbacks."""
    return {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(REPO)]),
        **extra,
    }


def submit_pretraining(cluster: Cluster, shards: Path, run: Path, *options: str,
                       args: tuple[str, ...] = ()) -> int:
    """`sbatch [options] pretrain.sbatch [args]` as the recipe's header says, on CPUs."""
    (run.parent / "logs").mkdir(exist_ok=True)  # SLURM opens --output before the script runs
    return cluster.sbatch(
        *SMALL, *options, f"--output={run.parent / 'logs'}/%x-%j.out",
        str(PRETRAIN_RECIPE),
        "--trainer.accelerator", "cpu", "--trainer.max_steps", str(STEPS),
        "--trainer.enable_progress_bar", "false", *args,
        cwd=run.parent,
        env=job_env(SHARDS=str(shards), RUN_DIR=str(run), CONFIG=str(TINY)),
    )  # fmt: skip


def job_log(run: Path, job_id: int) -> str:
    """The job's output (every run of a requeued job, appended)."""
    path = run.parent / "logs" / f"eegfm-pretrain-{job_id}.out"
    return path.read_text(errors="replace") if path.is_file() else f"(no {path})"


def hold_at(step: int) -> tuple[str, ...]:
    """Arguments adding the HoldAt callback."""
    return ("--trainer.callbacks+=slurm_hold.HoldAt", f"--trainer.callbacks.step={step}")


def assert_same_run(run: Path, reference: Path) -> None:
    """Each step once, and the same losses, learning rates and gradient norms, to the bit, and
    the same final weights, as the uninterrupted reference (docs/pretrain.md, "Exact resume")."""
    want, got = read_csv_rows(reference / "metrics.csv"), read_csv_rows(run / "metrics.csv")
    assert [int(r["step"]) for r in got] == list(range(1, STEPS + 1)), "each step once"
    for a, b in zip(want, got, strict=True):
        for key in sorted(set(a) - TIMING):
            np.testing.assert_array_equal(b[key], a[key], err_msg=f"step {int(a['step'])} {key}")
    load = lambda path: torch.load(path, map_location="cpu", weights_only=True)  # noqa: E731
    want_ckpt = load(reference / "checkpoints" / "last.ckpt")
    got_ckpt = load(run / "checkpoints" / "last.ckpt")
    assert want_ckpt["global_step"] == got_ckpt["global_step"] == STEPS
    for name, value in want_ckpt["state_dict"].items():
        assert torch.equal(got_ckpt["state_dict"][name], value), name


@pytest.fixture(scope="module")
def reference(cluster: Cluster, shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 2-task DDP run of the same length, under the same recipe."""
    run = tmp_path_factory.mktemp("reference") / "run"
    job = submit_pretraining(cluster, shards, run, "--time=00:10:00",
                             args=("--checkpoint.every_n_train_steps", "10"))
    assert cluster.wait(job, timeout=400) == ["COMPLETED"], job_log(run, job)[-4000:]
    assert cluster.job(job)["Restarts"] == "0"
    return run


def test_prep_array_equals_a_single_prep_run(
    cluster: Cluster, sources: Path, shards: Path, tmp_path: Path
) -> None:
    """`sbatch --array=0-1 --cpus-per-task=1 --mem=1G prep_array.sbatch SRC OUT CONFIG` converts the
    same recordings, to the same data and metadata checksums, as one `eegfm prep` run; each
    task writes its own part, and `validate` reads the two parts as one dataset."""
    out, logs = tmp_path / "array", tmp_path / "logs"
    logs.mkdir()
    job = cluster.sbatch(
        "--array=0-1", "--cpus-per-task=1", "--mem=1G", f"--output={logs}/prep-%A_%a.out",
        str(PREP_RECIPE), str(sources), str(out), str(PREP_CONFIG),
        cwd=tmp_path, env=job_env(),
    )  # fmt: skip
    states = cluster.wait(job, timeout=300)
    output = "\n".join(p.read_text() for p in sorted(logs.glob("prep-*.out")))
    assert states == ["COMPLETED", "COMPLETED"], output[-4000:]
    parts = sorted(p.name for p in out.glob("manifest-*.jsonl"))
    assert parts == ["manifest-00000.jsonl", "manifest-00001.jsonl"]
    assert all((out / part).read_text().strip() for part in parts), "each task did a share"

    def content(root: Path) -> dict[str, tuple]:
        return {
            e.recording_id: (e.sha256, e.source_sha256, e.n_samples, e.n_channels, e.montage_id)
            for e in read_manifest(root)
        }

    assert content(out) == content(shards)
    validate = cluster.run([sys.executable, "-m", "eegfm", "validate", str(out)], check=False)
    assert validate.returncode == 0, validate.stdout + validate.stderr


def test_ddp_pretraining_is_requeued_by_its_time_limit_signal_and_resumes_exactly(
    cluster: Cluster, shards: Path, reference: Path, tmp_path: Path
) -> None:
    """With `--time=00:03:00 --signal=SIGUSR1@130`, SLURM signals the 2-task job 50-80 s in;
    both ranks save RUN_DIR/hpc_ckpt_1.ckpt at the next step boundary and rank 0 requeues the
    job; the requeued job (same script, same run directory) resumes from that checkpoint and
    finishes the run, equal to the uninterrupted one."""
    run = tmp_path / "run"
    job = submit_pretraining(
        cluster, shards, run, "--time=00:03:00", "--signal=SIGUSR1@130",
        args=("--checkpoint.every_n_train_steps", "10", *hold_at(HOLD)),
    )  # fmt: skip
    states = cluster.wait(job, timeout=600)
    log = job_log(run, job)
    assert states == ["COMPLETED"], log[-4000:]
    assert cluster.job(job)["Restarts"] == "1", log[-4000:]
    # every rank acts on the signal before step 26 (eegfm's StepBoundarySignals): hpc_ckpt_1
    # holds step 25, newer than checkpoints/last.ckpt (step 20); SLURM's SIGTERM follows
    assert (f"requeue signal: saved {run / 'hpc_ckpt_1.ckpt'} after step {HOLD}; requeueing "
            f"SLURM job {job}") in log, log[-4000:]
    assert f"stopped by SIGTERM after step {HOLD + 1}" in log
    assert f"resuming from {run / 'hpc_ckpt_1.ckpt'}" in log, log[-4000:]
    assert_same_run(run, reference)


def test_a_cancelled_job_resubmitted_resumes_from_last_ckpt(
    cluster: Cluster, shards: Path, reference: Path, tmp_path: Path
) -> None:
    """`scancel` ends the job (SIGTERM: the run stops after its step, exit 143); the same
    `sbatch` command again resumes from RUN_DIR/checkpoints/last.ckpt and finishes the run."""
    run = tmp_path / "run"
    args = ("--checkpoint.every_n_train_steps", "5", *hold_at(HOLD))
    first = submit_pretraining(cluster, shards, run, "--time=00:10:00", args=args)
    cluster.wait_for(lambda: all((run / f"held-rank{r}").is_file() for r in (0, 1)),
                     f"job {first} to reach step {HOLD}", timeout=300)
    cluster.run(["scancel", str(first)])
    assert cluster.wait(first, timeout=120) == ["CANCELLED"]
    log = job_log(run, first)
    assert f"stopped by SIGTERM after step {HOLD}" in log, log[-4000:]

    again = submit_pretraining(cluster, shards, run, "--time=00:10:00", args=args)
    assert cluster.wait(again, timeout=400) == ["COMPLETED"], job_log(run, again)[-4000:]
    assert f"resuming from {run / 'checkpoints' / 'last.ckpt'}" in job_log(run, again)
    assert_same_run(run, reference)
