"""Damaged and hostile shard directories: validate reports every problem and keeps checking,
readers never open a file outside the directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eegmat_shards import link_files

from eegfm.cli import main
from eegfm.prep import load_prep_config, run_prep
from eegfm.shards import ShardReader, validate_shards

SHORT = ["Subject00_2.edf", "Subject01_2.edf", "Subject02_2.edf"]  # 62 s each


@pytest.fixture
def three_shards(tmp_path: Path, eegmat_dir: Path) -> Path:
    """Three short eegmat recordings, one shard file each."""
    folder = link_files(tmp_path / "eegmat", eegmat_dir, SHORT)
    out = tmp_path / "shards"
    run_prep([str(folder)], out, load_prep_config(None, shard_max_bytes=500_000), progress=False)
    assert len(list(out.glob("*.h5"))) == 3
    return out


def test_validate_reports_damaged_file_metadata_and_checks_the_other_shards(three_shards, capsys):
    first, *others = sorted(three_shards.glob("*.h5"))
    # the repro flipped 64 bytes at offset 1200, inside the file attributes; where they
    # lie depends on HDF5's layout, so flip 16 bytes just past the name of the first one
    offset = first.read_bytes().index(b"format_version") + 16
    with first.open("r+b") as handle:
        handle.seek(offset)
        block = handle.read(16)
        handle.seek(offset)
        handle.write(bytes(b ^ 0xFF for b in block))
    problems = validate_shards(three_shards)
    assert problems and all(p.startswith(first.name) for p in problems)
    assert main(["validate", str(three_shards), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"DAMAGED {first.name}" in err and "Traceback" not in err
    for other in others:  # still checked: damage them too and see it reported
        other.write_bytes(b"")
    assert {p.split(":")[0] for p in validate_shards(three_shards)} == {
        p.name for p in (first, *others)}


@pytest.mark.parametrize("shard", ["../other/shard-00000.h5", "/etc/passwd", "sub/x.h5", ""])
def test_manifest_shard_paths_must_be_plain_names(three_shards, capsys, shard: str):
    manifest = three_shards / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    record = json.loads(lines[0])
    record["shard"] = shard
    manifest.write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match="is not a file name inside the shard directory"):
        ShardReader([three_shards])
    assert main(["validate", str(three_shards), "--no-progress"]) == 1
    assert "not a file name inside the shard directory" in capsys.readouterr().err
