"""`eegfm predict` on recordings from other devices than the eegmat training data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from eegmat_shards import prep_eegmat_subjects
from sklearn.metrics import balanced_accuracy_score

from eegfm.checkpoint import load_finetuned
from eegfm.cli import main
from eegfm.cli.predict import PredictConfig, build_parser, prep_settings
from eegfm.config import parse_config
from eegfm.data.tasks import build_task_set
from eegfm.evaluation.alignment import euclidean_align
from eegfm.training.finetune.config import load_finetune_config
from eegfm.training.finetune.runner import run_finetune

EEGMAT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "finetune" / "eegmat.yaml"


@pytest.fixture(scope="module")
def shards(tmp_path_factory, eegmat_dir: Path) -> Path:
    """Shards of eegmat subjects 00-02."""
    return prep_eegmat_subjects(tmp_path_factory, eegmat_dir, ["00", "01", "02"])


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, shards: Path) -> Path:
    """A linear probe fine-tuned on eegmat subjects 00-02 (one epoch): model_random_init/,
    and model_random_init_aligned/ trained on Euclidean-aligned windows."""
    out = tmp_path_factory.mktemp("finetune")
    run_finetune({
        "task": {"pattern": r"Subject(?P<subject>\d+)_(?P<label>[12])",
                 "classes": {1: "rest", 2: "arithmetic"}, "window_s": 4.0, "stride_s": 4.0},
        "data": str(shards), "models": ["random_init"], "protocol": "loso", "max_folds": 1,
        "n_val_subjects": 1, "out": str(out), "progress": False,
        "train": {"epochs": 1, "threads": 1}})
    return out / "model_random_init"


def test_predict_on_other_devices(tmp_path: Path, model_path: Path, formats_dir: Path, capsys):
    nihon_kohden = formats_dir / "NihonKohden" / "MB0400FU.EDF"  # 19 clinical 10-20 channels
    ant = formats_dir / "antio" / "CA_208" / "test_CA_208.vhdr"  # ANT cap, 10-05 names, 1 kHz
    out = tmp_path / "predictions.csv"
    code = main(["predict", "--model", str(model_path), "--input", str(nihon_kohden), str(ant),
                 "--out", str(out), "--stride_s", "2", "--progress", "false"])
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
                 "--out", str(tmp_path / "p.csv"), "--progress", "false"])
    assert code == 1
    assert "could be located" in capsys.readouterr().err
    assert main(["predict", "--model", str(tmp_path / "none.pt"), "--input",
                 str(no_positions)]) == 2
    assert "no such fine-tuned model" in capsys.readouterr().err


@pytest.mark.parametrize("aligned", [False, True])
def test_predict_scores_labelled_recordings_as_the_model_does(
        tmp_path: Path, model_path: Path, shards: Path, eegmat_dir: Path, capsys, aligned: bool):
    """predict --task equals the fine-tuned model's own forward pass on the same windows."""
    path = model_path.with_name("model_random_init_aligned") if aligned else model_path
    files = [str(eegmat_dir / f"Subject{s}_{r}.edf") for s in ("00", "01") for r in (1, 2)]
    out = tmp_path / "scored.csv"
    code = main(["predict", "--model", str(path), "--input", *files, "--task",
                 str(EEGMAT_CONFIG), "--out", str(out), "--progress", "false"])
    printed = capsys.readouterr().out
    assert code == 0
    table = pd.read_csv(out, dtype={"subject": str})
    # the same windows, cut from the training shards, through the model's forward
    model, meta = load_finetuned(path)
    assert meta["align"] == ("euclidean" if aligned else "none")
    task = build_task_set(load_finetune_config(EEGMAT_CONFIG).task, shards, multiple_of=200,
                          progress=False)
    task = task.subset(np.flatnonzero(np.isin(task.subject, ["00", "01"])))
    x = euclidean_align(task.x, task.subject) if aligned else task.x
    with torch.no_grad():
        logits = model(torch.from_numpy(x), torch.from_numpy(task.coords),
                       torch.from_numpy(task.channel_mask), torch.from_numpy(task.ref_coords))
    proba = torch.softmax(logits, 1).numpy()
    assert len(table) == len(task)
    np.testing.assert_array_equal(table["window_start_s"], task.start / 200.0)
    np.testing.assert_allclose(table["p_arithmetic"], proba[:, 1], rtol=1e-4, atol=1e-5)
    for subject in ("00", "01"):
        rows = task.subject == subject
        expected = balanced_accuracy_score(task.y[rows], proba[rows].argmax(1))
        line = next(line for line in printed.splitlines() if line.startswith(subject))
        assert float(line.split()[1]) == pytest.approx(expected, abs=5e-4)
    pooled = next(line for line in printed.splitlines() if line.startswith("pooled"))
    assert float(pooled.split()[1]) == pytest.approx(
        balanced_accuracy_score(task.y, proba.argmax(1)), abs=5e-4)


def test_predict_task_labels_matching_no_window_exit_2(tmp_path: Path, model_path: Path,
                                                      eegmat_dir: Path, capsys):
    config = tmp_path / "task.yaml"
    config.write_text("task:\n  pattern: 'Session(?P<label>[12])'\n"
                      "  classes: {1: rest, 2: arithmetic}\n")
    code = main(["predict", "--model", str(model_path), "--input",
                 str(eegmat_dir / "Subject00_1.edf"), "--task", str(config), "--progress", "false",
                 "--out", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "--task" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p.csv").exists()


def test_aligned_model_aligns_each_unlabelled_recording_from_its_own_windows(
        tmp_path: Path, model_path: Path, shards: Path, eegmat_dir: Path):
    aligned_model = model_path.with_name("model_random_init_aligned")
    out = tmp_path / "p.csv"
    assert main(["predict", "--model", str(aligned_model), "--input",
                 str(eegmat_dir / "Subject01_2.edf"), "--out", str(out),
                 "--progress", "false"]) == 0
    table = pd.read_csv(out)
    model, _ = load_finetuned(aligned_model)
    task = build_task_set(load_finetune_config(EEGMAT_CONFIG).task, shards, multiple_of=200,
                          progress=False)
    task = task.subset(np.flatnonzero((task.subject == "01") & (task.y == 1)))
    x = euclidean_align(task.x, np.zeros(len(task)))
    with torch.no_grad():
        proba = torch.softmax(model(torch.from_numpy(x), torch.from_numpy(task.coords), None,
                                    torch.from_numpy(task.ref_coords)), 1).numpy()
    assert len(table) == len(task)
    np.testing.assert_allclose(table["p_arithmetic"], proba[:, 1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("args", "message"), [
    (["--stride_s", "0"], "stride_s must be greater than 0"),
    (["--stride_s", "-4"], "stride_s must be greater than 0"),
    (["--batch_size", "0"], "batch_size must be greater than 0"),
    (["--stride_s", "fast"], "stride_s: expected"),
    (["--prep.no_such_setting", "1"], "unknown key 'no_such_setting'"),
])
def test_bad_numbers_are_usage_errors(model_path: Path, eegmat_dir: Path, capsys, args,
                                      message):
    code = main(["predict", "--model", str(model_path), "--input",
                 str(eegmat_dir / "Subject00_1.edf"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_predict_options_reach_the_config(model_path: Path, tmp_path: Path, capsys):
    """Dotted options reach PredictConfig; --prep.* overrides the model's prep settings."""
    argv = ["--model", str(model_path), "--input", "a.edf", "b.edf", "--batch_size", "8",
            "--prep.line_freq_hz", "60", "--precision", "bf16-mixed"]
    options, args = parse_config(build_parser(), PredictConfig, argv)
    assert (options.batch_size, options.prep, options.precision) == (
        8, {"line_freq_hz": 60}, "bf16-mixed")
    assert args.input == ["a.edf", "b.edf"] and args.model == str(model_path)
    _, meta = load_finetuned(model_path)
    prep = prep_settings(meta, options)
    assert prep.line_freq_hz == 60.0 and prep.sfreq == meta["sfreq"]
    with pytest.raises(SystemExit) as stop:
        main(["predict", *argv, "--print_config"])
    assert stop.value.code == 0
    assert "line_freq_hz: 60" in capsys.readouterr().out
