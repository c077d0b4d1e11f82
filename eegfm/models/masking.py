"""Token masks for masked pretraining: random patches, whole channels, spatial blocks, a mix.

Pure functions of ``(valid (B, C), n_patches, ratio)`` (+ coordinates for spatial blocks) and a
``torch.Generator``; they return ``(B, C, P)`` bool masks, True = masked. Padding and channels
with NaN coordinates (``valid`` False) are never masked, and ratios count real tokens only:
each sample gets ``round(ratio * n_valid_channels * P)`` masked tokens where the kind allows.
"""

from __future__ import annotations

import math

import torch

MASK_KINDS = {"patch": 1, "channel": 2, "block": 3}  # values of the ``kind`` tensor; 0 = visible


def _budget(n_tokens: int, ratio: float) -> int:
    """Masked-token count for ``n_tokens`` real tokens (round half up)."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must be in [0, 1], got {ratio}")
    return math.floor(ratio * n_tokens + 0.5)


def _add_patches(
    mask: torch.Tensor, valid: torch.Tensor, budget: int, generator: torch.Generator | None
) -> None:
    """Mask ``budget`` more random visible tokens of one sample (``mask (C, P)`` in place)."""
    candidates = (~mask & valid[:, None]).flatten().nonzero().squeeze(1)
    if budget <= 0 or candidates.numel() == 0:
        return
    order = torch.randperm(candidates.numel(), generator=generator)
    mask.view(-1)[candidates[order[:budget]]] = True


def _add_channels(
    mask: torch.Tensor, valid: torch.Tensor, budget: int, generator: torch.Generator | None
) -> None:
    """Mask whole untouched channels while they fit in ``budget`` tokens; one stays visible."""
    n_patches = mask.shape[1]
    untouched = (valid & ~mask.any(dim=1)).nonzero().squeeze(1)
    n_max = min(budget // n_patches, int(valid.sum()) - 1, untouched.numel())
    if n_max <= 0:
        return
    order = torch.randperm(untouched.numel(), generator=generator)
    mask[untouched[order[:n_max]]] = True


def _add_blocks(
    mask: torch.Tensor,
    coords: torch.Tensor,
    valid: torch.Tensor,
    budget: int,
    radius_m: float,
    span: str,
    generator: torch.Generator | None,
) -> None:
    """Mask electrodes within ``radius_m`` of random centre electrodes until ``budget`` is used.

    ``span='all'`` masks every patch of the block; ``'random'`` a random contiguous run of
    patches. The last block is cut to the budget, keeping the tokens nearest its centre.
    """
    n_patches = mask.shape[1]
    valid_idx = valid.nonzero().squeeze(1)
    if budget <= 0 or valid_idx.numel() == 0:
        return
    distance = torch.cdist(coords[valid_idx], coords[valid_idx])  # (V, V)
    used = 0
    for _ in range(4 * valid_idx.numel() * n_patches):  # bounded: each pass masks >= 1 token
        if used >= budget:
            break
        centre = int(torch.randint(valid_idx.numel(), (1,), generator=generator))
        near = (distance[centre] <= radius_m).nonzero().squeeze(1)
        near = near[distance[centre, near].argsort()]
        if span == "all":
            start, length = 0, n_patches
        else:
            length = int(torch.randint(1, n_patches + 1, (1,), generator=generator))
            start = int(torch.randint(0, n_patches - length + 1, (1,), generator=generator))
        block = torch.zeros_like(mask)
        block[valid_idx[near], start : start + length] = True
        # tokens in order of distance to the centre, so a cut block stays compact
        new = (block & ~mask).nonzero()
        if new.numel() == 0:
            continue
        rank = (distance[centre][torch.searchsorted(valid_idx, new[:, 0])]).argsort(stable=True)
        new = new[rank[: budget - used]]
        mask[new[:, 0], new[:, 1]] = True
        used += new.shape[0]


def mixed_mask(
    coords: torch.Tensor,
    valid: torch.Tensor,
    n_patches: int,
    ratio: float,
    *,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    radius_m: float = 0.05,
    span: str = "all",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix of spatial blocks, whole channels and random patches at ``ratio`` of real tokens.

    ``weights`` = (patch, channel, block) shares of the budget. Blocks are drawn first, then
    whole channels, then random patches fill the rest, so every sample gets exactly
    ``round(ratio * real tokens)`` masked tokens whenever the patch weight is non-zero.
    Returns ``mask (B, C, P)`` bool and ``kind (B, C, P)`` int8 (see ``MASK_KINDS``).
    """
    if span not in ("all", "random"):
        raise ValueError(f"span must be 'all' or 'random', got {span!r}")
    if len(weights) != 3 or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"weights must be three non-negative numbers, not all zero: {weights}")
    coords = coords.detach().to("cpu", torch.float32)
    valid = valid.detach().to("cpu", torch.bool)
    B, C = valid.shape
    mask = torch.zeros(B, C, n_patches, dtype=torch.bool)
    kind = torch.zeros(B, C, n_patches, dtype=torch.int8)
    w_patch, w_channel, w_block = (w / sum(weights) for w in weights)
    for b in range(B):
        total = _budget(int(valid[b].sum()) * n_patches, ratio)
        before = mask[b].clone()
        _add_blocks(
            mask[b], coords[b], valid[b], _budget(total, w_block), radius_m, span, generator
        )
        kind[b][mask[b] & ~before] = MASK_KINDS["block"]
        before = mask[b].clone()
        _add_channels(mask[b], valid[b], _budget(total, w_channel), generator)
        kind[b][mask[b] & ~before] = MASK_KINDS["channel"]
        if w_patch > 0:
            before = mask[b].clone()
            _add_patches(mask[b], valid[b], total - int(mask[b].sum()), generator)
            kind[b][mask[b] & ~before] = MASK_KINDS["patch"]
    return mask, kind


def random_patch_mask(
    valid: torch.Tensor,
    n_patches: int,
    ratio: float,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mask ``round(ratio * real tokens)`` tokens chosen uniformly at random per sample."""
    return _one_kind(valid, n_patches, ratio, (1.0, 0.0, 0.0), generator)


def channel_token_mask(
    valid: torch.Tensor,
    n_patches: int,
    ratio: float,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mask as many whole channels as fit in ``round(ratio * real tokens)``, never all of them."""
    return _one_kind(valid, n_patches, ratio, (0.0, 1.0, 0.0), generator)


def _one_kind(valid: torch.Tensor, n_patches: int, ratio: float,
              weights: tuple[float, float, float], generator: torch.Generator | None
              ) -> torch.Tensor:
    """`mixed_mask` restricted to one kind that ignores positions (coordinates unused)."""
    coords = torch.zeros(*valid.shape, 3)
    return mixed_mask(coords, valid, n_patches, ratio, weights=weights, generator=generator)[0]


def spatial_block_mask(
    coords: torch.Tensor,
    valid: torch.Tensor,
    n_patches: int,
    ratio: float,
    *,
    radius_m: float = 0.05,
    span: str = "all",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mask electrodes within ``radius_m`` of random centres (all patches or a random span)."""
    return mixed_mask(
        coords,
        valid,
        n_patches,
        ratio,
        weights=(0.0, 0.0, 1.0),
        radius_m=radius_m,
        span=span,
        generator=generator,
    )[0]
