"""Devices and precision for finetune, predict and demo (Lightning Fabric), on real eegmat.

No GPU here: the CPU runs bf16-mixed autocast, the path a GPU takes with another device; the
GPU run itself is `benchmarks/gpu_check.sh`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from eegmat_shards import prep_eegmat_subjects

from eegfm.cli import main
from eegfm.data.tasks import build_task_set
from eegfm.models import create_model
from eegfm.training.finetune.config import TrainConfig, load_finetune_config
from eegfm.training.finetune.fold_models import window_tensors
from eegfm.training.finetune.loop import make_fabric
from eegfm.training.finetune.module import encode_windows

REPO = Path(__file__).resolve().parents[2]
EEGMAT = REPO / "configs" / "finetune" / "eegmat.yaml"


@pytest.fixture(scope="module")
def shards(tmp_path_factory, eegmat_dir: Path) -> Path:
    """Shards of eegmat subjects 00-03."""
    return prep_eegmat_subjects(tmp_path_factory, eegmat_dir, ["00", "01", "02", "03"])


def finetune(shards: Path, out: Path, *extra: str) -> int:
    """`eegfm finetune` on the shards: random-init linear probe, one fold of two, one epoch."""
    return main(["finetune", "--config", str(EEGMAT), "--data", str(shards),
                 "--models", "[random_init]", "--align", "[none]", "--n_folds", "2",
                 "--max_folds", "1", "--train.epochs", "1", "--train.threads", "1",
                 "--out", str(out), "--progress", "false", *extra])


def test_finetune_and_predict_in_bf16_mixed_on_the_cpu(shards: Path, tmp_path: Path,
                                                         eegmat_dir: Path) -> None:
    assert finetune(shards, tmp_path / "bf16", "--train.accelerator", "cpu",
                    "--train.precision", "bf16-mixed") == 0
    report = (tmp_path / "bf16" / "results.md").read_text()
    assert "in bf16-mixed precision" in report
    model = tmp_path / "bf16" / "model_random_init"
    rows = {}
    for precision in ("32-true", "bf16-mixed"):
        out = tmp_path / f"pred-{precision}.csv"
        assert main(["predict", "--model", str(model), "--input",
                     str(eegmat_dir / "Subject05_2.edf"), "--out", str(out),
                     "--precision", precision, "--progress", "false"]) == 0
        rows[precision] = pd.read_csv(out)
    p32, p16 = rows["32-true"]["p_rest"].to_numpy(), rows["bf16-mixed"]["p_rest"].to_numpy()
    assert len(p32) == len(p16) > 10
    assert np.abs(p32 - p16).max() < 0.05, "bf16 autocast changes probabilities only slightly"


def test_bf16_tokens_are_close_to_float32_tokens(shards: Path) -> None:
    """The frozen encoder's tokens (what the linear probe reads) under bf16 autocast."""
    task = build_task_set(load_finetune_config(EEGMAT).task, str(shards), multiple_of=200,
                          sfreq=200.0, progress=False)
    torch.manual_seed(0)
    encoder = create_model("eegfm_tiny")
    data = window_tensors(task, "none")
    data.x, data.y = data.x[:32], data.y[:32]
    tokens = {}
    for precision in ("32-true", "bf16-mixed"):
        fabric = make_fabric(TrainConfig(precision=precision))
        tokens[precision], mask = encode_windows(encoder, data, 16, fabric=fabric)
        assert tokens[precision].dtype == torch.float32 and tokens[precision].device.type == "cpu"
    want, got = tokens["32-true"], tokens["bf16-mixed"]
    error = (got - want)[mask].norm() / want[mask].norm()
    assert 0 < error < 0.05, float(error)


def test_device_options_are_usage_errors_and_in_help(shards: Path, tmp_path: Path,
                                                     capsys) -> None:
    assert finetune(shards, tmp_path / "two", "--train.devices", "2") == 2
    assert "one device" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert finetune(shards, tmp_path / "gpu", "--train.accelerator", "cuda") == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("eegfm finetune: ") and "accelerator cuda" \
            in err[0], err
    # finetune's are TrainConfig fields (train.*), predict's and demo's their own
    for command, prefix in (("finetune", "--train."), ("predict", "--"), ("demo", "--")):
        help_text = subprocess.run([sys.executable, "-m", "eegfm", command, "--help"],
                                   capture_output=True, text=True).stdout
        for option in ("accelerator", "devices", "precision"):
            assert prefix + option in help_text, (command, option)
