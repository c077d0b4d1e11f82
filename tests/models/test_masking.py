"""Masks hit their ratios over real tokens, never touch padding, and keep their shape."""

from __future__ import annotations

import pytest
import torch

from eegfm.models import (
    MASK_KINDS,
    channel_token_mask,
    mixed_mask,
    random_patch_mask,
    spatial_block_mask,
)


@pytest.fixture
def padded(make_batch):
    _, coords = make_batch(4, 64)
    valid = torch.ones(4, 64, dtype=torch.bool)
    valid[1, 19:] = False
    valid[2, 40:] = False
    valid[3, 5] = False
    return coords, valid


def _ratios(mask: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return mask.sum(dim=(1, 2)) / (valid.sum(dim=1) * mask.shape[2])


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.75])
def test_patch_and_mixed_masks_hit_ratio_exactly_and_skip_padding(padded, ratio):
    coords, valid = padded
    generator = torch.Generator().manual_seed(0)
    for mask in (random_patch_mask(valid, 4, ratio, generator=generator),
                 mixed_mask(coords, valid, 4, ratio, generator=generator)[0]):
        assert not mask[~valid].any()
        expected = torch.floor(ratio * valid.sum(dim=1) * 4 + 0.5) / (valid.sum(dim=1) * 4)
        torch.testing.assert_close(_ratios(mask, valid), expected.float())


def test_channel_mask_masks_whole_channels_near_ratio(padded):
    _, valid = padded
    mask = channel_token_mask(valid, 4, 0.5, generator=torch.Generator().manual_seed(0))
    assert not mask[~valid].any()
    per_channel = mask.sum(dim=2)
    assert torch.all((per_channel == 0) | (per_channel == 4))
    n_valid = valid.sum(dim=1)
    assert torch.all((_ratios(mask, valid) - 0.5).abs() <= 1.0 / n_valid)


def test_channel_mask_never_hides_every_channel():
    valid = torch.ones(1, 1, dtype=torch.bool)
    assert not channel_token_mask(valid, 4, 1.0).any()
    valid = torch.ones(1, 3, dtype=torch.bool)
    assert channel_token_mask(valid, 4, 1.0).any(dim=2).sum() == 2


@pytest.mark.parametrize("span", ["all", "random"])
def test_spatial_blocks_are_compact_and_near_ratio(padded, span):
    coords, valid = padded
    mask = spatial_block_mask(coords, valid, 4, 0.3, radius_m=0.04, span=span,
                              generator=torch.Generator().manual_seed(0))
    assert not mask[~valid].any()
    n_tokens = valid.sum(dim=1) * 4
    torch.testing.assert_close(mask.sum(dim=(1, 2)).float(),
                               torch.floor(0.3 * n_tokens + 0.5).float())


def test_one_spatial_block_stays_within_its_radius(padded):
    coords, valid = padded
    # 13 tokens of 256: one block of radius 6 cm covers them, so all lie within 2 radii
    mask = spatial_block_mask(coords[:1], valid[:1], 4, 0.05, radius_m=0.06,
                              generator=torch.Generator().manual_seed(1))
    masked = mask[0].any(dim=1).nonzero().squeeze(1)
    assert 1 < masked.numel() < 13
    assert torch.cdist(coords[0, masked], coords[0, masked]).max() <= 0.12


def test_mixed_mask_labels_each_kind_and_is_seedable(padded):
    coords, valid = padded
    first = mixed_mask(coords, valid, 6, 0.5, generator=torch.Generator().manual_seed(3))
    second = mixed_mask(coords, valid, 6, 0.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    mask, kind = first
    assert torch.equal(mask, kind > 0)
    for code in MASK_KINDS.values():
        assert (kind == code).any()
    channel_tokens = (kind == MASK_KINDS["channel"]).sum(dim=2)
    assert torch.all((channel_tokens == 0) | (channel_tokens == 6))


def test_bad_ratio_is_rejected(padded):
    coords, valid = padded
    with pytest.raises(ValueError, match="ratio"):
        random_patch_mask(valid, 4, 1.5)
    with pytest.raises(ValueError, match="span"):
        spatial_block_mask(coords, valid, 4, 0.5, span="some")
