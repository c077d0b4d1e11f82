"""`eegfm demo` refuses bad sources with a message and exit code 2, before any training."""

from __future__ import annotations

from pathlib import Path

import pytest

from eegfm.cli.demo import main


def test_missing_source_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--source", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert "nowhere: no such file or folder" in capsys.readouterr().err


def test_folder_without_recordings_is_named(tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["--source", str(empty), "--out", str(tmp_path / "out"), "--progress", "false"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("eegfm demo: ") and "no recordings found in" in err
    assert not (tmp_path / "out" / "pretrain").exists(), "nothing trained"


def test_pretrained_that_is_not_a_model_folder_is_named(tmp_path: Path, eegmat_dir: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    code = main(["--source", str(eegmat_dir), "--out", str(tmp_path / "out"),
                 "--pretrained", str(tmp_path / "no-encoder"), "--progress", "false"])
    assert code == 2
    assert "no-encoder: not a model folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists(), "checked before prep"
