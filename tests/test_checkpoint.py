"""Checkpoints: round trip, pretrainer -> encoder, safe loading and clear errors."""

from __future__ import annotations

import pytest
import torch

from eegfm import from_pretrained
from eegfm.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from eegfm.models import MaskedPretrainer, create_model


def _batch():
    generator = torch.Generator().manual_seed(0)
    coords = torch.randn(2, 7, 3, generator=generator)
    return 20 * torch.randn(2, 7, 400, generator=generator), 0.09 * coords / coords.norm(
        dim=-1, keepdim=True)


def test_encoder_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = create_model("eegfm_tiny").eval()
    path = tmp_path / "sub" / "encoder.pt"
    save_checkpoint(path, model, extra={"step": 7, "dataset": "eegmat"})
    checkpoint = load_checkpoint(path)
    assert checkpoint["kind"] == "encoder" and checkpoint["extra"] == {"step": 7,
                                                                      "dataset": "eegmat"}
    assert checkpoint["eegfm_version"] and checkpoint["config"] == model.config
    loaded = from_pretrained(path).eval()
    x, coords = _batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, coords), model(x, coords), rtol=0, atol=0)
    assert not list(tmp_path.rglob("*.tmp"))


def test_pretrainer_checkpoint_yields_its_encoder(tmp_path):
    torch.manual_seed(0)
    pretrainer = MaskedPretrainer(create_model("eegfm_tiny"), mask_ratio=0.3, decoder_depth=1)
    save_checkpoint(tmp_path / "pretrain.pt", pretrainer)
    rebuilt = model_from_checkpoint(load_checkpoint(tmp_path / "pretrain.pt"))
    assert isinstance(rebuilt, MaskedPretrainer) and rebuilt.mask_ratio == 0.3
    encoder = from_pretrained(tmp_path / "pretrain.pt").eval()
    x, coords = _batch()
    with torch.no_grad():
        torch.testing.assert_close(encoder(x, coords), pretrainer.encoder.eval()(x, coords))


def test_missing_corrupt_and_foreign_files_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pt"):
        from_pretrained(tmp_path / "nowhere.pt")
    path = tmp_path / "model.pt"
    save_checkpoint(path, create_model("eegfm_tiny"))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"truncated\.pt"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match="not an eegfm checkpoint"):
        load_checkpoint(foreign)


class Payload:
    """An arbitrary class: weights_only loading must refuse to rebuild it."""


def test_unsafe_pickles_are_refused(tmp_path):
    path = tmp_path / "unsafe.pt"
    torch.save({"format": "eegfm-checkpoint", "obj": Payload()}, path)
    with pytest.raises(ValueError, match=r"unsafe\.pt"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="extra"):
        save_checkpoint(tmp_path / "bad.pt", create_model("eegfm_tiny"), extra={"o": Payload()})
    assert not (tmp_path / "bad.pt").exists()


def test_non_eegfm_modules_are_rejected(tmp_path):
    with pytest.raises(TypeError, match="Linear"):
        save_checkpoint(tmp_path / "x.pt", torch.nn.Linear(2, 2))
