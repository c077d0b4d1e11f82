"""Token masks for masked pretraining: random patches, whole channels, spatial blocks, a mix.

Pure functions of ``(valid (B, C), n_patches, ratio)`` (+ coordinates for spatial blocks) and a
``torch.Generator``; they return ``(B, C, P)`` bool masks, True = masked. Padding and channels
with NaN coordinates (``valid`` False) are never masked, and ratios count real tokens only:
each sample gets ``round(ratio * n_valid_channels * P)`` masked tokens where the kind allows.

Masks are drawn for the whole batch at once with tensor operations on the device of ``valid``
(no per-sample loop), so they cost little next to a GPU training step. A ``generator`` must live
on that same device; without one, the device's global RNG is used (``torch.manual_seed`` seeds
both CPU and CUDA), so a given seed gives the same masks on a given device.
"""

from __future__ import annotations

import math

import torch

from eegfm.models.neighbours import EXACT

MASK_KINDS = {"patch": 1, "channel": 2, "block": 3}  # values of the ``kind`` tensor; 0 = visible

# Block centres are drawn in chunks of growing size until every sample's block budget is used:
# most batches need a handful of centres, and a chunk costs B * size * C * P work.
_FIRST_CHUNK, _MAX_CHUNK, _MAX_CHUNKS = 8, 64, 32
# Off the CPU, asking the device whether the budget is used would stall the host once per chunk
# (and so the next step's launches): there a fixed number of chunks runs instead, enough for
# this many centres per block the budget needs if every centre added a new one.
_CENTRES_PER_BLOCK = 4
_READS_ARE_FREE = {"cpu"}  # device types whose tensors the host reads without waiting
# sort key above every uniform draw in [0, 1): non-candidates sort last
_NEVER = 2.0


def _check_ratio(ratio: float) -> None:
    """Reject ratios outside [0, 1]."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must be in [0, 1], got {ratio}")


def _budget(n_tokens: torch.Tensor, ratio: float) -> torch.Tensor:
    """Masked-token counts (int64) for ``n_tokens`` real tokens per sample (round half up)."""
    # float64, as Python's float would do: the counts match `floor(ratio * n + 0.5)` exactly
    return torch.floor(n_tokens.double() * ratio + 0.5).long()


def _rank(keys: torch.Tensor) -> torch.Tensor:
    """Position of each entry of ``keys (B, N)`` in its row's stable ascending order."""
    order = keys.argsort(dim=1, stable=True)
    rank = torch.empty_like(order)
    positions = torch.arange(keys.shape[1], device=keys.device).expand_as(order)
    return rank.scatter_(1, order, positions)


def _pick(candidates: torch.Tensor, count: torch.Tensor,
          generator: torch.Generator | None) -> torch.Tensor:
    """``count (B,)`` entries per row of ``candidates (B, N)``, uniform without replacement."""
    draw = torch.rand(candidates.shape, generator=generator, device=candidates.device)
    keys = torch.where(candidates, draw, _NEVER)
    return candidates & (_rank(keys) < count[:, None])


def _add_blocks(
    mask: torch.Tensor,
    coords: torch.Tensor,
    valid: torch.Tensor,
    budget: torch.Tensor,
    radius_m: float,
    span: str,
    generator: torch.Generator | None,
    max_budget: int,
) -> None:
    """Mask electrodes within ``radius_m`` of random centre electrodes until ``budget`` is used.

    Centres are uniform over the sample's valid channels. ``span='all'`` covers every patch of
    a block; ``'random'`` a run of 1..P patches (uniform length, then a uniform start so that
    it fits). The last block is cut to the budget, keeping the tokens nearest its centre.
    ``mask (B, C, P)`` is updated in place. Centres come in chunks (8, 16, 32, then 64 at a
    time, 32 chunks at most); a budget still unused after them (tiny radii on dense montages
    only) is left to the later kinds. On the CPU the loop stops once every budget is used; on
    other devices it runs `block_chunks(max_budget, P, span)` chunks without reading the device
    (chunks after the budget is used add nothing).
    """
    B, _, P = mask.shape
    device = mask.device
    n_valid = valid.sum(dim=1)
    # channel indices with the valid ones first, in channel order, to map a draw to a channel
    valid_first = (~valid).to(torch.uint8).argsort(dim=1, stable=True)
    patch = torch.arange(P, device=device)
    used = torch.zeros(B, dtype=torch.long, device=device)

    def uniform(k: int) -> torch.Tensor:
        # float64: floor(u * n) stays uniform over n choices for any montage size
        return torch.rand(B, k, generator=generator, device=device, dtype=torch.float64)

    early_exit = device.type in _READS_ARE_FREE
    n_chunks = _MAX_CHUNKS if early_exit else block_chunks(max_budget, P, span)
    for chunk in range(n_chunks):
        if early_exit and chunk and not bool((used < budget).any()):
            break
        K = _chunk_size(chunk)
        # floor(u * n) can round up to n in floating point: clamp
        pick = torch.minimum((uniform(K) * n_valid[:, None]).long(), n_valid[:, None] - 1)
        centre = valid_first.gather(1, pick.clamp(min=0))  # (B, K)
        centre_xyz = coords.gather(1, centre[..., None].expand(B, K, 3))
        distance = torch.cdist(centre_xyz, coords, compute_mode=EXACT)  # (B, K, C)
        run = None
        if span == "random":
            length = 1 + (uniform(K) * P).long().clamp(max=P - 1)
            start = torch.minimum((uniform(K) * (P - length + 1)).long(), P - length)
            run = (patch >= start[..., None]) & (patch < (start + length)[..., None])
        take = _greedy_blocks(mask, distance, valid, run, radius_m, budget - used)
        mask |= take
        used += take.sum(dim=(1, 2))


def _chunk_size(chunk: int) -> int:
    """Centres drawn in chunk number ``chunk`` (8, 16, 32, then 64)."""
    return min(_FIRST_CHUNK << chunk, _MAX_CHUNK)


def block_chunks(max_budget: int, n_patches: int, span: str) -> int:
    """Chunks of centres drawn without an early exit for a block budget of ``max_budget``."""
    # a block over all patches masks a whole channel: budget / P blocks; a random span maybe 1
    blocks = -(-max_budget // n_patches) if span == "all" else max_budget
    target, drawn, chunks = _CENTRES_PER_BLOCK * blocks + _FIRST_CHUNK, 0, 0
    while drawn < target and chunks < _MAX_CHUNKS:
        drawn += _chunk_size(chunks)
        chunks += 1
    return max(chunks, 1)


def _greedy_blocks(
    mask: torch.Tensor,
    distance: torch.Tensor,
    valid: torch.Tensor,
    run: torch.Tensor | None,
    radius_m: float,
    left: torch.Tensor,
) -> torch.Tensor:
    """Tokens that K blocks add, in order, to ``mask (B, C, P)`` within ``left (B,)`` tokens.

    ``distance (B, K, C)``: from each block centre to every channel; ``run (B, K, P)``: the
    patches each block covers (None: all). Same result as adding the blocks one at a time,
    each minus what is already masked, the last one cut keeping the tokens nearest its centre
    (ties in token order): every still-visible token is keyed by (first block covering it,
    distance to that block's centre, token order) and the first ``left`` keys are taken.
    """
    B, C, P = mask.shape
    K = distance.shape[1]
    covered = (distance <= radius_m) & valid[:, None, :]
    # (B, K, C, 1) for blocks over all patches: one key per channel, broadcast over patches
    covered = covered[..., None] if run is None else covered[..., None] & run[:, :, None, :]
    # first block covering each token, K where none does (int16: a fast reduction on CPU)
    block = torch.arange(K, device=mask.device, dtype=torch.int16).view(1, K, 1, 1)
    first = torch.where(covered, block, K).amin(dim=1)  # (B, C, P) or (B, C, 1)
    nearest = first.long().clamp(max=K - 1)  # uncovered tokens read a dummy, dropped below
    to_centre = distance.transpose(1, 2).gather(2, nearest).expand(B, C, P).reshape(B, C * P)
    first = first.expand(B, C, P).reshape(B, C * P)
    new = (first < K) & ~mask.view(B, C * P)
    first = torch.where(new, first, K)
    to_centre = torch.where(new, to_centre, torch.inf)
    # lexicographic key by stable sorts, least significant first; token order breaks ties
    by_distance = to_centre.argsort(dim=1, stable=True)
    then_block = _rank(first.gather(1, by_distance))
    key = torch.empty_like(by_distance).scatter_(1, by_distance, then_block)
    return (new & (key < left[:, None])).view(B, C, P)


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
    Returns ``mask (B, C, P)`` bool and ``kind (B, C, P)`` int8 (see ``MASK_KINDS``), on the
    device of ``valid``; ``generator``, if given, must be on that device too.
    """
    _check_ratio(ratio)
    if span not in ("all", "random"):
        raise ValueError(f"span must be 'all' or 'random', got {span!r}")
    if len(weights) != 3 or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"weights must be three non-negative numbers, not all zero: {weights}")
    device = valid.device
    if generator is not None and generator.device.type != device.type:
        raise ValueError(
            f"generator is on {generator.device} but the masks are drawn on {device}: "
            "create it there, e.g. torch.Generator(device=valid.device)"
        )
    valid = valid.detach().to(torch.bool)
    coords = torch.nan_to_num(coords.detach().to(device, torch.float32))
    B, C = valid.shape
    P = n_patches
    w_patch, w_channel, w_block = (w / sum(weights) for w in weights)
    n_valid = valid.sum(dim=1)
    total = _budget(n_valid * P, ratio)
    mask = torch.zeros(B, C, P, dtype=torch.bool, device=device)

    if w_block > 0 and C > 0:
        # `_budget`'s rounding in Python numbers (a tensor here would be a value to read back),
        # for the widest sample the batch could hold
        max_budget = math.floor(math.floor(ratio * C * P + 0.5) * w_block + 0.5)
        _add_blocks(mask, coords, valid, _budget(total, w_block), radius_m, span, generator,
                    max_budget)
    block = mask.clone()

    if w_channel > 0:
        untouched = valid & ~mask.any(dim=2)
        # one valid channel always stays visible
        n_channels = torch.minimum(
            torch.minimum(_budget(total, w_channel) // P, n_valid - 1), untouched.sum(dim=1)
        ).clamp(min=0)
        mask |= _pick(untouched, n_channels, generator)[..., None]
    channel = mask & ~block

    patch = torch.zeros_like(mask)
    if w_patch > 0:
        visible = (valid[..., None] & ~mask).view(B, C * P)
        missing = (total - mask.sum(dim=(1, 2))).clamp(min=0)
        patch = _pick(visible, missing, generator).view(B, C, P)
        mask |= patch

    kind = (
        block.to(torch.int8) * MASK_KINDS["block"]
        + channel.to(torch.int8) * MASK_KINDS["channel"]
        + patch.to(torch.int8) * MASK_KINDS["patch"]
    )
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
    coords = torch.zeros(*valid.shape, 3, device=valid.device)
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
