"""Damaged inputs of the commands after prep: an unreadable shard, data that fails its checksum,
a truncated fine-tuned model, a truncated `last.ckpt`. Each ends in one line naming the file (or,
for the checkpoint, resumes from the newest readable one)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from eegmat_shards import prep_eegmat_subjects

from eegfm.cli import main
from eegfm.shards import METADATA_SHA256, ShardReader
from eegfm.shards.reader import ShardDataError, chunk_offsets

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "pretrain" / "tiny.yaml")
EEGMAT = str(REPO / "configs" / "finetune" / "eegmat.yaml")


@pytest.fixture(scope="module")
def shards(tmp_path_factory, eegmat_dir: Path) -> Path:
    """Shards of eegmat subject 00 (rest 182 s + arithmetic 62 s, one shard file)."""
    return prep_eegmat_subjects(tmp_path_factory, eegmat_dir, ["00"])


@pytest.fixture(autouse=True)
def _quiet_logging_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    # Lightning's log handler keeps the stream an earlier test captured; its write errors are
    # pytest's, not the command's
    monkeypatch.setattr(logging, "raiseExceptions", False)


def _copy(shards: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the shard directory and its shard file."""
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    (shard,) = copy.glob("*.h5")
    return copy, shard


def _break_signature(shard: Path) -> None:
    with shard.open("r+b") as handle:
        handle.write(bytes(8))  # the HDF5 signature: "file signature not found"


def _flip_data_bytes(shard_dir: Path) -> None:
    """Change 4 samples inside every recording's data; the file stays readable."""
    reader = ShardReader(shard_dir)
    offsets = {e.recording_id: int(chunk_offsets(reader._open(e.recording_id).data)[1])
               for e in reader.entries}
    reader.close()
    (shard,) = shard_dir.glob("*.h5")
    with shard.open("r+b") as handle:
        for offset in offsets.values():
            handle.seek(offset + 64)
            block = handle.read(16)
            handle.seek(offset + 64)
            handle.write(bytes(b ^ 0x5A for b in block))


def _pretrain(shard_dir: Path, run_dir: Path, *args: str) -> int:
    return main(["pretrain", "--config", TINY, "--data", str(shard_dir), "--run_dir",
                 str(run_dir), "--trainer.enable_progress_bar", "false", *args])


def _one_line(err: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    return err.strip().splitlines()[-1]


# ---------------------------------------------------------------------- unreadable shard
@pytest.mark.parametrize("workers", [0, 1])
def test_pretrain_on_an_unreadable_shard(shards: Path, tmp_path: Path, capsys, workers: int):
    shard_dir, shard = _copy(shards, tmp_path)
    _break_signature(shard)
    code = _pretrain(shard_dir, tmp_path / "run", "--trainer.max_steps", "2",
                     "--data.num_workers", str(workers))
    line = _one_line(capsys.readouterr().err)
    assert code == 1
    assert line.startswith("eegfm pretrain: ") and str(shard) in line, line
    assert "file signature not found" in line


def _finetune(shard_dir: Path, out: Path) -> int:
    return main(["finetune", "--config", EEGMAT, "--data", str(shard_dir), "--models",
                 "[random_init]", "--align", "[none]", "--max_folds", "1", "--train.epochs", "1",
                 "--out", str(out), "--progress", "false", "--save_model", "false"])


def test_finetune_on_an_unreadable_shard(shards: Path, tmp_path: Path, capsys):
    shard_dir, shard = _copy(shards, tmp_path)
    _break_signature(shard)
    code = _finetune(shard_dir, tmp_path / "out")
    line = _one_line(capsys.readouterr().err)
    assert code != 0
    assert line.startswith("eegfm finetune: ") and str(shard) in line, line


def test_finetune_on_an_unreadable_shard_exits_1(shards: Path, tmp_path: Path):
    shard_dir, shard = _copy(shards, tmp_path)
    _break_signature(shard)
    assert _finetune(shard_dir, tmp_path / "out") == 1


# ------------------------------------------------------------------------- data.verify
def test_reader_verify_checks_each_recording_once(shards: Path, tmp_path: Path):
    shard_dir, shard = _copy(shards, tmp_path)
    _flip_data_bytes(shard_dir)
    rest, _task = (e.recording_id for e in ShardReader(shard_dir).entries)
    ShardReader(shard_dir).read_window(rest, 0, 800)  # silently damaged without verify
    reader = ShardReader(shard_dir, verify=True)
    for _ in range(2):  # the verdict is kept: a skipped window's recording is not hashed again
        with pytest.raises(ShardDataError, match="data checksum mismatch") as caught:
            reader.read_window(rest, 0, 800)
        assert str(shard) in str(caught.value) and rest in str(caught.value)
    assert isinstance(caught.value, OSError)  # what on_bad_window="skip" skips


def test_pretrain_verify_stops_on_damaged_data(shards: Path, tmp_path: Path, capsys):
    shard_dir, shard = _copy(shards, tmp_path)
    _flip_data_bytes(shard_dir)
    code = _pretrain(shard_dir, tmp_path / "run", "--trainer.max_steps", "2",
                     "--data.verify", "true")
    line = _one_line(capsys.readouterr().err)
    assert code == 1
    assert line.startswith("eegfm pretrain: ") and str(shard) in line, line
    assert "data checksum mismatch" in line


def _move_coords(shard: Path, recording_id: str) -> None:
    """Move one electrode by 2 mm: finite and plausible, so only a checksum can tell."""
    with h5py.File(shard, "r+") as handle:
        coords = handle[recording_id]["coords"]
        coords[0] = coords[0] + np.float32(0.002)


def test_reader_verify_checks_metadata_of_format_2_shards(shards: Path, tmp_path: Path):
    shard_dir, shard = _copy(shards, tmp_path)
    _rest, task = (e.recording_id for e in ShardReader(shard_dir).entries)
    _move_coords(shard, task)
    reader = ShardReader(shard_dir, verify=True)
    with pytest.raises(ShardDataError, match="metadata checksum mismatch") as caught:
        reader.read_window(task, 0, 800)
    reader.close()
    assert str(shard) in str(caught.value) and task in str(caught.value)
    assert str(caught.value).count("checksum mismatch") == 1  # the samples are intact
    with h5py.File(shard, "r+") as handle:  # format 1 has no metadata checksum: data only
        handle.attrs["format_version"] = 1
        for recording_id in handle:
            del handle[recording_id].attrs[METADATA_SHA256]
    window = ShardReader(shard_dir, verify=True).read_window(task, 0, 800)
    assert window.data.shape[1] == 800


def test_pretrain_verify_stops_on_changed_positions(shards: Path, tmp_path: Path, capsys):
    shard_dir, shard = _copy(shards, tmp_path)
    rest, _task = (e.recording_id for e in ShardReader(shard_dir).entries)
    _move_coords(shard, rest)  # 45 of the 60 windows: read by the first batch
    code = _pretrain(shard_dir, tmp_path / "run", "--trainer.max_steps", "2",
                     "--data.verify", "true")
    line = _one_line(capsys.readouterr().err)
    assert code == 1
    assert line.startswith(f"eegfm pretrain: {shard}: recording {rest}: "), line
    assert "metadata checksum mismatch" in line


# ------------------------------------------------------------------ damaged --model file
@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A fine-tuned model folder as `eegfm finetune` writes it (tiny encoder, linear head)."""
    from eegfm import create_model
    from eegfm.checkpoint import save_finetuned
    from eegfm.heads import create_head
    from eegfm.models.classifier import EncoderClassifier
    from eegfm.prep import load_prep_config

    encoder = create_model("eegfm_tiny")
    head = create_head("linear", encoder.config["embed_dim"], 2)
    path = tmp_path_factory.mktemp("model") / "model_random_init"
    prep = load_prep_config(None)
    save_finetuned(path, EncoderClassifier(encoder, head, frozen=True),
                   class_names=["rest", "arithmetic"], window_s=4.0, stride_s=4.0, sfreq=200.0,
                   prep_config={k: getattr(prep, k) for k in ("sfreq", "highpass_hz")})
    return path


@pytest.mark.parametrize("damage", ["zero_bytes", "truncated"])
def test_predict_with_a_damaged_model_file(model_file: Path, tmp_path: Path, eegmat_dir: Path,
                                           capsys, damage: str):
    from eegfm.checkpoint import load_finetuned

    load_finetuned(model_file)  # the intact folder loads
    bad = tmp_path / model_file.name
    shutil.copytree(model_file, bad)
    weights = bad / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(b"" if damage == "zero_bytes" else data[: len(data) // 2])
    code = main(["predict", "--model", str(bad), "--input", str(eegmat_dir / "Subject00_2.edf"),
                 "--out", str(tmp_path / "p.csv"), "--progress", "false"])
    line = _one_line(capsys.readouterr().err)
    assert code == 2
    assert line.startswith("eegfm predict: ") and str(bad) in line, line
    assert not (tmp_path / "p.csv").exists()


# ------------------------------------------------------------ resume from a truncated ckpt
def test_resolve_resume_falls_back_to_the_newest_readable_checkpoint(tmp_path: Path, capsys):
    import os
    import time

    from eegfm import console
    from eegfm.cli.pretrain import resolve_resume

    console.configure()  # as the `eegfm` dispatcher does: warnings are lines on stderr
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    now = time.time()
    for age, name in ((30, "step=00000002.ckpt"), (20, "step=00000004.ckpt"), (10, "last.ckpt")):
        torch.save({"global_step": int(name[5:13]) if "step" in name else 4}, folder / name)
        os.utime(folder / name, (now - age, now - age))
    last = folder / "last.ckpt"
    assert resolve_resume("auto", tmp_path) == str(last)
    assert capsys.readouterr().err == ""
    last.write_bytes(last.read_bytes()[:100])  # a crash (or a full disk) while saving
    assert resolve_resume("auto", tmp_path) == str(folder / "step=00000004.ckpt")
    line = _one_line(capsys.readouterr().err)
    assert str(last) in line and "step=00000004.ckpt" in line
    with pytest.raises(ValueError, match=r"last\.ckpt.* unreadable"):
        resolve_resume(str(last), tmp_path)  # a checkpoint asked for by name: no fallback
    for path in folder.glob("step=*.ckpt"):
        path.write_bytes(b"")
    with pytest.raises(ValueError, match="no readable checkpoint"):
        resolve_resume("auto", tmp_path)


def test_pretraining_resumes_from_the_newest_readable_checkpoint(shards: Path, tmp_path: Path,
                                                                  capsys):
    run = tmp_path / "run"
    assert _pretrain(shards, run, "--trainer.max_steps", "4",
                     "--checkpoint.every_n_train_steps", "2") == 0
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    capsys.readouterr()
    assert _pretrain(shards, run, "--trainer.max_steps", "6",
                     "--checkpoint.every_n_train_steps", "2") == 0
    err = capsys.readouterr().err
    assert f"{last} is unreadable" in err and "step=00000004.ckpt" in err, err[-3000:]
    steps = [line.split(",")[0] for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == [str(s) for s in range(1, 7)]
