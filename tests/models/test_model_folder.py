"""Model folders (config.json + model.safetensors): round trips on real windows, old files,
the braindecode adapter's folder on another path, and one clear error for each bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_braindecode_adapter import _eegmat_epochs

import eegfm
from eegfm.checkpoint import load_finetuned, save_checkpoint, save_finetuned
from eegfm.heads import create_head
from eegfm.model_folder import (
    CONFIG_NAME,
    FORMAT_VERSION,
    WEIGHTS_NAME,
    ModelFolderError,
    read_model_folder,
    write_model_folder,
)
from eegfm.models import EEGEncoder, create_model
from eegfm.models.braindecode_adapter import EEGFMModule, positions_from_chs_info
from eegfm.models.classifier import EncoderClassifier

EEGMAT_TASK = Path(__file__).resolve().parents[2] / "configs" / "finetune" / "eegmat.yaml"


@pytest.fixture(scope="module")
def real_windows(eegmat_dir: Path) -> tuple[torch.Tensor, torch.Tensor, object]:
    """Eight 4 s eegmat windows (µV), their electrode positions (m) and the epochs' info."""
    epochs, _ = _eegmat_epochs(eegmat_dir)
    x = torch.as_tensor(epochs.get_data()[:8] * 1e6, dtype=torch.float32)
    coords = positions_from_chs_info(epochs.info["chs"]).expand(len(x), -1, -1)
    return x, coords.contiguous(), epochs.info


def strings(value: object) -> list[str]:
    """Every string inside a JSON value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def test_folder_copied_elsewhere_gives_identical_outputs(real_windows, tmp_path: Path) -> None:
    x, coords, _ = real_windows
    torch.manual_seed(0)
    model = create_model("eegfm_tiny").eval()
    model.preprocessing["window_s"] = 4.0
    model.save_pretrained(tmp_path / "written")
    assert {p.name for p in (tmp_path / "written").iterdir()} >= {CONFIG_NAME, WEIGHTS_NAME}
    shutil.copytree(tmp_path / "written", tmp_path / "elsewhere" / "copy")
    shutil.rmtree(tmp_path / "written")  # nothing may point back at where it was written
    config = json.loads((tmp_path / "elsewhere" / "copy" / CONFIG_NAME).read_text())
    assert config["format"] == "eegfm-model" and config["kind"] == "encoder"
    assert config["preprocessing"]["sfreq"] == 200.0 and config["weights_dtype"] == "float32"
    assert not [s for s in strings(config) if str(tmp_path) in s or s.startswith("/")]

    loaded = eegfm.from_pretrained(tmp_path / "elsewhere" / "copy").eval()
    assert loaded.preprocessing["window_s"] == 4.0
    with torch.no_grad():
        assert torch.equal(loaded(x, coords), model(x, coords))
    same = EEGEncoder.from_pretrained(str(tmp_path / "elsewhere" / "copy")).eval()
    with torch.no_grad():
        assert torch.equal(same.forward_features(x, coords), model.forward_features(x, coords))


def test_weights_in_float16_on_request(real_windows, tmp_path: Path) -> None:
    """Exact float32 by default; `half=True` halves the file; `half=None` (the release rule)
    stores float16 only above 10 MB."""
    x, coords, _ = real_windows
    torch.manual_seed(0)
    model = create_model("eegfm_small").eval()  # ~5 M parameters: 20 MB in float32
    model.save_pretrained(tmp_path / "exact")
    assert read_model_folder(tmp_path / "exact")[0]["weights_dtype"] == "float32"
    with torch.no_grad():
        exact = EEGEncoder.from_pretrained(tmp_path / "exact").eval()
        assert torch.equal(exact.forward_features(x, coords), model.forward_features(x, coords))
    create_model("eegfm_tiny").save_pretrained(tmp_path / "tiny", half=None)
    assert read_model_folder(tmp_path / "tiny")[0]["weights_dtype"] == "float32"
    model.save_pretrained(tmp_path / "small", half=None)
    config, state = read_model_folder(tmp_path / "small")
    assert config["weights_dtype"] == "float16"
    assert (tmp_path / "small" / WEIGHTS_NAME).stat().st_size < 12 * 2**20
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    loaded = EEGEncoder.from_pretrained(tmp_path / "small").eval()
    with torch.no_grad():
        want, got = model.forward_features(x, coords), loaded.forward_features(x, coords)
    assert (got - want).abs().max() / want.abs().max() < 1e-2, "float16 rounding only"


def classifier_and_windows(real_windows) -> tuple[EncoderClassifier, torch.Tensor, torch.Tensor]:
    """A tiny encoder + linear head (random, seeded) and the real windows."""
    x, coords, _ = real_windows
    torch.manual_seed(0)
    encoder = create_model("eegfm_tiny")
    return EncoderClassifier(encoder, create_head("linear", encoder.embed_dim, 2),
                             frozen=True).eval(), x, coords


def test_fine_tuned_folder_predicts_as_the_model_in_memory(real_windows, tmp_path: Path) -> None:
    model, x, coords = classifier_and_windows(real_windows)
    save_finetuned(tmp_path / "model_pretrained", model, class_names=["rest", "arithmetic"],
                   window_s=4.0, stride_s=2.0, sfreq=200.0, prep_config={"highpass_hz": 0.5},
                   align="euclidean", extra={"task": "eegmat"})
    shutil.copytree(tmp_path / "model_pretrained", tmp_path / "moved")
    shutil.rmtree(tmp_path / "model_pretrained")
    loaded, meta = load_finetuned(tmp_path / "moved")
    assert meta["class_names"] == ["rest", "arithmetic"] and meta["align"] == "euclidean"
    assert (meta["window_s"], meta["stride_s"], meta["sfreq"]) == (4.0, 2.0, 200.0)
    assert meta["prep_config"] == {"highpass_hz": 0.5} and meta["extra"] == {"task": "eegmat"}
    with torch.no_grad():
        assert torch.equal(loaded(x, coords), model(x, coords))
    # the encoder alone, for a new fine-tuning run
    encoder = eegfm.from_pretrained(tmp_path / "moved").eval()
    assert encoder.preprocessing["class_names"] == ["rest", "arithmetic"]
    with torch.no_grad():
        assert torch.equal(encoder.forward_features(x, coords),
                           model.encoder.forward_features(x, coords))
    with pytest.raises(ValueError, match="an encoder, not a fine-tuned model"):
        model.encoder.save_pretrained(tmp_path / "encoder")
        load_finetuned(tmp_path / "encoder")


def test_files_of_earlier_releases_still_load(real_windows, tmp_path: Path) -> None:
    """An `eegfm-checkpoint` file (encoder or pretrainer) and an `eegfm-finetuned` file, as the
    previous release wrote them (one release of compatibility)."""
    model, x, coords = classifier_and_windows(real_windows)
    save_checkpoint(tmp_path / "encoder.pt", model.encoder)
    with torch.no_grad():
        want = model.encoder.forward_features(x, coords)
        got = eegfm.from_pretrained(tmp_path / "encoder.pt").eval().forward_features(x, coords)
    assert torch.equal(got, want)

    torch.save({  # the previous release's save_finetuned, key for key
        "format": "eegfm-finetuned", "format_version": 1,
        "encoder_config": dict(model.encoder.config),
        "encoder_state": model.encoder.state_dict(),
        "head_config": dict(model.head.config), "head_state": model.head.state_dict(),
        "frozen": True, "class_names": ["rest", "arithmetic"], "window_s": 4.0,
        "stride_s": 4.0, "sfreq": 200.0, "prep_config": {}, "align": "euclidean", "extra": {},
    }, tmp_path / "model_pretrained.pt")
    loaded, meta = load_finetuned(tmp_path / "model_pretrained.pt")
    assert meta["class_names"] == ["rest", "arithmetic"] and meta["align"] == "euclidean"
    from_file = EEGEncoder.from_pretrained(tmp_path / "model_pretrained.pt").eval()
    with torch.no_grad():
        assert torch.equal(loaded(x, coords), model(x, coords))
        assert torch.equal(from_file.forward_features(x, coords), want)


def test_create_model_loads_a_folder_into_the_named_architecture(tmp_path: Path) -> None:
    torch.manual_seed(0)
    saved = create_model("eegfm_tiny")
    saved.save_pretrained(tmp_path / "tiny")
    model = create_model("eegfm_tiny", checkpoint_path=tmp_path / "tiny", drop_path_rate=0.1)
    assert model.config["drop_path_rate"] == 0.1, "training-only options may differ"
    for name, value in saved.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    with pytest.raises(ValueError, match=r"does not hold a eegfm_small .*depth=2 there, 8 here"):
        create_model("eegfm_small", checkpoint_path=tmp_path / "tiny")
    with pytest.raises(ValueError, match=r"no pretrained weights for 'eegfm_base' ship with "
                                         r"this eegfm \(released: eegfm_small, eegfm_tiny\)"):
        create_model("eegfm_base", pretrained=True)
    with pytest.raises(ValueError, match=r"eegfm_tiny is a model name, not saved weights"):
        eegfm.from_pretrained("eegfm_tiny")


def test_adapter_folder_loads_on_a_path_that_never_existed_here(real_windows,
                                                                tmp_path: Path) -> None:
    """The braindecode adapter built from a model folder saves the architecture, not the path
    (it used to write the local checkpoint path into config.json)."""
    x, _, info = real_windows
    torch.manual_seed(0)
    create_model("eegfm_tiny", depth=1).save_pretrained(tmp_path / "encoder")
    module = EEGFMModule(n_outputs=2, chs_info=info["chs"], n_times=x.shape[-1],
                         sfreq=info["sfreq"], checkpoint=tmp_path / "encoder").eval()
    module.save_pretrained(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / CONFIG_NAME).read_text())
    assert config["checkpoint"] is None and config["model_overrides"]["depth"] == 1
    assert not [s for s in strings(config) if str(tmp_path) in s]
    shutil.copytree(tmp_path / "adapter", tmp_path / "moved" / "adapter")
    shutil.rmtree(tmp_path / "adapter")
    shutil.rmtree(tmp_path / "encoder")
    loaded = EEGFMModule.from_pretrained(tmp_path / "moved" / "adapter").eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), module(x))


def test_folders_written_with_the_encoders_old_classifier_still_load(real_windows,
                                                                   tmp_path: Path) -> None:
    """Before the head moved to eegfm.heads, the encoder held ``fc_norm``/``head`` weights and
    a ``num_classes`` option. A fine-tuned folder of then loads without them; an adapter
    folder of then predicts as its LayerNorm + Linear did (they become its linear head)."""
    x, coords, info = real_windows
    model, _, _ = classifier_and_windows(real_windows)
    legacy = {"encoder.fc_norm.weight": torch.ones(64), "encoder.fc_norm.bias": torch.zeros(64)}
    write_model_folder(
        tmp_path / "finetuned", kind="finetuned",
        architecture={**model.encoder.config, "num_classes": 0},
        state_dict={**{f"encoder.{k}": v for k, v in model.encoder.state_dict().items()},
                    **legacy, **{f"head.{k}": v for k, v in model.head.state_dict().items()}},
        head={**model.head.config, "frozen": True},
        preprocessing={"sfreq": 200.0, "window_s": 4.0, "stride_s": 4.0,
                       "class_names": ["rest", "arithmetic"]})
    loaded, _ = load_finetuned(tmp_path / "finetuned")
    with torch.no_grad():
        assert torch.equal(loaded(x, coords), model(x, coords))

    torch.manual_seed(0)
    module = EEGFMModule(n_outputs=2, chs_info=info["chs"], n_times=x.shape[-1],
                         sfreq=info["sfreq"], model_overrides={"depth": 1}).eval()
    module.save_pretrained(tmp_path / "adapter")
    weights = tmp_path / "adapter" / WEIGHTS_NAME
    state = load_file(weights)
    norm, linear = torch.nn.LayerNorm(64), torch.nn.Linear(64, 2)
    torch.nn.init.normal_(norm.weight)
    old = {"encoder.fc_norm.weight": norm.weight, "encoder.fc_norm.bias": norm.bias,
           "encoder.head.weight": linear.weight, "encoder.head.bias": linear.bias}
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    save_file({**state, **{k: v.detach().contiguous() for k, v in old.items()}}, weights)
    for path in tmp_path.glob("adapter/*.bin"):  # braindecode's second copy of the weights
        path.unlink()
    loaded = EEGFMModule.from_pretrained(tmp_path / "adapter").eval()
    with torch.no_grad():
        tokens = loaded.encoder.forward_features(loaded.prepare_input(x), coords)
        want = linear(norm(tokens.mean(dim=(1, 2))))
        torch.testing.assert_close(loaded(x), want)
        assert not torch.equal(loaded(x), module(x)), "the old head's weights, not the new one's"


def damage(folder: Path, how: str) -> None:
    """Break a model folder one way."""
    if how == "no weights":
        (folder / WEIGHTS_NAME).unlink()
    elif how == "truncated weights":
        data = (folder / WEIGHTS_NAME).read_bytes()
        (folder / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    elif how == "newer format":
        config = json.loads((folder / CONFIG_NAME).read_text())
        config["format_version"] = FORMAT_VERSION + 1
        (folder / CONFIG_NAME).write_text(json.dumps(config))
    elif how == "not json":
        (folder / CONFIG_NAME).write_text("{architecture: ")


@pytest.mark.parametrize(("how", "message"), [
    ("no weights", "has no model.safetensors"),
    ("truncated weights", "model.safetensors is unreadable"),
    ("newer format", f"has format_version {FORMAT_VERSION + 1}, newer than this eegfm"),
    ("not json", "config.json is unreadable"),
])  # fmt: skip
def test_a_damaged_folder_is_one_clear_error(tmp_path: Path, how: str, message: str) -> None:
    create_model("eegfm_tiny").save_pretrained(tmp_path / "model")
    damage(tmp_path / "model", how)
    with pytest.raises(ModelFolderError, match=message):
        eegfm.from_pretrained(tmp_path / "model")


def test_bad_model_folders_and_offline_hub_ids_exit_2_in_one_line(
    tmp_path: Path, eegmat_dir: Path
) -> None:
    """`eegfm finetune --checkpoint` with a damaged folder, or a Hub id while offline."""
    create_model("eegfm_tiny").save_pretrained(tmp_path / "model")
    damage(tmp_path / "model", "truncated weights")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for checkpoint, message in ((tmp_path / "model", "model.safetensors is unreadable"),
                                ("someone/eegfm-tiny", "the Hugging Face Hub cannot be reached")):
        result = subprocess.run(
            [sys.executable, "-m", "eegfm", "finetune", "--config", str(EEGMAT_TASK),
             "--data", str(eegmat_dir),
             "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
        assert message in lines[0] and str(checkpoint) in lines[0]
