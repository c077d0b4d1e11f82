"""Spatially guided attention: spatial (across electrodes) and temporal (across patches) blocks.

Tokens are ``(B, C, P, D)``. Spatial attention mixes the C channels of one patch with a learned
per-head bias of inter-electrode distance; dense for small montages, restricted to the k nearest
electrodes (keys/values gathered, cost O(P·C·k)) for dense ones. Temporal attention mixes the
P patches of one channel. Cost per layer O(P·C² + C·P²) dense, O(P·C·k + C·P²) sparse.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass
class SpatialContext:
    """Geometry shared by every spatial-attention layer of one forward pass.

    ``neighbours`` is None for dense attention; otherwise ``(B, C, k)`` indices of each channel's
    k nearest valid channels. ``rbf`` is the RBF-expanded distance to each key, ``(B, C, S, R)``
    with S = C (dense) or k (sparse); ``key_valid (B, C, S)`` is False for keys that must not be
    attended (padding, NaN coordinates, unfilled neighbour slots).
    """

    valid: torch.Tensor
    neighbours: torch.Tensor | None
    rbf: torch.Tensor
    key_valid: torch.Tensor


def rbf_expand(distance: torch.Tensor, n_rbf: int, max_distance: float) -> torch.Tensor:
    """Expand distances ``(...)`` into ``n_rbf`` Gaussian bumps evenly spaced on [0, max]."""
    centres = torch.linspace(0.0, max_distance, n_rbf, device=distance.device, dtype=distance.dtype)
    width = max_distance / (n_rbf - 1)
    return torch.exp(-(((distance[..., None] - centres) / width) ** 2))


def build_spatial_context(
    positions_m: torch.Tensor,
    valid: torch.Tensor,
    *,
    head_radius_m: float,
    n_rbf: int,
    knn_k: int,
    dense_max_channels: int,
) -> SpatialContext:
    """Distances, RBF features and (for C > ``dense_max_channels``) kNN indices of a batch.

    ``positions_m (B, C, 3)`` must be finite (invalid channels may hold anything finite).
    """
    with torch.no_grad():
        B, C, _ = positions_m.shape
        distance = torch.cdist(positions_m, positions_m) / head_radius_m  # (B, C, C)
        key_valid = valid[:, None, :].expand(B, C, C)
        neighbours = None
        if dense_max_channels < C:
            # per-sample rule, so padding never changes a sample's result: a sample with at
            # most dense_max_channels valid channels attends to all of them, a denser one to
            # its knn_k nearest (the first knn_k slots, topk being sorted)
            n_valid = valid.sum(dim=1)
            small = n_valid <= dense_max_channels
            widest_small = int(n_valid[small].max()) if bool(small.any()) else 0
            n_slots = min(C, max(knn_k, widest_small))
            ranked = distance.masked_fill(~key_valid, torch.finfo(distance.dtype).max)
            distance, neighbours = ranked.topk(n_slots, dim=-1, largest=False)
            key_valid = torch.gather(valid, 1, neighbours.flatten(1)).view(B, C, n_slots)
            allowed = torch.where(small, n_slots, knn_k)
            slot_ok = torch.arange(n_slots, device=valid.device) < allowed[:, None]
            key_valid = key_valid & slot_ok[:, None, :]
            distance = distance.masked_fill(~key_valid, 0.0)
        rbf = rbf_expand(distance, n_rbf, max_distance=2.0)
    return SpatialContext(valid=valid, neighbours=neighbours, rbf=rbf, key_valid=key_valid)


def _gather_channels(t: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """``t (B, C, F)``, ``neighbours (B, C, k)`` -> ``(B, C, k, F)`` rows of each neighbour."""
    B, C, k = neighbours.shape
    offsets = torch.arange(B, device=t.device)[:, None, None] * t.shape[1]
    return (
        t.reshape(-1, t.shape[-1])
        .index_select(0, (neighbours + offsets).flatten())
        .view(B, C, k, t.shape[-1])
    )


def _knn_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    neighbours: torch.Tensor,
    bias: torch.Tensor,
    num_heads: int,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Attention of each query channel to its gathered neighbours.

    ``q: (B, Cq, P, D)`` (a chunk of query channels), ``k, v: (B, C, P, D)``,
    ``neighbours: (B, Cq, k)`` indices into C, ``bias: (B, Cq, k, H)`` with masked keys at a
    large negative value. Returns ``(B, Cq, P, D)``. Each query meets its own k keys only once,
    so this is a gather plus batched dot products (memory-bound), not a matrix product.
    """
    B, Cq, P, D = q.shape
    n_nb = neighbours.shape[-1]
    H = num_heads
    hd = D // H
    k_nb = _gather_channels(k.reshape(B, -1, P * D), neighbours).view(B, Cq, n_nb, P, H, hd)
    v_nb = _gather_channels(v.reshape(B, -1, P * D), neighbours).view(B, Cq, n_nb, P, H, hd)
    scores = (q.view(B, Cq, 1, P, H, hd) * k_nb).sum(-1) * hd**-0.5  # (B, Cq, k, P, H)
    attn = (scores + bias[:, :, :, None, :]).softmax(dim=2)
    if dropout_p > 0:
        attn = F.dropout(attn, dropout_p)
    return (attn[..., None] * v_nb).sum(dim=2).reshape(B, Cq, P, D)


def knn_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    neighbours: torch.Tensor,
    bias: torch.Tensor,
    num_heads: int,
    *,
    dropout_p: float = 0.0,
    recompute: bool = True,
    max_gathered: int = 1 << 25,
) -> torch.Tensor:
    """Sparse spatial attention over the k nearest channels, in chunks of query channels.

    The gathered keys/values are k times larger than the tokens; with ``recompute`` each chunk
    is checkpointed (recomputed in backward), so memory stays bounded by ``max_gathered``
    elements per chunk instead of growing with every layer.
    """
    B, C, P, D = q.shape
    chunk = max(1, max_gathered // max(1, B * neighbours.shape[-1] * P * D))
    outputs = []
    for start in range(0, C, chunk):
        part = slice(start, start + chunk)
        args = (q[:, part], k, v, neighbours[:, part], bias[:, part], num_heads, dropout_p)
        if recompute and torch.is_grad_enabled():
            outputs.append(checkpoint(_knn_attention, *args, use_reentrant=False))
        else:
            outputs.append(_knn_attention(*args))
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)


class SpatialAttention(nn.Module):
    """Multi-head attention across channels within each patch, biased by electrode distance."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        n_rbf: int = 16,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        checkpoint_knn: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.distance_bias = nn.Linear(n_rbf, num_heads)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.checkpoint_knn = checkpoint_knn

    def _bias(self, ctx: SpatialContext, dtype: torch.dtype) -> torch.Tensor:
        """``(B, C, S, H)`` learned distance bias, masked keys at a large negative value."""
        bias = self.distance_bias(ctx.rbf.to(dtype))
        # finite (not -inf): a row without any valid key then stays finite instead of NaN
        return bias.masked_fill(~ctx.key_valid[..., None], torch.finfo(dtype).min / 2)

    def forward(self, x: torch.Tensor, ctx: SpatialContext) -> torch.Tensor:
        """``x (B, C, P, D)`` -> ``(B, C, P, D)``."""
        B, C, P, D = x.shape
        H = self.num_heads
        bias = self._bias(ctx, x.dtype)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if ctx.neighbours is None:
            # (B * P, H, C, hd); the bias (B, H, C, C) is repeated over patches
            q, k, v = (
                t.view(B, C, P, H, D // H).permute(0, 2, 3, 1, 4).reshape(B * P, H, C, D // H)
                for t in (q, k, v)
            )
            mask = bias.permute(0, 3, 1, 2)[:, None].expand(B, P, H, C, C).reshape(B * P, H, C, C)
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.attn_drop if self.training else 0.0
            )
            out = out.view(B, P, H, C, D // H).permute(0, 3, 1, 2, 4).reshape(B, C, P, D)
        else:
            out = knn_attention(
                q,
                k,
                v,
                ctx.neighbours,
                bias,
                H,
                recompute=self.checkpoint_knn,
                dropout_p=self.attn_drop if self.training else 0.0,
            )
        return self.proj_drop(self.proj(out))


class TemporalAttention(nn.Module):
    """Multi-head attention across the patches of each channel."""

    def __init__(
        self, dim: int, num_heads: int, *, attn_drop: float = 0.0, proj_drop: float = 0.0
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, C, P, D)`` -> ``(B, C, P, D)``."""
        B, C, P, D = x.shape
        H = self.num_heads
        q, k, v = (t.view(B, C, P, H, D // H).transpose(2, 3) for t in self.qkv(x).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.0
        )
        return self.proj_drop(self.proj(out.transpose(2, 3).reshape(B, C, P, D)))


class SpatioTemporalBlock(nn.Module):
    """Pre-norm residual block: spatial attention, then temporal attention, then an MLP."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        n_rbf: int = 16,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        checkpoint_knn: bool = True,
    ) -> None:
        super().__init__()
        self.norm_spatial = nn.LayerNorm(dim)
        self.spatial = SpatialAttention(
            dim,
            num_heads,
            n_rbf=n_rbf,
            attn_drop=attn_drop,
            proj_drop=drop,
            checkpoint_knn=checkpoint_knn,
        )
        self.norm_temporal = nn.LayerNorm(dim)
        self.temporal = TemporalAttention(dim, num_heads, attn_drop=attn_drop, proj_drop=drop)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, ctx: SpatialContext) -> torch.Tensor:
        """``x (B, C, P, D)`` -> ``(B, C, P, D)``."""
        x = x + self.drop_path(self.spatial(self.norm_spatial(x), ctx))
        x = x + self.drop_path(self.temporal(self.norm_temporal(x)))
        return x + self.drop_path(self.mlp(self.norm_mlp(x)))
