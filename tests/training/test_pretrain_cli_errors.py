"""`eegfm pretrain` configuration errors: one line naming the option, exit status 2."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from eegmat_shards import prep_eegmat_subjects

from eegfm.cli import main

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "pretrain" / "tiny.yaml")


@pytest.fixture(scope="module")
def shards(tmp_path_factory, eegmat_dir: Path) -> Path:
    """Shards of eegmat subject 00."""
    return prep_eegmat_subjects(tmp_path_factory, eegmat_dir, ["00"])


@pytest.mark.parametrize(("args", "message"), [
    (["--data.batch_size", "0"], "data.batch_size must be positive"),
    (["--data.window_s", "0"], "data.window_s must be positive"),
    (["--model.encoder", "eegfm_gigantic"], "unknown model 'eegfm_gigantic'"),
    (["--resume", "missing.ckpt"], "--resume missing.ckpt: no such checkpoint file"),
    (["--data.max_channels", "0"], "data.max_channels must be >= 1 or null"),
])
def test_bad_options_are_one_line_and_exit_2(tmp_path: Path, shards: Path, capsys, monkeypatch,
                                             args: list[str], message: str):
    # Lightning's log handler keeps the stream an earlier test captured; its write errors are
    # pytest's, not the command's
    monkeypatch.setattr(logging, "raiseExceptions", False)
    code = main(["pretrain", "--config", TINY, "--data", str(shards), "--run_dir",
                 str(tmp_path / "run"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("eegfm pretrain: ") and message in err[-1]
    assert not any("Traceback" in line for line in err), "\n".join(err)


@pytest.mark.parametrize(("args", "message"), [
    (["--data.batch_size", "100000"], "data.batch_size=100000 x 1 ranks is larger than one epoch"),
    (["--data.window_s", "0.3"], "not a multiple of the encoder's patch_len"),
    (["--data.window_s", "100000"], "no recording holds a full window"),
    (["--data.dataset_weights", '{"tuh": 2}'], "data.dataset_weights names datasets ['tuh']"),
    (["--data.window_s", "0.001"], "data.window_s=0.001 is shorter than one sample"),
    (["--model.encoder_overrides", '{"sfreq": 100}'], "shards are at 200.0 Hz"),
])
def test_options_rejected_once_model_and_data_meet_exit_2(tmp_path: Path, shards: Path, capsys,
                                                          monkeypatch, args: list[str],
                                                          message: str):
    # checked inside `trainer.fit` (datamodule and module setup), not when the CLI is built
    monkeypatch.setattr(logging, "raiseExceptions", False)
    code = main(["pretrain", "--config", TINY, "--data", str(shards), "--run_dir",
                 str(tmp_path / "run"), "--trainer.enable_progress_bar", "false", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err[-1]
    assert err[-1].startswith("eegfm pretrain: ") and message in err[-1], err[-1]
    assert "internal error" not in err[-1]
    assert not any("Traceback" in line for line in err), "\n".join(err)


def test_missing_shard_directory_is_one_line_and_exit_2(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setattr(logging, "raiseExceptions", False)
    missing = tmp_path / "no-such-shards"
    code = main(["pretrain", "--config", TINY, "--data", str(missing), "--run_dir",
                 str(tmp_path / "run"), "--trainer.enable_progress_bar", "false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == f"eegfm pretrain: shard directory {missing} does not exist", err[-1]


def test_a_value_error_inside_fit_that_is_no_option_stays_an_internal_error(
    tmp_path: Path, shards: Path, capsys, monkeypatch
):
    from eegfm.training.pretrain.module import MaskedPretrainModule

    def broken(self: MaskedPretrainModule, batch: dict, batch_idx: int) -> None:
        raise ValueError("a bug, not an option")

    monkeypatch.setattr(logging, "raiseExceptions", False)
    monkeypatch.setattr(MaskedPretrainModule, "training_step", broken)
    code = main(["pretrain", "--config", TINY, "--data", str(shards), "--run_dir",
                 str(tmp_path / "run"), "--trainer.enable_progress_bar", "false",
                 "--trainer.max_steps", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith(
        "eegfm pretrain: internal error: ValueError: a bug, not an option"), err[-1]
