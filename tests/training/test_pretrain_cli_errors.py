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
