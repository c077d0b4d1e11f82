"""Electrode geometry for spatial attention: distances, RBF features, kNN sets and query blocks.

Built once per forward pass (no gradient) and shared by every spatial-attention layer.

Dense montages use exact k-nearest-neighbour attention, computed block-wise: channels are put
in a spatially coherent order (a Hilbert curve over an azimuthal projection of the head), cut
into blocks of ``block_size`` consecutive channels, and each block gathers the keys of the
*union* of its members' neighbour sets once. A boolean mask then keeps, for every query, exactly
its own k neighbours. Neighbouring electrodes share most neighbours, so a union holds a few
times k keys instead of block_size * k: keys are gathered ~k/4 times less often than with
one gather per query, and scores become small matrix products.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# exact pairwise distances: the matmul shortcut loses ~1e-4 relative precision, enough to make
# the dense and blocked paths (which compute distances over different sets) disagree
EXACT = "donot_use_mm_for_euclid_dist"


@dataclass
class SpatialContext:
    """Geometry shared by every spatial-attention layer of one forward pass.

    Dense (``members is None``): ``rbf (B, C, C, R)``, ``key_valid (B, C, C)``.
    Sparse: ``members (B, G, m)`` channels of each query block (the last block repeats its last
    channel), ``keys (B, G, U)`` the union of their neighbours, ``rbf (B, G, m, U, R)``,
    ``key_valid (B, G, m, U)`` True where a key is one of that query's neighbours,
    ``slot (B, C)`` where each channel sits in the flattened ``(G * m)`` block order, and
    ``neighbours (B, C, k)`` the plain kNN indices (for inspection and tests).
    """

    valid: torch.Tensor
    rbf: torch.Tensor
    key_valid: torch.Tensor
    neighbours: torch.Tensor | None = None
    members: torch.Tensor | None = None
    keys: torch.Tensor | None = None
    slot: torch.Tensor | None = None


def rbf_expand(distance: torch.Tensor, n_rbf: int, max_distance: float) -> torch.Tensor:
    """Expand distances ``(...)`` into ``n_rbf`` Gaussian bumps evenly spaced on [0, max]."""
    centres = torch.linspace(0.0, max_distance, n_rbf, device=distance.device,
                             dtype=distance.dtype)
    width = max_distance / (n_rbf - 1)
    return torch.exp(-(((distance[..., None] - centres) / width) ** 2))


def init_distance_bias(linear: torch.nn.Linear, max_distance: float = 2.0,
                       slopes: tuple[float, float] = (0.5, 16.0)) -> None:
    """Start a ``Linear(n_rbf, H)`` distance bias as ``-slope_h * d`` (ALiBi-like, d in radii).

    Slopes are spaced geometrically over the heads, so some heads start local and others
    global. Without this prior, attention starts uniform over all electrodes, which averages
    an average-referenced montage to nearly zero, and the bias has to grow from nothing.
    """
    n_rbf, n_heads = linear.in_features, linear.out_features
    with torch.no_grad():
        # explicit CPU: the fit must run even when the model is built on the meta device
        grid = torch.linspace(0.0, max_distance, 200, dtype=torch.float64, device="cpu")
        features = rbf_expand(grid, n_rbf, max_distance)  # (200, R)
        low, high = slopes
        slope = torch.logspace(math.log10(low), math.log10(high), n_heads, dtype=torch.float64,
                               device="cpu")
        target = -grid[:, None] * slope  # (200, H)
        design = torch.cat([features, torch.ones_like(grid)[:, None]], dim=1)
        solution = torch.linalg.lstsq(design, target).solution  # (R + 1, H)
        linear.weight.copy_(solution[:-1].T.to(linear.weight.dtype))
        linear.bias.copy_(solution[-1].to(linear.bias.dtype))


def hilbert_index(x: torch.Tensor, y: torch.Tensor, bits: int) -> torch.Tensor:
    """Position along a Hilbert curve of integer grid points ``x, y`` in ``[0, 2**bits)``."""
    n = 1 << bits
    d = torch.zeros_like(x)
    s = n >> 1
    while s > 0:
        rx = (x & s) > 0
        ry = (y & s) > 0
        d += s * s * ((3 * rx.long()) ^ ry.long())
        flip = rx & ~ry
        x, y = torch.where(flip, n - 1 - x, x), torch.where(flip, n - 1 - y, y)
        x, y = torch.where(ry, x, y), torch.where(ry, y, x)  # swap when ry == 0
        s >>= 1
    return d


def spatial_order(positions_m: torch.Tensor, valid: torch.Tensor, bits: int = 10) -> torch.Tensor:
    """``(B, C)`` channel order along a Hilbert curve of the head seen from above; invalid last."""
    unit = positions_m / positions_m.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    polar = torch.acos(unit[..., 2].clamp(-1.0, 1.0))  # 0 at the vertex, pi under the chin
    azimuth = torch.atan2(unit[..., 1], unit[..., 0])
    scale = ((1 << bits) - 1) / (2 * math.pi)
    grid_x = ((polar * torch.cos(azimuth) + math.pi) * scale).round().long()
    grid_y = ((polar * torch.sin(azimuth) + math.pi) * scale).round().long()
    index = hilbert_index(grid_x, grid_y, bits)
    index = torch.where(valid, index, torch.full_like(index, 1 << (2 * bits)))
    return index.argsort(dim=1, stable=True)


def _nearest(
    distance: torch.Tensor, valid: torch.Tensor, knn_k: int, dense_max_channels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbour indices ``(B, C, S)`` and which slots count ``(B, C, S)``.

    Per-sample rule, so padding never changes a sample's result: a sample with at most
    ``dense_max_channels`` valid channels attends to all of them, a denser one to its
    ``knn_k`` nearest (the first slots: topk is sorted).
    """
    B, C, _ = distance.shape
    n_valid = valid.sum(dim=1)
    small = n_valid <= dense_max_channels
    if torch.compiler.is_exporting():
        # an exported program has fixed shapes: room for every channel fits any sample, and
        # the slots beyond a sample's own are not counted, so the result is the same
        n_slots = C
    else:
        widest_small = int(n_valid[small].max()) if bool(small.any()) else 0
        n_slots = min(C, max(knn_k, widest_small))
    ranked = distance.masked_fill(~valid[:, None, :], torch.finfo(distance.dtype).max)
    neighbours = ranked.topk(n_slots, dim=-1, largest=False).indices
    counted = torch.gather(valid, 1, neighbours.flatten(1)).view(B, C, n_slots)
    allowed = torch.where(small, n_slots, knn_k)
    counted &= (torch.arange(n_slots, device=valid.device) < allowed[:, None])[:, None, :]
    return neighbours, counted


def _key_union(
    member_nb: torch.Tensor, member_ok: torch.Tensor, n_channels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each block's sorted union of counted neighbours ``(B, G, U)`` (``n_channels``-padded to
    the widest block) and where each member's neighbour sits in it ``(B, G, m * S)``."""
    C = n_channels
    candidates = torch.where(member_ok, member_nb, C).sort(dim=-1).values
    repeated = torch.zeros_like(candidates, dtype=torch.bool)
    repeated[..., 1:] = candidates[..., 1:] == candidates[..., :-1]
    candidates = torch.where(repeated, C, candidates).sort(dim=-1).values
    n_keys = max(1, int((candidates < C).sum(dim=-1).max()))
    keys = candidates[..., :n_keys]  # sorted, C-padded
    position = torch.searchsorted(keys.contiguous(), member_nb.contiguous())
    return keys, position.clamp_max(n_keys - 1)


def _block_plan(
    positions_m: torch.Tensor, valid: torch.Tensor, neighbours: torch.Tensor,
    counted: torch.Tensor, block_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query blocks, their key unions, per-query key masks and each channel's slot."""
    B, C, _ = neighbours.shape
    order = spatial_order(positions_m, valid)
    G = math.ceil(C / block_size)
    members = torch.cat([order, order[:, -1:].expand(B, G * block_size - C)], dim=1)
    slot = torch.empty_like(order)
    slot.scatter_(1, order, torch.arange(C, device=order.device).expand(B, C))
    members = members.view(B, G, block_size)
    # union of the counted neighbours of each block's members; C marks "no key"
    member_nb = torch.gather(neighbours, 1, members.view(B, -1, 1).expand(-1, -1,
                             neighbours.shape[-1])).view(B, G, -1)
    member_ok = torch.gather(counted, 1, members.view(B, -1, 1).expand(-1, -1,
                             counted.shape[-1])).view(B, G, -1)
    if torch.compiler.is_exporting():
        # an exported program has fixed shapes: every block takes all C channels as keys, in
        # channel order; a key that is none of a query's neighbours gets zero attention weight
        # (key_valid False), so the result is the same, at the cost of dense attention
        keys = torch.arange(C, device=valid.device).expand(B, G, C)
        position = member_nb
    else:
        keys, position = _key_union(member_nb, member_ok, C)
    # mark each member's own neighbours among its block's keys
    hits = torch.zeros(B, G, block_size, keys.shape[-1], dtype=torch.int32, device=valid.device)
    key_valid = hits.scatter_add_(-1, position.view(B, G, block_size, -1),
                                  member_ok.view(B, G, block_size, -1).int()) > 0
    return members, keys.clamp_max(C - 1), key_valid, slot


def build_spatial_context(
    positions_m: torch.Tensor,
    valid: torch.Tensor,
    *,
    head_radius_m: float,
    n_rbf: int,
    knn_k: int,
    dense_max_channels: int,
    block_size: int = 32,
) -> SpatialContext:
    """Distances, RBF features and, for ``C > dense_max_channels``, the blocked kNN plan.

    ``positions_m (B, C, 3)`` must be finite (invalid channels may hold anything finite).
    """
    with torch.no_grad():
        B, C, _ = positions_m.shape
        distance = torch.cdist(positions_m, positions_m, compute_mode=EXACT) / head_radius_m
        if dense_max_channels >= C:
            key_valid = valid[:, None, :].expand(B, C, C)
            return SpatialContext(valid=valid, rbf=rbf_expand(distance, n_rbf, 2.0),
                                  key_valid=key_valid)
        neighbours, counted = _nearest(distance, valid, knn_k, dense_max_channels)
        members, keys, key_valid, slot = _block_plan(positions_m, valid, neighbours, counted,
                                                     min(block_size, C))
        G, m = members.shape[1:]
        member_pos = positions_m.gather(1, members.view(B, -1, 1).expand(-1, -1, 3))
        key_pos = positions_m.gather(1, keys.view(B, -1, 1).expand(-1, -1, 3))
        block_distance = torch.cdist(member_pos.view(B * G, m, 3),
                                     key_pos.view(B * G, -1, 3), compute_mode=EXACT) / head_radius_m
        rbf = rbf_expand(block_distance.view(B, G, m, -1), n_rbf, 2.0)
    return SpatialContext(valid=valid, rbf=rbf, key_valid=key_valid, neighbours=neighbours,
                          members=members, keys=keys, slot=slot)
