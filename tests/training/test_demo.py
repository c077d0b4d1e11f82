"""`eegfm demo` refuses bad sources with a message and exit code 2, before any training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eegmat_shards import link_files

from eegfm.cli.demo import main

REPO = Path(__file__).resolve().parents[2]


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


def test_demo_fine_tunes_a_released_encoder_instead_of_pretraining(
        tmp_path: Path, eegmat_dir: Path, capsys: pytest.CaptureFixture) -> None:
    source = link_files(tmp_path / "eegmat", eegmat_dir,
                        [f"Subject0{s}_{r}.edf" for s in range(4) for r in (1, 2)])
    weights = REPO / "weights" / "eegfm_tiny"
    code = main(["--source", str(source), "--out", str(tmp_path / "out"),
                 "--pretrained", str(weights), "--baseline_epochs", "1", "--progress", "false",
                 "--finetune_config", str(REPO / "configs" / "finetune" / "tiny.yaml")])
    assert code == 0, capsys.readouterr().err
    assert not (tmp_path / "out" / "pretrain").exists(), "nothing pretrained"
    results = json.loads((tmp_path / "out" / "finetune" / "results.json").read_text())
    assert results["config"]["checkpoint"] == str(weights)
    assert {"pretrained", "pretrained (aligned)"} <= set(results["models"])
    assert "pretrained (aligned)" in capsys.readouterr().out
