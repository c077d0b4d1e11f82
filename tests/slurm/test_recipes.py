"""The SLURM recipes' own arithmetic, run by bash with a stand-in `srun` (no SLURM needed)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_recipe(recipe: str, tmp_path: Path, env: dict[str, str], *args: str) -> list[str]:
    """Run a recipe as its batch step would; return the arguments it passed to `srun`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "srun"
    fake.write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$SRUN_ARGS"\n')
    fake.chmod(0o755)
    record = tmp_path / "srun_args"
    result = subprocess.run(
        ["bash", str(REPO / recipe), *args],
        env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SRUN_ARGS": str(record),
             **env},
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return record.read_text().splitlines()


def option(args: list[str], name: str) -> str:
    """The value after `name` in an argument list."""
    return args[args.index(name) + 1]


@pytest.mark.parametrize(("cpus", "workers"), [(None, "0"), ("1", "0"), ("2", "0"),
                                               ("3", "1"), ("10", "8")])
def test_pretrain_recipe_never_asks_for_negative_loader_workers(
    tmp_path: Path, cpus: str | None, workers: str
) -> None:
    """data.num_workers = cpus-per-task - 2, and 0 on 1- or 2-CPU tasks (was -1 on one CPU)."""
    env = {"SHARDS": "/data/a /data/b", "RUN_DIR": str(tmp_path / "run"),
           "SLURM_JOB_NUM_NODES": "1", "SLURM_NTASKS_PER_NODE": "2"}
    if cpus is not None:
        env["SLURM_CPUS_PER_TASK"] = cpus
    args = run_recipe("pretrain/slurm/pretrain.sbatch", tmp_path, env,
                      "--trainer.accelerator", "cpu")
    assert option(args, "--data.num_workers") == workers
    assert args[args.index("--data") + 1: args.index("--data") + 3] == ["/data/a", "/data/b"]
    assert option(args, "--trainer.devices") == "2"
    assert args[-2:] == ["--trainer.accelerator", "cpu"], "extra arguments are passed on"


def test_prep_recipe_splits_by_array_task(tmp_path: Path) -> None:
    """Task I of an N-task array converts partition I of N with --cpus-per-task workers."""
    env = {"SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_ID": "1", "SLURM_CPUS_PER_TASK": "1"}
    args = run_recipe("data_prep/slurm/prep_array.sbatch", tmp_path, env, "SRC", "OUT")
    assert args[:3] == ["eegfm", "prep", "SRC"]
    assert option(args, "--shard-index") == "1" and option(args, "--num-shards") == "2"
    assert option(args, "--workers") == "1"
