"""`eegfm prep | inspect | validate` through the dispatcher, as a user runs them."""

from __future__ import annotations

import json

import h5py

from eegfm.cli import main


def test_prep_inspect_validate(tmp_path, short_eegmat, formats_dir, capsys):
    out = tmp_path / "shards"
    sources = [
        str(short_eegmat),
        str(formats_dir / "NihonKohden"),
        str(formats_dir / "Brainvision/test_NO.vhdr"),
    ]
    assert main(["prep", *sources, "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr()
    assert "converted 4 recording(s)" in printed.out and "1 duplicate(s)" in printed.out
    assert "test_NO.vhdr" in printed.err
    assert main(["prep", *sources, "--out", str(out), "--no-progress", "--strict"]) == 1
    assert "4 already done" in capsys.readouterr().out

    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "4 recordings, 0.06 h of EEG" in text
    assert "eegmat" in text and "NihonKohden" in text
    assert "template 76" in text  # 4 recordings x 19 channels located on the template
    assert "failures: 1" in text and "duplicates (not stored twice): 1" in text
    assert main(["inspect", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["subjects"] == 4 and summary["montages"][0]["n_channels"] == 19

    assert main(["validate", str(out), "--no-progress"]) == 0
    shard = out / "shard-00000.h5"
    with h5py.File(shard) as handle:
        offset = handle["eegmat__Subject01_2.edf/data"].id.get_chunk_info(3).byte_offset
    with open(shard, "r+b") as handle:
        handle.seek(offset + 10)
        handle.write(b"\x7f\x7f\x7f\x7f")
    assert main(["validate", str(out), "--no-progress"]) == 1
    error = capsys.readouterr().err
    assert "DAMAGED shard-00000.h5: recording eegmat__Subject01_2.edf" in error
    assert "checksum mismatch" in error


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["prep", str(tmp_path / "missing.edf"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path)]) == 2
    assert "no manifest.jsonl" in capsys.readouterr().err
    assert main(["validate", str(tmp_path), "--no-progress"]) == 1
