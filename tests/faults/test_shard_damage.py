"""Damaged and hostile shard directories: validate reports every problem and keeps checking,
readers never open a file outside the directory, changed metadata fails its checksum."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from eegmat_shards import link_files

from eegfm.cli import main
from eegfm.prep import load_prep_config, run_prep
from eegfm.shards import METADATA_SHA256, ShardReader, check_shards, validate_shards

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


@pytest.fixture(scope="module")
def two_recordings(tmp_path_factory: pytest.TempPathFactory, eegmat_dir: Path) -> Path:
    """Two short eegmat recordings in one shard, written once for the module."""
    folder = link_files(tmp_path_factory.mktemp("src") / "eegmat", eegmat_dir, SHORT[:2])
    out = tmp_path_factory.mktemp("shards")
    run_prep([str(folder)], out, load_prep_config(None), progress=False)
    assert len(list(out.glob("*.h5"))) == 1 and validate_shards(out) == []
    return out


@pytest.fixture
def shard_copy(two_recordings: Path, tmp_path: Path) -> Path:
    """A copy of `two_recordings` this test may damage."""
    return Path(shutil.copytree(two_recordings, tmp_path / "shards"))


def _move_coords(group: h5py.Group) -> None:
    group["coords"][0] = group["coords"][0] + np.float32(0.002)  # 2 mm: finite, plausible


def _rename_channel(group: h5py.Group) -> None:
    group["ch_names"][0] = "Cz"


def _move_event(group: h5py.Group) -> None:
    events = group["events"][()]
    assert len(events), "eegmat recordings carry one annotation"
    events["onset"][0] += 200
    group["events"][...] = events


def _edit_attr(group: h5py.Group) -> None:
    group.attrs["subject"] = "99"


def _drop_checksum(group: h5py.Group) -> None:
    del group.attrs[METADATA_SHA256]


@pytest.mark.parametrize(("edit", "expected"), [
    (_move_coords, "metadata checksum mismatch"),
    (_rename_channel, "metadata checksum mismatch"),
    (_move_event, "metadata checksum mismatch"),
    (_edit_attr, "metadata checksum mismatch"),
    (_drop_checksum, "metadata checksum missing"),
])
def test_changed_metadata_fails_validate_naming_shard_and_recording(
    shard_copy: Path, capsys, edit: Callable[[h5py.Group], None], expected: str
):
    shard = next(shard_copy.glob("*.h5"))
    with h5py.File(shard, "r+") as handle:
        recording_id = sorted(handle)[1]
        edit(handle[recording_id])
    problems = validate_shards(shard_copy)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{shard.name}: recording {recording_id}: {expected}")
    assert main(["validate", str(shard_copy), "--no-progress"]) == 1
    damaged = [line for line in capsys.readouterr().err.splitlines() if line.startswith("DAMAGED")]
    assert damaged == [f"DAMAGED {problems[0]}"]


def test_shards_of_format_1_validate_with_a_note(shard_copy: Path, capsys):
    shard = next(shard_copy.glob("*.h5"))
    with h5py.File(shard, "r+") as handle:  # as written before metadata checksums existed
        handle.attrs["format_version"] = 1
        for recording_id in handle:
            del handle[recording_id].attrs[METADATA_SHA256]
    report = check_shards(shard_copy)
    assert report.problems == []
    assert report.notes == [
        f"format 1: metadata not checksummed in 1 shard(s) ({shard.name}): positions, channel "
        "names, events and attrs are not checked, the data is; `eegfm prep` into a new --out "
        "writes format 2"]
    assert main(["validate", str(shard_copy), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert captured.err == f"NOTE {report.notes[0]}\n" and "all checksums OK" in captured.out
    assert main(["-q", "validate", str(shard_copy), "--no-progress"]) == 0  # -q: no notes
    captured = capsys.readouterr()
    assert captured.err == "" and "all checksums OK" in captured.out
    reader = ShardReader([shard_copy])
    recording_id = reader.entries[0].recording_id
    assert reader.read_window(recording_id, 0, 400).data.shape[1] == 400
    assert METADATA_SHA256 not in reader.attrs(recording_id)
