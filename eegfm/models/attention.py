"""Spatially guided attention: spatial (across electrodes) and temporal (across patches) blocks.

Tokens are ``(B, C, P, D)``. Spatial attention mixes the C channels of one patch with a learned
per-head bias of inter-electrode distance; dense for small montages, restricted to each
channel's k nearest electrodes for dense ones (keys gathered per block of nearby queries,
cost O(P·C·U) with U a few times k, see :mod:`eegfm.models.neighbours`). Temporal attention
mixes the P patches of one channel. Cost per layer O(P·C² + C·P²) dense, O(P·C·k + C·P²) sparse.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import nn
from torch.utils.checkpoint import checkpoint

from eegfm.models.neighbours import SpatialContext


def _blocked_knn_attention(
    qkv: torch.Tensor, members: torch.Tensor, keys: torch.Tensor, slot: torch.Tensor,
    bias: torch.Tensor, num_heads: int, dropout_p: float,
) -> torch.Tensor:
    """Exact kNN attention, one block of nearby queries at a time.

    ``qkv: (B, C, P, 3D)``; ``members (B, G, m)`` query channels of each block; ``keys (B, G, U)``
    the union of their neighbours; ``slot (B, C)`` each channel's place in the ``G * m`` block
    order; ``bias (B, G, m, U, H)`` with non-neighbours at a large negative value.
    Returns ``(B, C, P, D)``.

    Heads are laid out ``(P, H, B * C, hd)`` once, so gathering a block's queries and keys is a
    plain row selection and the scores are batched ``(m, hd) @ (hd, U)`` products. Written
    out rather than through SDPA: on CPU its math path adds NaN-guard passes over every score.
    """
    B, C, P, D3 = qkv.shape
    D = D3 // 3
    H = num_heads
    hd = D // H
    G, m = members.shape[1:]
    U = keys.shape[-1]
    heads = qkv.view(B, C, P, 3, H, hd).permute(3, 2, 4, 0, 1, 5).reshape(3, P, H, B * C, hd)
    offsets = torch.arange(B, device=qkv.device)[:, None] * C
    q = heads[0].index_select(2, (members.view(B, -1) + offsets).flatten())
    key_rows = (keys.view(B, -1) + offsets).flatten()
    k = heads[1].index_select(2, key_rows).view(P, H, B, G, U, hd)
    v = heads[2].index_select(2, key_rows).view(P, H, B, G, U, hd)
    scores = (q.view(P, H, B, G, m, hd) * hd**-0.5) @ k.transpose(-1, -2)  # (P, H, B, G, m, U)
    attn = (scores + bias.permute(4, 0, 1, 2, 3)).softmax(dim=-1)
    if dropout_p > 0:
        attn = F.dropout(attn, dropout_p)
    out = (attn @ v).view(P, H, B * G * m, hd)
    slot_rows = (slot + torch.arange(B, device=qkv.device)[:, None] * (G * m)).flatten()
    out = out.index_select(2, slot_rows).view(P, H, B, C, hd)
    return out.permute(2, 3, 0, 1, 4).reshape(B, C, P, D)


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
        knn_recompute_above: int = 1 << 24,
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
        self.knn_recompute_above = knn_recompute_above

    def _bias(self, ctx: SpatialContext, dtype: torch.dtype) -> torch.Tensor:
        """Learned distance bias ``(..., queries, keys, H)``, non-keys at a large negative value."""
        bias = self.distance_bias(ctx.rbf.to(dtype)).to(dtype)
        # finite (not -inf): a row without any valid key then stays finite instead of NaN
        return bias.masked_fill(~ctx.key_valid[..., None], torch.finfo(dtype).min / 2)

    def forward(self, x: torch.Tensor, ctx: SpatialContext) -> torch.Tensor:
        """``x (B, C, P, D)`` -> ``(B, C, P, D)``."""
        B, C, P, D = x.shape
        H = self.num_heads
        dropout_p = self.attn_drop if self.training else 0.0
        qkv = self.qkv(x)
        bias = self._bias(ctx, qkv.dtype)  # the attention dtype (bf16 under autocast)
        if ctx.members is None:
            # (B * P, H, C, hd); the bias (B, H, C, C) is repeated over patches
            q, k, v = (t.view(B, C, P, H, D // H).permute(0, 2, 3, 1, 4).reshape(
                B * P, H, C, D // H) for t in qkv.chunk(3, dim=-1))
            mask = bias.permute(0, 3, 1, 2)[:, None].expand(B, P, H, C, C).reshape(
                B * P, H, C, C)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
            out = out.view(B, P, H, C, D // H).permute(0, 3, 1, 2, 4).reshape(B, C, P, D)
        else:
            args = (qkv, ctx.members, ctx.keys, ctx.slot, bias, H, dropout_p)
            n_scores = P * H * ctx.key_valid.numel()
            # grad mode first: an export (no grad) then never compares its symbolic size
            if torch.is_grad_enabled() and n_scores > self.knn_recompute_above:
                # very dense batches: recompute the gathered key blocks and scores in backward
                # rather than keep them for every layer (memory over time)
                out = checkpoint(_blocked_knn_attention, *args, use_reentrant=False)
            else:
                out = _blocked_knn_attention(*args)
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
        knn_recompute_above: int = 1 << 24,
    ) -> None:
        super().__init__()
        self.norm_spatial = nn.LayerNorm(dim)
        self.spatial = SpatialAttention(
            dim,
            num_heads,
            n_rbf=n_rbf,
            attn_drop=attn_drop,
            proj_drop=drop,
            knn_recompute_above=knn_recompute_above,
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
