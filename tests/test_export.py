"""`eegfm export`: exported graphs give eager PyTorch's outputs on real eegmat windows; bad input
is one line and exit 2."""

from __future__ import annotations

import importlib.util
import json
import shutil

import mne
import numpy as np
import pytest
import torch

from eegfm import cli
from eegfm.checkpoint import load_finetuned, save_finetuned
from eegfm.export import export_model
from eegfm.heads import create_head
from eegfm.models import EEGEncoder, create_model
from eegfm.models.classifier import EncoderClassifier
from eegfm.models.neighbours import build_spatial_context
from eegfm.montage import locate_channels

TOLERANCE = 1e-4  # the bar: exported outputs within 1e-4 of eager ones
SFREQ_HZ, WINDOW_S = 200.0, 4
# a tiny encoder whose 19-channel windows take the kNN path (more than 8 valid channels)
KNN_OPTIONS = {"dense_max_channels": 8, "knn_k": 6, "knn_block": 8}


@pytest.fixture(scope="module")
def windows(eegmat_dir) -> dict[str, torch.Tensor]:
    """Six 4-s windows of eegmat Subject00_2 at 200 Hz in µV, 19 channels with template
    positions located as `eegfm prep` locates them."""
    raw = mne.io.read_raw_edf(eegmat_dir / "Subject00_2.edf", preload=True, verbose="error")
    located = locate_channels(raw.info).located
    raw.pick([channel.name for channel in located]).crop(0, 6 * WINDOW_S, include_tmax=False)
    raw.resample(SFREQ_HZ, verbose="error")
    n_times = int(WINDOW_S * SFREQ_HZ)
    data = raw.get_data(units="uV")[:, : 6 * n_times].astype(np.float32)
    x = torch.from_numpy(np.ascontiguousarray(data.reshape(19, 6, n_times).transpose(1, 0, 2)))
    coords = torch.from_numpy(np.stack([c.coords for c in located]).astype(np.float32))
    return {"x": x, "coords": coords.expand(6, 19, 3).contiguous(),
            "channel_mask": torch.ones(6, 19, dtype=torch.bool),
            "ref_coords": torch.full((6, 19, 3), float("nan"))}


def _inputs(windows: dict[str, torch.Tensor], rows: slice) -> tuple[torch.Tensor, ...]:
    """(x, coords, channel_mask, ref_coords) of some windows; window 1 lost two electrodes
    (masked) and window 2 has an unlocated one (NaN coordinate)."""
    x, coords, mask, ref = (windows[k].clone() for k in
                            ("x", "coords", "channel_mask", "ref_coords"))
    mask[1, [4, 11]] = False
    coords[2, 7] = float("nan")
    return x[rows], coords[rows], mask[rows], ref[rows]


def _largest_difference(exported, eager, inputs) -> float:
    with torch.no_grad():
        return float((exported(*inputs) - eager(*inputs)).abs().max())


@pytest.fixture(scope="module")
def encoder_folder(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / "encoder"
    create_model("eegfm_tiny").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def finetuned_folder(tmp_path_factory):
    """A fine-tuned folder: tiny kNN-path encoder + linear head (its LayerNorm makes the
    logits of order 1)."""
    torch.manual_seed(1)
    encoder = create_model("eegfm_tiny", **KNN_OPTIONS)
    head = create_head("linear", encoder.embed_dim, 2)
    folder = tmp_path_factory.mktemp("models") / "finetuned"
    save_finetuned(folder, EncoderClassifier(encoder, head, frozen=False),
                   class_names=["rest", "arithmetic"], window_s=WINDOW_S, stride_s=WINDOW_S,
                   sfreq=SFREQ_HZ, prep_config={})
    return folder


def test_torch_export_of_an_encoder_matches_eager_on_real_windows(encoder_folder, windows,
                                                                   tmp_path):
    path = export_model(encoder_folder, tmp_path / "encoder", "torch-export", 19, WINDOW_S)
    assert path.name == "encoder.pt2"
    exported = torch.export.load(path).module()
    eager = EEGEncoder.from_pretrained(encoder_folder).eval()
    differences = [_largest_difference(exported, eager, _inputs(windows, rows))
                   for rows in (slice(0, 6), slice(2, 3))]  # any batch size
    print(f"torch-export encoder, max |exported - eager| = {max(differences):.2e}")
    assert max(differences) <= TOLERANCE
    contract = json.loads((tmp_path / "encoder.json").read_text())
    assert contract["inputs"][0] == {"name": "x", "shape": ["batch", 19, 800],
                                     "dtype": "float32", "unit": "uV",
                                     "note": "sampled at 200 Hz"}
    assert [i["name"] for i in contract["inputs"]] == ["x", "coords", "channel_mask",
                                                       "ref_coords"]
    assert contract["outputs"] == [{"name": "features", "shape": ["batch", 64],
                                    "dtype": "float32"}]


def test_torch_export_of_a_fine_tuned_knn_model_with_a_fixed_batch(finetuned_folder, windows,
                                                                  tmp_path):
    eager, _ = load_finetuned(finetuned_folder)
    inputs = _inputs(windows, slice(0, 3))
    # the kNN path, with a sample of 5 valid channels among denser ones (it attends to all)
    sparse_mask = inputs[2].clone()
    sparse_mask[0, 5:] = False
    inputs = (inputs[0], inputs[1], sparse_mask, inputs[3])
    context = build_spatial_context(inputs[1].nan_to_num(), sparse_mask, head_radius_m=0.095,
                                    n_rbf=16, knn_k=6, dense_max_channels=8, block_size=8)
    assert context.members is not None, "the eager model takes the kNN path"
    path = export_model(finetuned_folder, tmp_path / "model.pt2", "torch-export", 19, WINDOW_S,
                        batch_size=3)
    exported = torch.export.load(path).module()
    difference = _largest_difference(exported, eager, inputs)
    print(f"torch-export fine-tuned (kNN path), max |exported - eager| = {difference:.2e}")
    assert difference <= TOLERANCE
    with pytest.raises(Exception):  # noqa: B017 - torch raises its own guard error
        exported(*_inputs(windows, slice(0, 2)))
    contract = json.loads((tmp_path / "model.json").read_text())
    assert contract["class_names"] == ["rest", "arithmetic"]
    assert contract["outputs"][0]["shape"] == [3, 2]


def test_a_routed_spiking_head_exports_with_any_batch(windows, tmp_path):
    """Expert routing picks samples by data; exported, every expert sees every sample."""
    torch.manual_seed(2)
    encoder = create_model("eegfm_tiny")
    head = create_head("shared_routed", encoder.embed_dim, 2, spiking="lif")
    save_finetuned(tmp_path / "routed", EncoderClassifier(encoder, head, frozen=False),
                   class_names=["rest", "arithmetic"], window_s=WINDOW_S, stride_s=WINDOW_S,
                   sfreq=SFREQ_HZ, prep_config={})
    path = export_model(tmp_path / "routed", tmp_path / "routed", "torch-export", 19, WINDOW_S)
    exported = torch.export.load(path).module()
    eager, _ = load_finetuned(tmp_path / "routed")
    difference = max(_largest_difference(exported, eager, _inputs(windows, rows))
                     for rows in (slice(0, 6), slice(3, 4)))
    print(f"torch-export shared_routed + lif head, max |exported - eager| = {difference:.2e}")
    assert difference <= TOLERANCE


@pytest.mark.parametrize("kind", ["encoder", "finetuned"])
def test_onnx_export_matches_eager_under_onnxruntime(kind, windows, tmp_path, request):
    """The encoder takes the dense path, the fine-tuned model the kNN path."""
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    folder = request.getfixturevalue(f"{kind}_folder")
    path = export_model(folder, tmp_path / "model", "onnx", 19, WINDOW_S)
    assert path.name == "model.onnx"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x", "coords", "channel_mask",
                                                      "ref_coords"]
    eager = (load_finetuned(folder)[0] if kind == "finetuned"
             else EEGEncoder.from_pretrained(folder).eval())
    differences = []
    for rows in (slice(0, 6), slice(1, 2)):
        inputs = _inputs(windows, rows)
        (logits,) = session.run(None, dict(zip(["x", "coords", "channel_mask", "ref_coords"],
                                               (t.numpy() for t in inputs), strict=True)))
        with torch.no_grad():
            expected = eager(*inputs).numpy()
        assert np.abs(expected).max() > 0.1  # outputs of order 1: 1e-4 is a tight bound
        differences.append(float(np.abs(logits - expected).max()))
    print(f"onnx {kind}, max |onnxruntime - eager| = {max(differences):.2e}")
    assert max(differences) <= TOLERANCE


def _without_onnx(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxscript" else real(name, *a))


@pytest.mark.parametrize(("case", "args", "message"), [
    ("missing", ["--format", "torch-export", "--channels", "19", "--seconds", "4"],
     "no such model folder"),
    ("damaged", ["--format", "torch-export", "--channels", "19", "--seconds", "4"],
     "model.safetensors is unreadable"),
    ("encoder", ["--format", "torch-export", "--channels", "0", "--seconds", "4"],
     "channels must be at least 1"),
    ("encoder", ["--format", "torch-export", "--channels", "19", "--seconds", "2.5"],
     "positive multiple of the model's patch (1 s)"),
    ("encoder", ["--format", "torch-export", "--channels", "19", "--seconds", "0"],
     "positive multiple"),
    ("encoder", ["--format", "torch-export", "--channels", "19", "--seconds", "65"],
     "at most 64 s"),
    ("encoder", ["--format", "tflite", "--channels", "19", "--seconds", "4"],
     "format: expected one of ['torch-export', 'onnx'], got tflite"),
    ("encoder", ["--format", "onnx", "--channels", "19", "--seconds", "4"],
     "needs the package(s) onnxscript"),
])
def test_bad_input_is_one_line_and_exit_2(case, args, message, encoder_folder, tmp_path,
                                          monkeypatch, capsys):
    model = {"missing": tmp_path / "nowhere", "encoder": encoder_folder}.get(case)
    if case == "damaged":
        model = shutil.copytree(encoder_folder, tmp_path / "damaged")
        weights = model / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    _without_onnx(monkeypatch)
    try:
        code = cli.main(["export", str(model), *args, "--out", str(tmp_path / "out")])
    except SystemExit as stop:  # argparse's usage errors
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("eegfm export: "), err
    assert message in err
    assert not list(tmp_path.glob("out*"))
