"""run_prep end to end: bad inputs, duplicates, resume, workers, SLURM parts, SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from eegfm.prep.config import load_prep_config
from eegfm.prep.jobs import run_prep
from eegfm.shards import ShardReader, read_manifest, validate_shards

REPO = Path(__file__).resolve().parents[2]


def _manifest(out: Path) -> list[dict]:
    lines = []
    for path in sorted(out.glob("manifest*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return lines


def _failures(out: Path) -> dict[str, str]:
    records = []
    for path in sorted(out.glob("failures*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines()]
    return {Path(r["source"]).name: r["reason"] for r in records}


def test_bad_inputs_are_reported_and_good_files_convert(
    tmp_path, short_eegmat, bad_inputs, formats_dir, config
):
    sources = [
        str(short_eegmat),
        *map(str, bad_inputs.values()),
        str(formats_dir / "Brainvision/test_NO.vhdr"),
    ]
    summary = run_prep(sources, tmp_path / "out", config, progress=False)
    assert summary.exit_code() == 0 and summary.exit_code(strict=True) == 1
    failures = _failures(tmp_path / "out")
    assert set(failures) == {"zero.edf", "truncated.edf", "text.edf", "nan_raw.fif", "test_NO.vhdr"}
    assert "empty (0 bytes)" in failures["zero.edf"]
    assert (
        "truncated" in failures["truncated.edf"] and "allow_truncated" in failures["truncated.edf"]
    )
    assert "MNE cannot read it" in failures["text.edf"]
    assert "NaN/Inf samples in channel(s) EEG F3" in failures["nan_raw.fif"]
    assert "0 of 65 EEG channels could be located" in failures["test_NO.vhdr"]
    entries = {e.recording_id: e for e in read_manifest(tmp_path / "out")}
    assert sorted(entries) == [
        "bad__flat_raw.fif",
        "eegmat__Subject00_2.edf",
        "eegmat__Subject01_2.edf",
        "eegmat__Subject02_2.edf",
    ]
    assert entries["bad__flat_raw.fif"].bad_channels == ["F8"]
    assert entries["eegmat__Subject01_2.edf"].subject == "01"
    assert validate_shards(tmp_path / "out") == []
    config_file = yaml.safe_load((tmp_path / "out/prep_config.yaml").read_text())
    assert config_file["config_hash"] == entries["eegmat__Subject00_2.edf"].config_hash
    # everything failing is an error even without --strict
    assert (
        run_prep(
            [str(bad_inputs["zero"])], tmp_path / "all_bad", config, progress=False
        ).exit_code()
        == 1
    )


def test_formats_folder_end_to_end(tmp_path, formats_dir):
    config = load_prep_config(REPO / "configs/prep/shared_eeg.yaml")
    summary = run_prep([str(formats_dir)], tmp_path / "out", config, progress=False)
    entries = {e.recording_id.removeprefix("formats__"): e for e in read_manifest(tmp_path / "out")}
    assert sorted(entries) == [
        "BDF__test_bdf_stim_channel.bdf",
        "CNT__scan41_short.cnt",
        "EGI__test_egi_multiepoch_paused.mff",
        "NihonKohden__MB0400FU.EDF",
        "antio__CA_208__test_CA_208.vhdr",
    ]
    assert set(_failures(tmp_path / "out")) == {
        "test_NO.vhdr",
        "test_reduced.edf",
        "test_raw.set",
        "MB0400FU.EEG",
    }
    (duplicate,) = summary.duplicates
    assert duplicate["duplicate_of"] == "formats__NihonKohden__MB0400FU.EDF"
    assert entries["EGI__test_egi_multiepoch_paused.mff"].n_channels == 257
    assert entries["EGI__test_egi_multiepoch_paused.mff"].localization["counts"] == {
        "digitization": 257
    }
    reader = ShardReader(tmp_path / "out")
    for entry in reader.entries:
        window = reader.read_recording(entry.recording_id)
        assert window.data.shape == (entry.n_channels, entry.n_samples)
        assert np.isfinite(window.coords).all() and np.isfinite(window.data).all()
    assert validate_shards(tmp_path / "out") == []


def test_resume_skips_done_recordings_and_workers_do_not_change_output(
    tmp_path, short_eegmat, config
):
    small = load_prep_config(None, shard_max_bytes=1_500_000)  # 2 recordings per shard
    first = run_prep([str(short_eegmat)], tmp_path / "one", small, progress=False)
    assert len(first.converted) == 3
    again = run_prep([str(short_eegmat)], tmp_path / "one", small, progress=False)
    assert again.converted == [] and len(again.skipped) == 3
    pooled = run_prep([str(short_eegmat)], tmp_path / "two", small, workers=2, progress=False)
    assert len(pooled.converted) == 3
    assert _manifest(tmp_path / "one") == _manifest(tmp_path / "two")
    assert len({e["shard"] for e in _manifest(tmp_path / "one")}) == 2


def test_slurm_parts_form_one_dataset(tmp_path, short_eegmat, config):
    out = tmp_path / "parts"
    for index in range(2):
        run_prep([str(short_eegmat)], out, config, shard_index=index, num_shards=2, progress=False)
    assert sorted(p.name for p in out.glob("manifest*.jsonl")) == [
        "manifest-00000.jsonl",
        "manifest-00001.jsonl",
    ]
    assert sorted(p.name for p in out.glob("*.h5")) == [
        "shard-00000-00000.h5",
        "shard-00001-00000.h5",
    ]
    single = run_prep([str(short_eegmat)], tmp_path / "single", config, progress=False)
    parts = {e.recording_id: e.sha256 for e in ShardReader(out).entries}
    assert parts == {e.recording_id: e.sha256 for e in read_manifest(single.out_dir)}
    assert validate_shards(out) == []


def _prep_command(source: Path, out: Path, config: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "eegfm",
        "prep",
        str(source),
        "--out",
        str(out),
        "--config",
        str(config),
        "--no-progress",
    ]


def test_sigkill_midway_then_rerun_equals_uninterrupted(tmp_path, eegmat_dir):
    source = tmp_path / "eegmat"
    source.mkdir()
    for index in range(8):
        (source / f"Subject{index:02d}_2.edf").symlink_to(eegmat_dir / f"Subject{index:02d}_2.edf")
    config = tmp_path / "small.yaml"
    config.write_text("shard_max_bytes: 900000\n")  # one recording per shard
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        _prep_command(source, killed, config),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (killed / "shard-00002.h5.tmp").exists():  # two shards listed, third being written
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    listed = {e.shard for e in read_manifest(killed)}
    assert "shard-00002.h5" not in listed and (killed / "shard-00002.h5.tmp").exists()
    assert all((killed / shard).is_file() for shard in listed)
    subprocess.run(_prep_command(source, killed, config), env=env, check=True, capture_output=True)
    subprocess.run(
        _prep_command(source, tmp_path / "clean", config), env=env, check=True, capture_output=True
    )
    assert _manifest(killed) == _manifest(tmp_path / "clean")
    assert len(_manifest(killed)) == 8 and not list(killed.glob("*.tmp"))
    assert validate_shards(killed) == []


def test_moabb_source_end_to_end(tmp_path):
    config = load_prep_config(
        None, moabb_options={"FakeDataset": {"seed": 1, "n_subjects": 2, "duration": 30}}
    )
    first = run_prep(["moabb:FakeDataset"], tmp_path / "out", config, progress=False)
    assert len(first.converted) == 8 and not first.failures  # 2 subjects x 2 sessions x 2 runs
    again = run_prep(["moabb:FakeDataset:2"], tmp_path / "out", config, progress=False)
    assert again.converted == [] and len(again.skipped) == 4
    entries = read_manifest(tmp_path / "out")
    assert {e.subject for e in entries} == {"1", "2"} and all(e.has_events for e in entries)
    assert entries[0].labels == ["fake1", "fake2", "fake3"]
    assert validate_shards(tmp_path / "out") == []


def test_one_writer_per_partition(tmp_path, short_eegmat, config):
    import fcntl

    from eegfm.prep.config import PrepError

    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lock-shard", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(PrepError, match=r"another `eegfm prep` is writing manifest\.jsonl"):
            run_prep([str(short_eegmat)], out, config, progress=False)
        run_prep([str(short_eegmat)], out, config, shard_index=1, num_shards=2, progress=False)
    assert run_prep([str(short_eegmat)], out, config, strict=True, progress=False).exit_code() == 0
