"""Shard contract: writer/reader round trip, manifest parts, pickling, fork safety, validation."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import pickle

import h5py
import numpy as np
import pytest

from eegfm.shards import (
    FORMAT,
    FORMAT_VERSION,
    METADATA_SHA256,
    PREP_CONFIG,
    Recording,
    ShardReader,
    ShardWriter,
    events_frame,
    metadata_sha256,
    read_manifest,
    validate_shards,
)


def _recording(recording_id: str, n_channels: int = 4, n_samples: int = 1000, seed: int = 0):
    rng = np.random.default_rng(seed)
    coords = rng.normal(size=(n_channels, 3)).astype(np.float32) * 0.05
    ref_coords = np.full((n_channels, 3), np.nan, np.float32)
    ref_coords[0] = coords[1]  # one bipolar derivation
    return Recording(
        recording_id=recording_id,
        data=rng.normal(scale=20, size=(n_channels, n_samples)).astype(np.float32),
        coords=coords,
        ref_coords=ref_coords,
        ch_names=[f"E{i}" for i in range(n_channels)],
        events=events_frame([10, 500], [0, 200], [1, 2], ["rest", "task"]),
        attrs={
            "dataset": "toy",
            "subject": "01",
            "session": None,
            "run": "1",
            "source": f"/data/{recording_id}.edf",
            "source_sha256": "ab" * 32,
            "orig_sfreq": 500.0,
            "montage_id": "0123456789abcdef",
            "reference": "average",
            "highpass": 0.5,
            "lowpass": 75.0,
            "line_freq": 50.0,
            "bad_channels": ["E3"],
            "localization": {"template": n_channels},
        },
    )


def _write_dir(root, recordings, **kwargs):
    root.mkdir(parents=True, exist_ok=True)
    (root / PREP_CONFIG).write_text("config_hash: test\n")
    with ShardWriter(root, sfreq=200.0, config_hash="cfg", **kwargs) as writer:
        for recording in recordings:
            writer.write(recording)
    return writer.entries


def test_round_trip(tmp_path):
    recordings = [_recording(f"toy__rec{i}", seed=i) for i in range(3)]
    _write_dir(tmp_path, recordings)
    assert not list(tmp_path.glob("*.tmp"))
    reader = ShardReader(tmp_path)
    assert [e.recording_id for e in reader.entries] == [r.recording_id for r in recordings]
    for recording in recordings:
        entry = reader.entry(recording.recording_id)
        assert (entry.n_channels, entry.n_samples, entry.sfreq) == (4, 1000, 200.0)
        assert entry.labels == ["rest", "task"] and entry.has_events and entry.subject == "01"
        assert entry.session is None and entry.config_hash == "cfg"
        window = reader.read_window(recording.recording_id, 100, 400)
        np.testing.assert_array_equal(window.data, recording.data[:, 100:500])
        assert window.data.dtype == np.float32 and window.ch_names == ("E0", "E1", "E2", "E3")
        np.testing.assert_array_equal(window.coords, recording.coords)
        assert np.isnan(window.ref_coords[1:]).all()
        np.testing.assert_array_equal(window.ref_coords[0], recording.coords[1])
        events = reader.events(recording.recording_id)
        assert events.to_dict("list") == recording.events.to_dict("list")
        attrs = reader.attrs(recording.recording_id)
        assert attrs["bad_channels"] == ["E3"] and attrs["session"] is None
        assert attrs["localization"] == {"template": 4} and attrs["highpass"] == 0.5
    whole = reader.read_recording("toy__rec2")
    np.testing.assert_array_equal(whole.data, recordings[2].data)
    with pytest.raises(IndexError, match="toy__rec0"):
        reader.read_window("toy__rec0", 900, 200)
    with h5py.File(tmp_path / reader.entries[0].shard) as handle:
        assert handle.attrs["format"] == FORMAT and handle.attrs["units"] == "uV"
        assert handle["toy__rec0/data"].chunks == (4, 400)


def test_streamed_write_equals_in_memory_and_shards_roll(tmp_path):
    recording = _recording("toy__a", n_samples=1234)
    one = _write_dir(tmp_path / "one", [recording])
    with ShardWriter(tmp_path / "two", sfreq=200.0, max_shard_bytes=4 * 1234 * 4) as writer:
        for name in ("toy__a", "toy__b"):
            stream = writer.open_recording(
                name,
                ch_names=recording.ch_names,
                coords=recording.coords,
                ref_coords=recording.ref_coords,
                n_samples=1234,
            )
            for start in range(0, 1234, 300):  # blocks not aligned with HDF5 chunks
                stream.write(recording.data[:, start : start + 300])
            stream.finish(recording.events, recording.attrs)
    two = writer.entries
    assert two[0].sha256 == two[1].sha256 == one[0].sha256
    assert [e.shard for e in two] == ["shard-00000.h5", "shard-00001.h5"]


def test_manifest_parts_and_roots_merge(tmp_path):
    for index in range(2):
        with ShardWriter(
            tmp_path / "a",
            sfreq=200.0,
            shard_prefix=f"shard-{index:05d}",
            manifest_name=f"manifest-{index:05d}.jsonl",
        ) as writer:
            writer.write(_recording(f"toy__part{index}"))
    _write_dir(tmp_path / "b", [_recording("other__x")])
    assert [e.recording_id for e in read_manifest(tmp_path / "a")] == ["toy__part0", "toy__part1"]
    reader = ShardReader([tmp_path / "a", tmp_path / "b"])
    assert len(reader) == 3 and reader.read_window("other__x", 0, 10).data.shape == (4, 10)
    with pytest.raises(ValueError, match="listed in both"):
        ShardReader([tmp_path / "b", tmp_path / "b"])


def _read_in_child(reader, queue):
    queue.put(float(reader.read_window("toy__rec0", 0, 50).data.sum()))


def test_reader_pickles_and_survives_fork(tmp_path):
    recording = _recording("toy__rec0")
    _write_dir(tmp_path, [recording])
    reader = ShardReader(tmp_path)
    expected = float(recording.data[:, :50].sum())
    assert reader.read_window("toy__rec0", 0, 50).data.sum() == pytest.approx(expected)
    clone = pickle.loads(pickle.dumps(reader))  # handles are not pickled, reopened lazily
    assert clone.read_window("toy__rec0", 0, 50).data.sum() == pytest.approx(expected)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_read_in_child, args=(reader, queue))
    child.start()
    child.join(30)
    assert queue.get(timeout=5) == pytest.approx(expected)


def test_unfinished_shard_is_never_listed(tmp_path):
    writer = ShardWriter(tmp_path, sfreq=200.0)
    writer.write(_recording("toy__a"))
    assert list(tmp_path.glob("shard-*.h5.tmp")) and not (tmp_path / "manifest.jsonl").exists()
    writer.abort()
    assert not list(tmp_path.glob("shard-*"))


def test_writer_rejects_bad_recordings(tmp_path):
    bad = _recording("toy__nan")
    bad.data[1, 7] = np.nan
    with ShardWriter(tmp_path, sfreq=200.0) as writer:
        with pytest.raises(ValueError, match="NaN"):
            writer.write(bad)
        unlocated = _recording("toy__coords")
        unlocated.coords[0] = np.nan
        with pytest.raises(ValueError, match="finite"):
            writer.write(unlocated)
        writer.write(_recording("toy__ok"))
    assert [e.recording_id for e in read_manifest(tmp_path)] == ["toy__ok"]


def test_validate_detects_flipped_data_bytes(tmp_path):
    _write_dir(tmp_path, [_recording("toy__a"), _recording("toy__b", seed=1)])
    assert validate_shards(tmp_path) == []
    shard = tmp_path / "shard-00000.h5"
    with h5py.File(shard) as handle:
        offset = handle["toy__b/data"].id.get_chunk_info(1).byte_offset
    with open(shard, "r+b") as handle:
        handle.seek(offset + 123)
        byte = handle.read(1)
        handle.seek(offset + 123)
        handle.write(bytes([byte[0] ^ 0xFF]))
    problems = validate_shards(tmp_path)
    assert len(problems) == 1
    assert "shard-00000.h5" in problems[0] and "toy__b" in problems[0]
    assert "checksum mismatch" in problems[0]


def test_validate_reports_schema_problems(tmp_path):
    _write_dir(tmp_path, [_recording("toy__a")])
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    record["n_samples"] = 999
    (tmp_path / "manifest.jsonl").write_text(json.dumps(record) + "\n")
    (tmp_path / "shard-00007.h5").write_bytes(b"")
    problems = validate_shards(tmp_path)
    assert any("toy__a" in p and "expected (4, 999)" in p for p in problems)
    assert any("shard-00007.h5" in p and "not listed" in p for p in problems)
    assert validate_shards(tmp_path / "missing")


def test_metadata_checksum_is_the_same_for_a_copy_and_a_second_write(tmp_path):
    recording = _recording("toy__a")
    _write_dir(tmp_path / "direct", [recording])
    with ShardWriter(tmp_path / "staged", sfreq=200.0, manifest_name=None) as staged:
        staged.write(recording)
    _write_dir(tmp_path / "copied", [])
    with ShardWriter(tmp_path / "copied", sfreq=200.0, config_hash="cfg") as writer:
        writer.write_staged(staged.entries[0])  # copied by HDF5, as `prep --workers N` does
    checksums = []
    for folder in ("direct", "copied"):
        assert validate_shards(tmp_path / folder) == []
        with h5py.File(tmp_path / folder / "shard-00000.h5") as handle:
            assert handle.attrs["format_version"] == FORMAT_VERSION
            group = handle["toy__a"]
            assert group.attrs[METADATA_SHA256] == metadata_sha256(group)
            checksums.append(group.attrs[METADATA_SHA256])
    assert checksums[0] == checksums[1]


def test_memory_mapped_windows_equal_hdf5_reads(tmp_path, monkeypatch):
    import eegfm.shards.reader as reader_module

    recording = _recording("toy__long", n_channels=7, n_samples=5003, seed=4)
    _write_dir(tmp_path / "f32", [recording])
    with ShardWriter(tmp_path / "staged", sfreq=200.0, manifest_name=None) as staged:
        staged.write(recording)
    _write_dir(tmp_path / "copied", [])
    with ShardWriter(tmp_path / "copied", sfreq=200.0) as writer:
        writer.write_staged(staged.entries[0])  # copied by HDF5 from another file
    half = dataclasses.replace(recording, recording_id="toy__half")
    (tmp_path / "f16").mkdir()
    (tmp_path / "f16" / PREP_CONFIG).write_text("x: 1\n")
    with ShardWriter(tmp_path / "f16", sfreq=200.0, dtype="float16") as writer:
        writer.write(half)
    rng = np.random.default_rng(0)
    starts = [*rng.integers(0, 5003 - 801, 50).tolist(), 0, 5003 - 801, 399, 400]
    for folder, name in (("f32", "toy__long"), ("copied", "toy__long"), ("f16", "toy__half")):
        fast = ShardReader(tmp_path / folder)
        assert fast._open(name).chunk_offsets is not None  # the fast path is in use
        monkeypatch.setattr(reader_module, "chunk_offsets", lambda data: None)
        slow = ShardReader(tmp_path / folder)
        for start in starts:
            a, b = fast.read_window(name, start, 801), slow.read_window(name, start, 801)
            assert a.data.dtype == b.data.dtype == np.float32
            np.testing.assert_array_equal(a.data, b.data)
        monkeypatch.undo()
    np.testing.assert_array_equal(
        ShardReader(tmp_path / "f32").read_recording("toy__long").data, recording.data
    )
