"""Token inputs: robust amplitude scaling, patch embedding, electrode and temporal embeddings.

Shapes: ``x: (B, C, T)`` µV, ``coords: (B, C, 3)`` metres (MNE head frame),
``tokens: (B, C, P, D)`` with ``P = T // patch_len``.
"""

from __future__ import annotations

import math

import torch
from timm.layers import Mlp, trunc_normal_
from torch import nn

MAD_TO_STD = 1.4826  # makes the median absolute deviation a consistent estimate of a Gaussian std
FIXED_SCALE_UV = 10.0  # `fixed`: about the median robust scale of eegmat and muse windows (7 µV)
# robust_scale's `per`, the encoder's input_scaling: each with what a model folder records of it
INPUT_SCALINGS = {
    "channel": "per channel and window, median / (1.4826 MAD)",
    "window": "per channel, median / (1.4826 MAD, the median over the window's channels)",
    "fixed": f"per channel, median / {FIXED_SCALE_UV:g} µV",
}


def robust_scale(
    x: torch.Tensor,
    valid: torch.Tensor,
    *,
    scale_floor_uv: float = 0.1,
    clip: float = 20.0,
    per: str = "channel",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Robust normalisation of a window: ``(x - median) / (1.4826 * MAD)``, clipped.

    Parameters
    ----------
    x : (B, C, T) signal in µV.
    valid : (B, C) bool; invalid channels (padding, NaN coordinates) come out as exact zeros.
    scale_floor_uv : lower bound on the scale: a flat channel gives zeros, not a blow-up.
    clip : normalised samples are clamped to ``[-clip, clip]`` so one artefact cannot dominate.
    per : ``"channel"``: each channel its own scale (the default); ``"window"``: one scale per
        window, the median of its valid channels' scales, so the channels' relative amplitudes
        survive; ``"fixed"``: every channel divided by ``FIXED_SCALE_UV`` (10 µV), so absolute
        amplitudes survive. The median is removed per channel in every case.

    Returns
    -------
    x_norm (B, C, T), center (B, C) µV, scale (B, C) µV. Statistics are computed without
    gradient: they are constants of the window, as the targets of masked pretraining are.
    """
    with torch.no_grad():
        x_safe = torch.where(valid[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))
        if per not in INPUT_SCALINGS:
            raise ValueError(f"input scaling per {per!r}: choose one of {list(INPUT_SCALINGS)}")
        center = x_safe.median(dim=-1).values
        if per == "fixed":
            scale = torch.full_like(center, FIXED_SCALE_UV)
        else:
            mad = (x_safe - center[..., None]).abs().median(dim=-1).values
            scale = MAD_TO_STD * mad
        if per == "window":
            nan = torch.full((), float("nan"), dtype=scale.dtype, device=scale.device)
            shared = torch.where(valid, scale, nan).nanmedian(dim=-1, keepdim=True).values
            scale = shared.expand_as(scale)
        scale = scale.clamp_min(scale_floor_uv)
        scale = torch.where(valid, scale, torch.ones_like(scale))
    x_norm = ((x_safe - center[..., None]) / scale[..., None]).clamp(-clip, clip)
    x_norm = torch.where(valid[..., None], x_norm, torch.zeros_like(x_norm))
    return x_norm, center, scale


def fourier_features(u: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """Map unit-scale positions ``u (..., 3)`` to ``[u, sin(pi 2^k u), cos(pi 2^k u)]_k``."""
    freqs = math.pi * 2.0 ** torch.arange(n_freqs, device=u.device, dtype=u.dtype)
    angles = (u[..., None] * freqs).flatten(-2)  # (..., 3 * n_freqs)
    return torch.cat([u, angles.sin(), angles.cos()], dim=-1)


class ElectrodeEmbedding(nn.Module):
    """Learnable ``MLP(fourier_features(coords / head_radius))``: channels known by position.

    A bipolar derivation ``a - b`` (``ref_coords`` finite) is embedded as ``e(a) - e(b)`` plus a
    learned "bipolar" vector: the antisymmetric part flips sign with the derivation, as the signal
    does, and the shared vector tells the model it is looking at a difference of two electrodes.
    """

    def __init__(
        self,
        embed_dim: int,
        *,
        head_radius_m: float = 0.095,
        n_freqs: int = 6,
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.head_radius_m = head_radius_m
        self.n_freqs = n_freqs
        in_features = 3 * (1 + 2 * n_freqs)
        self.mlp = Mlp(
            in_features, hidden_features=hidden_dim or 2 * embed_dim, out_features=embed_dim
        )
        self.bipolar = nn.Parameter(torch.zeros(embed_dim))
        trunc_normal_(self.bipolar, std=0.02)

    def embed_positions(self, coords_m: torch.Tensor) -> torch.Tensor:
        """Embed finite positions ``(..., 3)`` in metres to ``(..., D)``."""
        return self.mlp(fourier_features(coords_m / self.head_radius_m, self.n_freqs))

    def forward(
        self, coords_m: torch.Tensor, ref_coords_m: torch.Tensor, bipolar: torch.Tensor
    ) -> torch.Tensor:
        """Embed ``(B, C, 3)`` finite coordinates (+ finite ``ref_coords`` where ``bipolar``)."""
        embedding = self.embed_positions(coords_m)
        # computed for every channel rather than after asking `bipolar.any()`: the question
        # would stall the host on a GPU, and a bipolar vector with a (zero) gradient every step
        # lets DDP run without its unused-parameter search; the extra MLP pass is per channel,
        # not per token
        pair = embedding - self.embed_positions(ref_coords_m) + self.bipolar
        return torch.where(bipolar[..., None], pair, embedding)


class PatchEmbedding(nn.Module):
    """Cut each channel into patches of ``patch_len`` samples and map each to ``embed_dim``.

    A small temporal conv (``conv_channels`` filters, kernel ``conv_kernel``, stride
    ``conv_stride``, GELU) runs inside each patch (never across a patch boundary, so a masked
    patch leaks nothing into its neighbours' tokens); its flattened output plus the raw patch
    go through one linear layer.
    """

    def __init__(
        self,
        patch_len: int,
        embed_dim: int,
        *,
        conv_channels: int = 8,
        conv_kernel: int = 25,
        conv_stride: int = 10,
    ) -> None:
        super().__init__()
        if conv_kernel > patch_len:
            raise ValueError(f"conv_kernel={conv_kernel} must not exceed patch_len={patch_len}")
        self.patch_len = patch_len
        self.conv = nn.Conv1d(
            1, conv_channels, conv_kernel, stride=conv_stride, padding=conv_kernel // 2
        )
        self.act = nn.GELU()
        conv_len = (patch_len + 2 * (conv_kernel // 2) - conv_kernel) // conv_stride + 1
        self.proj = nn.Linear(conv_channels * conv_len + patch_len, embed_dim)

    def forward(self, x_norm: torch.Tensor) -> torch.Tensor:
        """``(B, C, T)`` normalised signal -> ``(B, C, P, D)`` patch tokens."""
        B, C, T = x_norm.shape
        P = T // self.patch_len
        patches = x_norm.reshape(B * C * P, 1, self.patch_len)
        conv = self.act(self.conv(patches)).flatten(1)
        tokens = self.proj(torch.cat([conv, patches.flatten(1)], dim=1))
        return tokens.reshape(B, C, P, -1)


class TemporalPositionEmbedding(nn.Module):
    """Learned embedding per patch index; windows of any ``P <= max_patches`` use the first P."""

    def __init__(self, max_patches: int, embed_dim: int) -> None:
        super().__init__()
        self.max_patches = max_patches
        self.weight = nn.Parameter(torch.zeros(max_patches, embed_dim))
        trunc_normal_(self.weight, std=0.02)

    def forward(self, n_patches: int) -> torch.Tensor:
        """Return ``(P, D)`` embeddings for the first ``n_patches`` positions."""
        if n_patches > self.max_patches:
            raise ValueError(
                f"window has {n_patches} patches but the model was built with "
                f"max_patches={self.max_patches}: use shorter windows or raise max_patches"
            )
        return self.weight[:n_patches]


def amplitude_features(scale_uv: torch.Tensor) -> torch.Tensor:
    """``(B, C)`` robust scale in µV -> ``(B, C, 1)`` centred log-amplitude (0 at 10 µV)."""
    return (torch.log10(scale_uv) - 1.0).clamp(-4.0, 4.0)[..., None]
