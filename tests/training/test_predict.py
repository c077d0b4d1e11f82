"""`eegfm predict` on recordings from other devices than the eegmat training data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from eegmat_shards import prep_eegmat_subjects

from eegfm.cli import main
from eegfm.training.finetune_runner import run_finetune


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, eegmat_dir: Path) -> Path:
    """A linear probe fine-tuned on eegmat subjects 00-02 (one epoch): model_random_init.pt."""
    shards = prep_eegmat_subjects(tmp_path_factory, eegmat_dir, ["00", "01", "02"])
    out = tmp_path_factory.mktemp("finetune")
    run_finetune({
        "task": {"pattern": r"Subject(?P<subject>\d+)_(?P<label>[12])",
                 "classes": {1: "rest", 2: "arithmetic"}, "window_s": 4.0, "stride_s": 4.0},
        "data": str(shards), "models": ["random_init"], "protocol": "loso", "max_folds": 1,
        "n_val_subjects": 1, "out": str(out), "progress": False,
        "train": {"epochs": 1, "threads": 1}})
    return out / "model_random_init.pt"


def test_predict_on_other_devices(tmp_path: Path, model_path: Path, formats_dir: Path, capsys):
    nihon_kohden = formats_dir / "NihonKohden" / "MB0400FU.EDF"  # 19 clinical 10-20 channels
    ant = formats_dir / "antio" / "CA_208" / "test_CA_208.vhdr"  # ANT cap, 10-05 names, 1 kHz
    out = tmp_path / "predictions.csv"
    code = main(["predict", "--model", str(model_path), "--input", str(nihon_kohden), str(ant),
                 "--out", str(out), "--stride-s", "2", "--no-progress"])
    assert code == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["recording", "recording_id", "window_start_s", "n_channels",
                                   "predicted", "p_rest", "p_arithmetic"]
    nk = table[table["recording"] == str(nihon_kohden.resolve())]
    assert len(nk) == 13  # 29 s at a 2 s hop: windows starting 0, 2, ..., 24 s
    np.testing.assert_allclose(nk["window_start_s"], np.arange(13) * 2.0)
    assert set(table["predicted"]) <= {"rest", "arithmetic"}
    np.testing.assert_allclose(table["p_rest"] + table["p_arithmetic"], 1.0, rtol=1e-5)
    assert table[table["recording"] == str(ant.resolve())]["n_channels"].iloc[0] > 19
    assert "predictions:" in capsys.readouterr().out


def test_predict_reports_unusable_inputs(tmp_path: Path, model_path: Path, formats_dir: Path,
                                         capsys):
    no_positions = formats_dir / "Brainvision" / "test_NO.vhdr"  # channels '1'..'65', no montage
    code = main(["predict", "--model", str(model_path), "--input", str(no_positions),
                 "--out", str(tmp_path / "p.csv"), "--no-progress"])
    assert code == 1
    assert "could be located" in capsys.readouterr().err
    assert main(["predict", "--model", str(tmp_path / "none.pt"), "--input",
                 str(no_positions)]) == 2
    assert "no such fine-tuned model" in capsys.readouterr().err
