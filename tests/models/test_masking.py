"""Masks hit their ratios over real tokens, never touch padding, and keep their shape."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eegfm.models import (
    MASK_KINDS,
    channel_token_mask,
    masking,
    mixed_mask,
    random_patch_mask,
    spatial_block_mask,
)
from eegfm.models.masking import _greedy_blocks, block_chunks
from eegfm.montage.layouts import builtin_positions


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


# --- batched drawing: exact budgets, geometry, RNG, devices (real electrode positions) ---

TEN_TWENTY = ["Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4", "T8", "P7",
              "P3", "Pz", "P4", "P8", "O1", "O2"]


def _positions(montage: str, names: list[str] | None = None) -> torch.Tensor:
    positions = builtin_positions(montage)
    return torch.tensor(np.stack([positions[n] for n in names or list(positions)]),
                        dtype=torch.float32)


@pytest.fixture(scope="module")
def montages() -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch of real caps: NaN coordinates mark padding and unusable channels."""
    ten_twenty = _positions("colin27_1020", TEN_TWENTY)
    biosemi = _positions("biosemi64")
    coords = torch.full((6, 64, 3), float("nan"))
    coords[0] = biosemi
    coords[1, :19] = ten_twenty
    coords[2, :19] = ten_twenty
    coords[2, [3, 11]] = float("nan")  # channels without a position
    coords[3, 7] = ten_twenty[9]  # a single channel, not the first slot
    coords[5, :40] = biosemi[:40]  # sample 4: no channel at all
    return coords, coords.isfinite().all(dim=2)


def _expected_total(valid: torch.Tensor, n_patches: int, ratio: float) -> torch.Tensor:
    return torch.tensor([math.floor(ratio * int(n) * n_patches + 0.5) for n in valid.sum(1)])


@pytest.mark.parametrize("span", ["all", "random"])
@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.37, 0.5, 0.9, 1.0])
def test_mixed_mask_exact_budget_per_sample_on_real_caps(montages, ratio, span):
    coords, valid = montages
    for n_patches, weights in ((4, (1.0, 1.0, 1.0)), (5, (0.2, 0.3, 0.5)), (1, (1.0, 0.0, 2.0))):
        mask, kind = mixed_mask(coords, valid, n_patches, ratio, weights=weights, span=span,
                                radius_m=0.06, generator=torch.Generator().manual_seed(7))
        assert mask.shape == kind.shape == (6, 64, n_patches) and kind.dtype == torch.int8
        assert not mask[~valid].any()
        assert torch.equal(mask, kind > 0)
        assert torch.equal(mask.sum(dim=(1, 2)), _expected_total(valid, n_patches, ratio))


@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.8, 1.0])
def test_channel_kind_masks_whole_untouched_channels_and_keeps_one_visible(montages, ratio):
    coords, valid = montages
    n_valid = valid.sum(dim=1)
    only = channel_token_mask(valid, 4, ratio, generator=torch.Generator().manual_seed(1))
    per_channel = only.sum(dim=2)
    assert torch.all((per_channel == 0) | (per_channel == 4)) and not only[~valid].any()
    expected = torch.minimum(_expected_total(valid, 4, ratio) // 4, (n_valid - 1).clamp(min=0))
    assert torch.equal((per_channel == 4).sum(dim=1), expected)
    assert torch.all((valid & (per_channel == 0)).sum(dim=1) >= n_valid.clamp(max=1))

    _, kind = mixed_mask(coords, valid, 4, ratio, generator=torch.Generator().manual_seed(1))
    channel = (kind == MASK_KINDS["channel"]).sum(dim=2)
    assert torch.all((channel == 0) | (channel == 4))
    touched_by_block = (kind == MASK_KINDS["block"]).any(dim=2)
    assert not (touched_by_block & (channel > 0)).any()
    assert torch.all((valid & (channel == 0)).sum(dim=1) >= n_valid.clamp(max=1))


def _sequential_blocks(mask, distance, valid, run, radius_m, left):
    """Reference: add blocks one at a time, the last cut keeping the tokens nearest its centre."""
    mask = mask.clone()
    for b in range(mask.shape[0]):
        budget = int(left[b])
        for k in range(distance.shape[1]):
            near = (distance[b, k] <= radius_m) & valid[b]
            block = near[:, None] & (run[b, k] if run is not None else True)
            new = (block & ~mask[b]).nonzero()
            order = distance[b, k, new[:, 0]].argsort(stable=True)[:budget]
            mask[b, new[order, 0], new[order, 1]] = True
            budget -= order.numel()
    return mask


@pytest.mark.parametrize("span", ["all", "random"])
def test_batched_blocks_match_blocks_added_one_at_a_time(montages, span):
    coords, valid = montages
    coords = torch.nan_to_num(coords)
    generator = torch.Generator().manual_seed(5)
    B, C, P, K = 6, 64, 4, 12
    centre = torch.randint(C, (B, K), generator=generator)
    distance = torch.cdist(coords.gather(1, centre[..., None].expand(B, K, 3)), coords,
                           compute_mode="donot_use_mm_for_euclid_dist")
    run = None
    if span == "random":
        start = torch.randint(P, (B, K), generator=generator)
        stop = start + 1 + (torch.rand(B, K, generator=generator) * (P - start)).long()
        run = (torch.arange(P) >= start[..., None]) & (torch.arange(P) < stop[..., None])
    earlier = (torch.rand(B, C, P, generator=generator) < 0.1) & valid[..., None]
    for left in (0, 3, 17, 60, 1000):
        left = torch.full((B,), left)
        batched = earlier | _greedy_blocks(earlier, distance, valid, run, 0.06, left)
        torch.testing.assert_close(batched, _sequential_blocks(earlier, distance, valid, run,
                                                               0.06, left))


def test_one_large_block_is_the_ball_nearest_a_valid_centre(montages):
    coords, valid = montages
    # radius covering the head: a single block, cut to the budget around its centre
    mask = spatial_block_mask(coords, valid, 4, 0.3, radius_m=1.0,
                              generator=torch.Generator().manual_seed(2))
    for b in torch.nonzero(valid.sum(dim=1) > 1).squeeze(1):
        channels = valid[b].nonzero().squeeze(1)
        full = mask[b, channels].all(dim=1)
        distance = torch.cdist(coords[b, channels], coords[b, channels])
        masked, unmasked = distance[:, full], distance[:, ~mask[b, channels].any(dim=1)]
        # some valid centre has every fully masked channel at least as near as any visible one
        assert torch.any(masked.amax(dim=1) <= unmasked.amin(dim=1))
        assert mask[b, channels].any(dim=1).sum() - full.sum() <= 1


def test_blocks_over_all_patches_cut_at_most_one_channel(montages):
    coords, valid = montages
    for ratio in (0.1, 0.35, 0.6):
        mask = spatial_block_mask(coords, valid, 5, ratio, radius_m=0.05,
                                  generator=torch.Generator().manual_seed(3))
        per_channel = mask.sum(dim=2)
        partial = (per_channel > 0) & (per_channel < 5)
        assert torch.all(partial.sum(dim=1) <= 1)
        # a cut channel keeps its first patches (ties at one distance go in token order)
        prefix = torch.arange(5) < per_channel[..., None]
        assert torch.equal(mask[partial], prefix[partial])


def test_small_blocks_still_reach_the_full_budget(montages):
    coords, valid = montages
    # 1 mm balls hold one electrode: hundreds of centres are drawn before every token is covered
    mask = spatial_block_mask(coords, valid, 4, 1.0, radius_m=0.001, span="random",
                              generator=torch.Generator().manual_seed(0))
    assert torch.equal(mask, valid[..., None].expand_as(mask))


def test_block_centres_are_uniform_over_valid_channels():
    valid = torch.tensor([[True, False, True, True, False, True, True, False]]).repeat(4000, 1)
    coords = torch.randn(8, 3, generator=torch.Generator().manual_seed(0)).expand(4000, 8, 3)
    # one token per sample, and a ball holding only its centre: the mask marks the first centre
    mask = spatial_block_mask(coords, valid, 1, 0.2, radius_m=1e-6,
                              generator=torch.Generator().manual_seed(0))
    counts = mask[..., 0].sum(dim=0)
    assert counts.sum() == 4000 and not counts[~valid[0]].any()
    assert torch.all((counts[valid[0]] - 800).abs() < 5 * 800**0.5)  # binomial sd ~25


def test_random_spans_start_with_the_right_frequencies():
    n = 20000
    valid = torch.ones(n, 1, dtype=torch.bool)
    # one token of four is the start of the first run (ties in token order)
    mask = spatial_block_mask(torch.zeros(n, 1, 3), valid, 4, 0.25, span="random",
                              generator=torch.Generator().manual_seed(0))
    assert torch.all(mask.sum(dim=(1, 2)) == 1)
    # length uniform in 1..4, then start uniform in 0..4-length
    expected = torch.tensor([25 / 48, 13 / 48, 7 / 48, 3 / 48])
    torch.testing.assert_close(mask[:, 0].float().mean(dim=0), expected, atol=0.015, rtol=0)


@pytest.mark.parametrize("span", ["all", "random"])
def test_same_seed_same_masks_other_seed_other_masks(montages, span):
    coords, valid = montages

    def draw(seed):
        return mixed_mask(coords, valid, 4, 0.5, span=span,
                          generator=torch.Generator().manual_seed(seed))

    first, again, other = draw(11), draw(11), draw(12)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    torch.manual_seed(11)
    global_first = mixed_mask(coords, valid, 4, 0.5, span=span)
    torch.manual_seed(11)
    assert torch.equal(global_first[1], mixed_mask(coords, valid, 4, 0.5, span=span)[1])


def test_dense_montage_batch_runs():
    generator = torch.Generator().manual_seed(0)
    direction = torch.randn(64, 1132, 3, generator=generator)
    direction[..., 2] = direction[..., 2].abs() + 0.2  # upper part of a 9 cm head
    coords = 0.09 * direction / direction.norm(dim=2, keepdim=True)
    valid = torch.ones(64, 1132, dtype=torch.bool)
    valid[::3, 1000:] = False
    for span in ("all", "random"):
        mask, kind = mixed_mask(coords, valid, 4, 0.5, span=span, generator=generator)
        assert torch.equal(mask.sum(dim=(1, 2)), _expected_total(valid, 4, 0.5))
        assert not mask[~valid].any() and torch.equal(mask, kind > 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_masks_are_drawn_on_the_inputs_device(montages):
    coords, valid = (t.cuda() for t in montages)
    generator = torch.Generator(device="cuda").manual_seed(0)
    mask, kind = mixed_mask(coords, valid, 4, 0.5, generator=generator)
    assert mask.device == kind.device == valid.device
    assert torch.equal(mask.sum(dim=(1, 2)).cpu(), _expected_total(valid.cpu(), 4, 0.5))
    assert not mask[~valid].any()
    with pytest.raises(ValueError, match="generator"):
        mixed_mask(coords, valid, 4, 0.5, generator=torch.Generator())


@pytest.mark.parametrize("span", ["all", "random"])
def test_fixed_chunk_count_off_the_cpu_draws_the_same_blocks(montages, span, monkeypatch):
    """Off the CPU the centres come in `block_chunks` chunks with no early exit (no host read):
    on real caps the budget is used within them, so the blocks equal the early-exit ones."""
    coords, valid = montages
    for ratio, radius in ((0.5, 0.05), (0.3, 0.06), (1.0, 0.04)):
        def draw(ratio=ratio, radius=radius):
            return spatial_block_mask(coords, valid, 4, ratio, radius_m=radius, span=span,
                                      generator=torch.Generator().manual_seed(9))

        early = draw()
        monkeypatch.setattr(masking, "_READS_ARE_FREE", set())
        fixed = draw()
        monkeypatch.undo()
        assert torch.equal(fixed, early), (ratio, radius)
        assert torch.equal(fixed.sum(dim=(1, 2)), _expected_total(valid, 4, ratio))


def test_block_chunks_grow_with_the_budget():
    assert block_chunks(13, 4, "all") == 2  # 19 channels x 4 patches at 0.5 / 3: 24 centres
    assert block_chunks(85, 4, "all") == 4  # 128 channels: 120 centres for 22 blocks
    assert block_chunks(85, 4, "random") == 8
    assert block_chunks(10**6, 4, "random") == 32
    assert block_chunks(0, 4, "all") == 1
