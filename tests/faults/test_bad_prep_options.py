"""Prep options that cannot work are configuration errors: one line, exit status 2, no file."""

from __future__ import annotations

from pathlib import Path

import pytest

from eegfm.cli import main


@pytest.mark.parametrize(("line", "message"), [
    ("min_channels: -3", "min_channels must be positive"),
    ("shard_max_bytes: 0", "shard_max_bytes must be positive"),
    ("chunk_s: 0", "chunk_s must be positive"),
    ("entity_regex: '(?P<subject>'", "is not a valid regular expression"),
])
def test_bad_prep_config_values(tmp_path: Path, eegmat_dir: Path, capsys, line: str,
                                message: str):
    config = tmp_path / "prep.yaml"
    config.write_text(line + "\n")
    code = main(["prep", str(eegmat_dir / "Subject00_2.edf"), "--out", str(tmp_path / "out"),
                 "--config", str(config), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_negative_workers(tmp_path: Path, eegmat_dir: Path, capsys):
    code = main(["prep", str(eegmat_dir / "Subject00_2.edf"), "--out", str(tmp_path / "out"),
                 "--workers", "-2", "--no-progress"])
    assert code == 2
    assert "--workers must be at least 1, got -2" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
