"""EEGEncoder: any montage, padding, permutation, NaN coordinates, pooling, legacy files, config."""

from __future__ import annotations

import pytest
import torch

from eegfm.heads import masked_mean_pool
from eegfm.model_folder import write_model_folder
from eegfm.models import EEGEncoder, create_model

TINY = ["eegfm_tiny"]  # the registry sizes small enough for CPU tests


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("channels", [1, 19, 22, 64, 128, 256])
def test_forward_backward_any_channel_count(name, channels, make_batch):
    torch.manual_seed(0)
    model = create_model(name)
    x, coords = make_batch(2, channels)
    tokens = model.forward_features(x, coords)
    assert tokens.shape == (2, channels, 4, model.embed_dim)
    tokens.pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # every block's distance bias receives gradient except for a single channel (no pairs)
    bias_grad = model.blocks[0].spatial.distance_bias.weight.grad
    assert bias_grad is not None and (channels == 1 or bias_grad.abs().sum() > 0)


def test_padded_mixed_montage_batch_matches_each_sample_alone(tiny_model, make_batch):
    # 100 channels -> sparse kNN path for the batch; the 30- and 70-channel samples alone take
    # the dense path (30) and the kNN path (70), so this also checks the per-sample rule
    sizes = [100, 30, 70]
    samples = [make_batch(1, n, seed=i) for i, n in enumerate(sizes)]
    C = max(sizes)
    x = torch.zeros(len(sizes), C, 800)
    coords = torch.full((len(sizes), C, 3), float("nan"))  # padding may hold anything
    channel_mask = torch.zeros(len(sizes), C, dtype=torch.bool)
    for b, (xs, cs) in enumerate(samples):
        n = xs.shape[1]
        x[b, :n], coords[b, :n], channel_mask[b, :n] = xs[0], cs[0], True
        x[b, n:] = 1e6  # garbage in padded channels must not leak
    with torch.no_grad():
        batched = tiny_model.forward_features(x, coords, channel_mask)
        pooled = tiny_model(x, coords, channel_mask)
        for b, (xs, cs) in enumerate(samples):
            alone = tiny_model.forward_features(xs, cs)
            n = xs.shape[1]
            torch.testing.assert_close(batched[b, :n], alone[0], atol=1e-4, rtol=1e-4)
            assert torch.all(batched[b, n:] == 0)
            torch.testing.assert_close(pooled[b], tiny_model(xs, cs)[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("channels", [19, 128])  # dense and kNN paths
def test_permuting_channels_permutes_outputs(tiny_model, make_batch, channels):
    x, coords = make_batch(2, channels)
    perm = torch.randperm(channels, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = tiny_model.forward_features(x, coords)
        out_perm = tiny_model.forward_features(x[:, perm], coords[:, perm])
    torch.testing.assert_close(out_perm, out[:, perm], atol=1e-4, rtol=1e-4)


def test_nan_coordinate_is_masked_not_nan(tiny_model, make_batch):
    x, coords = make_batch(2, 19)
    coords[0, 3] = float("nan")
    coords[1, 5, 1] = float("nan")
    tokens = tiny_model.forward_features(x, coords)
    assert torch.isfinite(tokens).all()
    assert torch.all(tokens[0, 3] == 0) and torch.all(tokens[1, 5] == 0)
    # the NaN channel is excluded exactly as if it were absent
    keep = [i for i in range(19) if i != 3]
    with torch.no_grad():
        alone = tiny_model.forward_features(x[:1, keep], coords[:1, keep])
    torch.testing.assert_close(tokens[0, keep].detach(), alone[0], atol=1e-4, rtol=1e-4)
    tokens.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in tiny_model.parameters()
               if p.grad is not None)


def test_all_channels_invalid_stays_finite(tiny_model, make_batch):
    x, coords = make_batch(1, 8)
    out = tiny_model(x, coords, torch.zeros(1, 8, dtype=torch.bool))
    assert torch.isfinite(out).all()


def test_flat_and_huge_channels_stay_finite(tiny_model, make_batch):
    x, coords = make_batch(1, 19)
    x[0, 0] = 0.0
    x[0, 1] = 1e7
    x[0, 2, ::7] = 1e9  # spiky artefact
    assert torch.isfinite(tiny_model.forward_features(x, coords)).all()


def test_bipolar_channels_use_both_electrodes(tiny_model, make_batch):
    x, coords = make_batch(1, 6)
    ref = torch.full_like(coords, float("nan"))
    with torch.no_grad():
        referential = tiny_model.forward_features(x, coords, ref_coords=ref)
        torch.testing.assert_close(referential, tiny_model.forward_features(x, coords))
        ref[0, 0] = coords[0, 1]
        bipolar = tiny_model.forward_features(x, coords, ref_coords=ref)
    assert not torch.allclose(bipolar[0, 0], referential[0, 0])
    assert torch.isfinite(bipolar).all()


def test_amplitude_scaling_is_per_channel_and_robust(tiny_model, make_batch):
    x, coords = make_batch(1, 19)
    inputs = tiny_model.prepare(x * 3.0 + 50.0, coords)
    reference = tiny_model.prepare(x, coords)
    torch.testing.assert_close(inputs.x_norm, reference.x_norm, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(inputs.scale, 3.0 * reference.scale)


def test_forward_pools_tokens_with_the_heads_masked_mean(tiny_model, make_batch):
    """The encoder ends at its tokens: ``forward`` is their mean over valid channels and all
    patches (no parameters of its own), the pooling every ``eegfm.heads`` head starts from."""
    x, coords = make_batch(3, 19)
    coords[1, 4] = float("nan")  # an invalid channel is left out of the mean
    mask = torch.ones(3, 19, dtype=torch.bool)
    mask[2, 10:] = False
    with torch.no_grad():
        tokens = tiny_model.forward_features(x, coords, mask)
        pooled = tiny_model(x, coords, mask)
    assert pooled.shape == (3, tiny_model.embed_dim)
    valid = tiny_model.valid_channel_mask(coords, mask)
    assert torch.equal(pooled, masked_mean_pool(tokens, valid))
    torch.testing.assert_close(pooled[1], tokens[1, [i for i in range(19) if i != 4]].mean((0, 1)))
    torch.testing.assert_close(pooled[2], tokens[2, :10].mean((0, 1)))
    names = [name for name, _ in tiny_model.named_parameters()]
    assert not [name for name in names if name.startswith(("fc_norm", "head"))]


def test_legacy_classifier_weights_and_option_are_dropped_on_load(tmp_path, make_batch):
    """Folders and files of earlier releases hold ``fc_norm.*``/``head.*`` weights and a
    ``num_classes`` option (the encoder's old timm-style classifier): they still load."""
    torch.manual_seed(0)
    model = create_model("eegfm_tiny").eval()
    legacy_state = {**model.state_dict(), "fc_norm.weight": torch.ones(64),
                    "fc_norm.bias": torch.zeros(64), "head.weight": torch.randn(3, 64),
                    "head.bias": torch.zeros(3)}
    write_model_folder(tmp_path / "old", kind="encoder",
                       architecture={**model.config, "num_classes": 3}, state_dict=legacy_state)
    x, coords = make_batch(2, 19)
    loaded = EEGEncoder.from_pretrained(tmp_path / "old").eval()
    with torch.no_grad():
        assert torch.equal(loaded.forward_features(x, coords), model.forward_features(x, coords))
    assert "num_classes" not in loaded.config
    torch.save({"format": "eegfm-checkpoint", "format_version": 1, "kind": "encoder",
                "config": {**model.config, "num_classes": 3}, "state_dict": legacy_state},
               tmp_path / "old.pt")
    assert torch.equal(EEGEncoder.from_pretrained(tmp_path / "old.pt").state_dict()["norm.weight"],
                       model.state_dict()["norm.weight"])
    # loaded inside another module (a pretrainer, a Lightning checkpoint): strict, no error
    wrapper = torch.nn.ModuleDict({"encoder": create_model("eegfm_tiny")})
    wrapper.load_state_dict({f"encoder.{k}": v for k, v in legacy_state.items()})
    with pytest.raises(RuntimeError, match="Unexpected key"):  # other strays still fail
        create_model("eegfm_tiny").load_state_dict({**model.state_dict(), "stray.weight": x})


def test_config_rebuilds_model_and_attributes():
    model = create_model("eegfm_tiny", drop_path_rate=0.1)
    clone = EEGEncoder(**model.config)
    clone.load_state_dict(model.state_dict())
    assert (model.embed_dim, model.patch_len, model.sfreq) == (64, 200, 200.0)
    assert clone.config == model.config


def test_windows_of_any_number_of_patches(tiny_model, make_batch):
    x, coords = make_batch(1, 4, seconds=1)
    assert tiny_model.forward_features(x, coords).shape[2] == 1
    x, coords = make_batch(1, 4, seconds=60)
    assert tiny_model.forward_features(x, coords).shape[2] == 60


def test_bad_inputs_raise_clear_errors(tiny_model, make_batch):
    x, coords = make_batch(1, 4)
    with pytest.raises(ValueError, match="patch_len"):
        tiny_model(x[..., :750], coords)
    with pytest.raises(ValueError, match="max_patches"):
        tiny_model(torch.zeros(1, 4, 200 * 65), coords)
    with pytest.raises(ValueError, match="coords"):
        tiny_model(x, coords[:, :3])
    with pytest.raises(ValueError, match="channel_mask"):
        tiny_model(x, coords, torch.ones(1, 5, dtype=torch.bool))


_PEAK_RSS_SCRIPT = """
import json, resource, sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
from conftest import scalp_positions
from eegfm.models import create_model
imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
torch.manual_seed(0)
model = create_model("eegfm_tiny")
generator = torch.Generator().manual_seed(0)
x = 20.0 * torch.randn(1, 1132, 800, generator=generator)
coords = scalp_positions(1132, generator)[None]
tokens = model.forward_features(x, coords)
shape = list(tokens.shape)
tokens.pow(2).mean().backward()
finite = all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"shape": shape, "embed_dim": model.embed_dim, "finite": finite,
                  "imported_kb": imported, "peak_kb": peak}))
"""


def test_1132_channels_forward_backward_on_cpu():
    """The densest montage the platform targets, batch 1 x 4 s, forward + backward in a fresh
    process. docs/models.md and docs/benchmarks.md give its peak RSS: 1.15 GB, about 0.25 GB
    of it for the model's forward and backward (measured 2026-12-06: 0.91 GB after importing
    torch and eegfm, 1.155 GB peak; Linux `ru_maxrss` is in kB)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS_SCRIPT, str(here)], capture_output=True, text=True,
        timeout=300, cwd=here.parents[1], env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["shape"] == [1, 1132, 4, out["embed_dim"]] and out["finite"]
    model_gb = (out["peak_kb"] - out["imported_kb"]) / 1e6
    peak_gb = out["peak_kb"] / 1e6
    print(f"1,132 channels: peak RSS {peak_gb:.3f} GB, {model_gb:.3f} GB over the imports")
    # the absolute peak (1.15-1.36 GB seen) is mostly the import of torch and its libraries,
    # which depends on the build and on what the test process loaded; the model's share is not
    assert model_gb < 0.30, (model_gb, peak_gb)


@pytest.mark.parametrize("channels", [19, 100])  # dense and kNN paths
def test_bf16_autocast_stays_finite(tiny_model, make_batch, channels):
    x, coords = make_batch(2, channels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tokens = tiny_model.train().forward_features(x, coords)
    tokens.float().pow(2).mean().backward()
    assert torch.isfinite(tokens).all()
