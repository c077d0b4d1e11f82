"""`eegfm prep | inspect | validate` through the dispatcher, as a user runs them."""

from __future__ import annotations

import json

import h5py
import pytest
import yaml

from eegfm.cli import main
from eegfm.prep.config import PrepConfig, load_prep_config


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


def test_prep_options_reach_the_config(tmp_path, eegmat_dir, capsys):
    """`--lowpass_hz 40` (a PrepConfig field) is the setting the shards are written with; it
    overrides the --config file given before it, and a run's prep_config.yaml reads back."""
    config = tmp_path / "prep.yaml"
    config.write_text("lowpass_hz: 30.0\nline_freq_hz: 60.0\n")
    out = tmp_path / "shards"
    source = str(eegmat_dir / "Subject00_2.edf")
    assert main(["prep", source, "--out", str(out), "--config", str(config),
                 "--lowpass_hz", "40", "--no-progress"]) == 0
    written = load_prep_config(out / "prep_config.yaml")
    assert written == PrepConfig(lowpass_hz=40.0, line_freq_hz=60.0)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:  # the file a run wrote (with its hash) as --config
        main(["prep", source, "--out", str(out), "--config", str(out / "prep_config.yaml"),
              "--sfreq", "250", "--print_config"])
    assert stop.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["sfreq"] == 250.0 and printed["lowpass_hz"] == 40.0


@pytest.mark.parametrize(("argv", "message"), [
    (["--lowpass_hz", "150"], "lowpass_hz (150.0) must be below half of sfreq"),
    (["--sfreq", "fast"], "sfreq: expected float, got fast"),
    (["--low_pass", "40"], "--low_pass"),
])
def test_bad_prep_options_are_one_line_exit_2(tmp_path, eegmat_dir, capsys, argv, message):
    code = main(["prep", str(eegmat_dir / "Subject00_2.edf"), "--out", str(tmp_path / "o"),
                 "--no-progress", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "o").exists()


def test_prep_help_lists_the_config_fields(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["prep", "--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--sfreq", "--lowpass_hz", "--config", "--print_config", "--shard-index"):
        assert option in text, option
    assert "Common sampling rate of every shard" in text  # PrepConfig.sfreq's docstring
