"""How a window is scaled before the encoder, and that pretraining, fine-tuning and predict
hand it the same window (docs/models.md, "Inputs")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from eegmat_shards import link_files, prep_eegmat_subjects

from eegfm import from_pretrained
from eegfm.data.tasks import build_task_set
from eegfm.models import create_model
from eegfm.prep import expand_sources, load_item, load_prep_config, process_raw, run_prep
from eegfm.shards import ShardReader, read_manifest
from eegfm.training.finetune.config import load_finetune_config

EEGMAT_TASK = Path(__file__).resolve().parents[2] / "configs" / "finetune" / "eegmat.yaml"


def test_one_window_reaches_the_encoder_alike_in_pretraining_finetuning_and_predict(
    tmp_path: Path, eegmat_dir: Path
) -> None:
    """Pretraining reads windows from shards (`ShardReader.read_window`, what the loader
    calls), fine-tuning cuts them with `build_task_set`, predict preps the raw file again with
    the model's prep config (`process_raw`): the same µV samples, positions and channel order,
    so the encoder's own per-channel, per-window robust scaling gives the same tokens' input."""
    config = load_prep_config(None)
    folder = link_files(tmp_path / "src" / "eegmat", eegmat_dir, ["Subject00_2.edf"])
    run_prep([str(folder)], tmp_path / "shards", config, progress=False)
    (entry,) = read_manifest(tmp_path / "shards")
    start, length = 1600, 800  # the third 4 s window at 200 Hz

    pretraining = ShardReader(tmp_path / "shards").read_window(entry.recording_id, start, length)

    task = build_task_set(load_finetune_config(EEGMAT_TASK).task, str(tmp_path / "shards"),
                          multiple_of=200, sfreq=200.0, progress=False)
    (row,) = np.flatnonzero(task.start == start)
    n = int(task.channel_mask[row].sum())
    finetuning = task.x[row][:n], task.coords[row][:n]

    (item,) = expand_sources([str(folder / "Subject00_2.edf")], config)
    (loaded,) = list(load_item(item, config))
    recording, _ = process_raw(loaded.raw, config, recording_id=loaded.recording_id,
                               attrs=loaded.attrs, montage=loaded.montage,
                               event_id=loaded.event_id)
    predict = recording.data[:, start:start + length], recording.coords

    np.testing.assert_array_equal(finetuning[0], pretraining.data)
    np.testing.assert_array_equal(finetuning[1], pretraining.coords)
    # prep again from the file: the same float32 samples, up to float32 rounding of the
    # filters' summation order
    np.testing.assert_allclose(predict[0], pretraining.data, rtol=0, atol=1e-3)
    np.testing.assert_array_equal(predict[1], pretraining.coords)

    encoder = create_model("eegfm_tiny")
    scaled = [encoder.prepare(torch.from_numpy(np.ascontiguousarray(x, np.float32))[None],
                              torch.from_numpy(np.asarray(c, np.float32))[None])
              for x, c in (finetuning, (pretraining.data, pretraining.coords), predict)]
    for other in scaled[1:]:
        torch.testing.assert_close(other.x_norm, scaled[0].x_norm, rtol=0, atol=1e-4)
    # the scaling itself: per channel and window, median removed, divided by 1.4826 x MAD
    x = torch.from_numpy(pretraining.data)
    median = x.median(dim=1, keepdim=True).values
    mad = 1.4826 * (x - median).abs().median(dim=1, keepdim=True).values
    expected = ((x - median) / mad.clamp_min(encoder.scale_floor_uv)).clamp(-encoder.clip,
                                                                              encoder.clip)
    torch.testing.assert_close(scaled[1].x_norm[0], expected, rtol=1e-5, atol=1e-5)


def test_window_scaling_shares_one_robust_scale_per_window(tmp_path_factory,
                                                            eegmat_dir: Path) -> None:
    """``input_scaling='window'``: each channel's median removed, every valid channel divided
    by the median of the valid channels' 1.4826 x MAD; padded channels stay zero."""
    task = build_task_set(load_finetune_config(EEGMAT_TASK).task,
                          prep_eegmat_subjects(tmp_path_factory, eegmat_dir, ["00"]),
                          multiple_of=200, progress=False)
    x, coords = torch.from_numpy(task.x[:4]), torch.from_numpy(task.coords[:4])
    mask = torch.ones(x.shape[:2], dtype=torch.bool)
    mask[1, 15:] = False  # padding: left out of the shared scale
    encoder = create_model("eegfm_tiny", input_scaling="window")
    inputs = encoder.prepare(x, coords, mask)
    for row in range(4):
        real = x[row][mask[row]].double()
        median = real.median(dim=1, keepdim=True).values
        mad = 1.4826 * (real - median).abs().median(dim=1).values
        shared = mad.median() if len(mad) % 2 else mad.sort().values[len(mad) // 2 - 1]
        expected = ((real - median) / shared).clamp(-encoder.clip, encoder.clip)
        torch.testing.assert_close(inputs.x_norm[row][mask[row]].double(), expected,
                                   rtol=1e-5, atol=1e-5)
        assert (inputs.x_norm[row][~mask[row]] == 0).all()
        torch.testing.assert_close(inputs.scale[row][mask[row]].double(),
                                   shared.expand(int(mask[row].sum())), rtol=1e-6, atol=0)
    # the channels' relative amplitudes survive (they are gone under per-channel scaling)
    per_channel = create_model("eegfm_tiny").prepare(x, coords, mask).x_norm
    ratio = inputs.x_norm[0].std(dim=1) / per_channel[0].std(dim=1)
    assert ratio.max() / ratio.min() > 1.5
    with pytest.raises(ValueError, match="input_scaling='unit'"):
        create_model("eegfm_tiny", input_scaling="unit")


def test_fixed_scaling_divides_every_channel_by_ten_microvolts(tmp_path_factory,
                                                                eegmat_dir: Path) -> None:
    """``input_scaling='fixed'``: each channel's median removed, every valid channel divided by
    10 µV whatever its amplitude (clipped at ±clip); padded channels stay zero, and the model
    folder records the scaling it expects."""
    task = build_task_set(load_finetune_config(EEGMAT_TASK).task,
                          prep_eegmat_subjects(tmp_path_factory, eegmat_dir, ["00"]),
                          multiple_of=200, progress=False)
    x, coords = torch.from_numpy(task.x[:4]), torch.from_numpy(task.coords[:4])
    mask = torch.ones(x.shape[:2], dtype=torch.bool)
    mask[2, 10:] = False
    encoder = create_model("eegfm_tiny", input_scaling="fixed")
    inputs = encoder.prepare(x, coords, mask)
    median = x.double().median(dim=2, keepdim=True).values
    expected = ((x.double() - median) / 10.0).clamp(-encoder.clip, encoder.clip)
    valid = mask[..., None].expand_as(x)
    torch.testing.assert_close(inputs.x_norm[valid].double(), expected[valid],
                               rtol=1e-5, atol=1e-5)
    assert (inputs.x_norm[~valid] == 0).all()
    assert (inputs.scale[mask] == 10.0).all()
    # absolute amplitude survives: windows' spreads differ as their µV spreads do
    spread = inputs.x_norm[0].std(dim=1).double()
    torch.testing.assert_close(spread, (x[0].double() - median[0]).std(dim=1) / 10.0,
                               rtol=1e-3, atol=1e-3)  # no sample of window 0 reaches the clip
    assert "10 µV" in encoder.preprocessing["scaling"]
    folder = tmp_path_factory.mktemp("fixed") / "encoder"
    encoder.save_pretrained(folder)
    assert from_pretrained(folder).input_scaling == "fixed"
