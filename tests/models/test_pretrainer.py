"""MaskedPretrainer: loss parts, zero baseline, mask token, and learning on a toy signal."""

from __future__ import annotations

import torch

from eegfm.models import MaskedPretrainer, create_model


def test_loss_parts_and_zero_baseline(make_batch):
    torch.manual_seed(0)
    pretrainer = MaskedPretrainer(create_model("eegfm_tiny"), mask_ratio=0.5,
                                  spectrum_weight=0.1, decoder_depth=1)
    x, coords = make_batch(3, 19)
    channel_mask = torch.ones(3, 19, dtype=torch.bool)
    channel_mask[2, 10:] = False
    loss, parts = pretrainer(x, coords, channel_mask, generator=torch.Generator().manual_seed(0))
    assert pretrainer.config["encoder"] == pretrainer.encoder.config
    assert loss.requires_grad and torch.isfinite(loss)
    assert {"loss_mse", "loss_zero", "loss_patch", "loss_channel", "loss_block",
            "loss_spectrum", "mask_ratio"} <= set(parts)
    torch.testing.assert_close(parts["mask_ratio"], torch.tensor(0.5), atol=0.01, rtol=0)
    torch.testing.assert_close(loss, parts["loss_mse"] + 0.1 * parts["loss_spectrum"])
    # the zero baseline is the mean square of the normalised target on the same tokens
    inputs = pretrainer.encoder.prepare(x, coords, channel_mask)
    mask, _ = pretrainer.make_mask(coords, inputs.valid, 4, torch.Generator().manual_seed(0))
    target = inputs.x_norm.reshape(3, 19, 4, 200)
    torch.testing.assert_close(parts["loss_zero"], target.pow(2).mean(-1)[mask].mean())
    loss.backward()
    assert pretrainer.mask_token.grad is not None and pretrainer.mask_token.grad.abs().sum() > 0


def test_masked_patch_content_reaches_no_token(make_batch):
    torch.manual_seed(0)
    pretrainer = MaskedPretrainer(create_model("eegfm_tiny")).eval()
    x, coords = make_batch(1, 8)
    inputs = pretrainer.encoder.prepare(x, coords)
    mask = torch.zeros(1, 8, 4, dtype=torch.bool)
    mask[0, 2, 1] = True
    visible = torch.zeros_like(mask)
    with torch.no_grad():
        masked_before = pretrainer.forward_encoder(inputs, mask)
        visible_before = pretrainer.forward_encoder(inputs, visible)
        inputs.x_norm = inputs.x_norm.clone()
        inputs.x_norm[0, 2, 200:400] = 0.5  # change only the masked patch
        masked_after = pretrainer.forward_encoder(inputs, mask)
        visible_after = pretrainer.forward_encoder(inputs, visible)
    torch.testing.assert_close(masked_after, masked_before)
    assert not torch.allclose(visible_after, visible_before)


def test_training_beats_zero_prediction_on_a_spatially_smooth_signal():
    # a signal shared by neighbouring electrodes: masked channels are predictable from others
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    coords = torch.randn(19, 3, generator=generator)
    coords[:, 2] = coords[:, 2].abs()
    coords = 0.09 * coords / coords.norm(dim=1, keepdim=True)
    t = torch.arange(800) / 200.0
    pretrainer = MaskedPretrainer(create_model("eegfm_tiny"), mask_ratio=0.4)
    optimizer = torch.optim.AdamW(pretrainer.parameters(), lr=3e-3)
    history = []
    for _ in range(40):
        freq = 5 + 10 * torch.rand(8, 1, 1, generator=generator)
        phase = 6.28 * torch.rand(8, 1, 1, generator=generator)
        gain = 1 + coords[None, :, :1] / 0.09  # smooth spatial gradient of amplitude
        x = 20 * gain * torch.sin(6.28 * freq * t + phase)
        x = x + torch.randn(8, 19, 800, generator=generator)
        loss, parts = pretrainer(x, coords.expand(8, -1, -1), generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((parts["loss_mse"], parts["loss_zero"]))
    masked, zero = (sum(values) for values in zip(*history[-10:], strict=True))
    assert masked < 0.7 * zero, (masked, zero)
