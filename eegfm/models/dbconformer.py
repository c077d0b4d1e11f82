"""DBConformer: dual-branch convolutional Transformer for EEG decoding, braindecode-compatible.

Reference: Z. Wang, H. Wang, T. Jia, X. He, S. Li and D. Wu, "DBConformer: Dual-Branch
Convolutional Transformer for EEG Decoding", IEEE J. Biomed. Health Inform. 30(5), 2026
(arXiv:2506.21140). Authors' code: https://github.com/wzwvv/DBConformer (PolyForm Noncommercial
licence). This file is an independent re-implementation of the architecture described there: no
code was copied; torch's ``nn.TransformerEncoderLayer`` replaces the hand-written attention.

Architecture (input ``(B, C, T)``):

* **T-Conformer** (temporal branch). Patch embedding: pointwise ``Conv1d`` mixing the ``C``
  channels into ``emb_size`` maps (no bias) + BatchNorm, a depthwise temporal ``Conv1d``
  ('same' padding, no bias) + BatchNorm, GELU, non-overlapping average pooling of one patch
  length, dropout -> ``P = T // patch`` time tokens ``(B, P, D)``; a learned positional embedding;
  a pre-LayerNorm Transformer encoder over the time tokens; mean over tokens -> ``(B, D)``.
* **S-Conformer** (spatial branch). Each channel separately: ``Conv1d(1, spatial_filters)``
  strided along time, ELU, global average over time, ``Linear(spatial_filters, D)`` -> one token
  per channel ``(B, C, D)``; a learned per-channel positional embedding; a Transformer encoder
  over the channel tokens.
* **Channel attention** (the paper's "lightweight channel attention module"): a score per channel
  token from ``Linear(D, D) -> tanh -> Linear(D, 1)``, softmax over channels, and the
  attention-weighted sum of the channel tokens -> ``(B, D)``.
* **Head**: concatenation ``(B, 2D)`` -> ``Linear(2D, 64)``-ELU-Dropout(0.5) ->
  ``Linear(64, 32)``-ELU-Dropout(0.3) -> ``Linear(32, n_outputs)`` (``final_layer``).

Defaults and where they come from (paths in the authors' repository, commit 02cf632):

* ``emb_size=40``, ``spatial_filters=16`` (``spa_dim``), ``temporal_depth=spatial_depth=2``:
  ``DBConformer_CO.py`` / ``DBConformer_CV.py`` / ``DBConformer_LOSO.py`` (depth 2 for most
  datasets; 4 or 6 for some larger ones in CO/LOSO).
* Pointwise + depthwise temporal stem with BatchNorm, GELU, average pooling over a patch, dropout
  0.5, truncated-normal(std 0.01) init of its convolutions: ``models/DBConformer.py`` (``Stem``,
  ``PatchEmbeddingTemporal``; ``kernel_size=63``, ``radix=1``).
* Spatial embedding ``Conv1d(1, 16, kernel 25, stride 5, padding 12)`` -> ELU -> global average ->
  ``Linear(16, 40)``: ``models/DBConformer.py`` (``PatchEmbeddingSpatial``).
* Transformer blocks: pre-LayerNorm, 10 heads, feed-forward expansion 4 with GELU, dropout 0.5 on
  the attention weights, inside the feed-forward and on both residual branches, no final norm:
  ``models/DBConformer.py`` (``TransformerEncoderBlock`` defaults).
* Learned positional embeddings initialised from N(0, 1) (``posemb_flag=True``), channel
  attention pooling (``chn_atten_flag=True``), no gated fusion (``gate_flag=False``), mean pooling
  of the temporal tokens, the 64-32 MLP head with dropouts 0.5/0.3: ``models/DBConformer.py``
  (``DBConformer``, ``ClassificationHead``) and the ``args`` set in ``DBConformer_*.py``.

Departures:

* Sizes in samples are expressed in seconds at the paper's 250 Hz and scaled to ``sfreq``
  (250 Hz is assumed when ``sfreq`` cannot be inferred, which reproduces the original sizes):
  temporal kernel 63 samples -> ``temporal_kernel_seconds=0.252`` (rounded up to odd), patch
  125 samples -> ``patch_seconds=0.5`` (the scripts use 128 samples at 512 Hz on two datasets),
  spatial kernel 25 -> ``spatial_kernel_seconds=0.1`` (odd), stride 5 ->
  ``spatial_stride_seconds=0.02``. The patch is capped at ``n_times`` so that at least one
  time token exists.
* The original drops the last sample before pooling (its windows had ``T = 1001``); here the
  pooling simply ignores the ``T mod patch`` trailing samples.
* Attention logits are scaled by ``1/sqrt(head_dim)`` (torch's standard) rather than the
  original's ``1/sqrt(emb_size)`` inherited from EEG Conformer.
* The last scoring layer of the channel attention has no bias: a constant added to every
  channel's score cancels in the softmax, so that bias would never receive a gradient.
* The channel attention is *not* a squeeze-and-excitation reweighting of the input channels:
  the authors' code pools the S-Conformer's channel tokens with learned attention weights (an
  ``SEBlock`` exists in ``models/DBConformer.py`` but is unused, marked "bad performance").
  This file follows the authors' code.
"""

from __future__ import annotations

from typing import Any

import torch
from braindecode.models.base import EEGModuleMixin
from torch import nn

PAPER_SFREQ = 250.0


def _samples(seconds: float, sfreq: float, odd: bool = False) -> int:
    """A duration in seconds as a number of samples at ``sfreq`` (at least 1, odd if asked)."""
    n = max(1, round(seconds * sfreq))
    return n + 1 if odd and n % 2 == 0 else n


def _transformer(emb_size: int, depth: int, num_heads: int, ff_expansion: int,
                 drop_prob: float) -> nn.TransformerEncoder:
    """A stack of ``depth`` pre-LayerNorm Transformer encoder layers on ``(B, N, D)`` tokens."""
    layer = nn.TransformerEncoderLayer(
        d_model=emb_size, nhead=num_heads, dim_feedforward=ff_expansion * emb_size,
        dropout=drop_prob, activation="gelu", batch_first=True, norm_first=True,
    )
    return nn.TransformerEncoder(layer, num_layers=depth, enable_nested_tensor=False)


class TemporalPatchEmbedding(nn.Module):
    """T-Conformer stem: channel mixing, depthwise temporal conv, patch pooling -> time tokens."""

    def __init__(self, n_chans: int, emb_size: int, kernel_size: int, patch_size: int,
                 drop_prob: float) -> None:
        super().__init__()
        self.pointwise = nn.Conv1d(n_chans, emb_size, kernel_size=1, bias=False)
        self.bn_pointwise = nn.BatchNorm1d(emb_size)
        self.depthwise = nn.Conv1d(emb_size, emb_size, kernel_size, padding=kernel_size // 2,
                                   groups=emb_size, bias=False)
        self.bn_depthwise = nn.BatchNorm1d(emb_size)
        self.activation = nn.GELU()
        self.pool = nn.AvgPool1d(patch_size, stride=patch_size)
        self.drop = nn.Dropout(drop_prob)
        for conv in (self.pointwise, self.depthwise):
            nn.init.trunc_normal_(conv.weight, std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T)`` -> ``(B, P, D)`` with ``P = T // patch_size``."""
        x = self.bn_pointwise(self.pointwise(x))  # (B, D, T)
        x = self.activation(self.bn_depthwise(self.depthwise(x)))  # (B, D, T)
        x = self.drop(self.pool(x))  # (B, D, P)
        return x.transpose(1, 2)  # (B, P, D)


class SpatialChannelEmbedding(nn.Module):
    """S-Conformer stem: the same small temporal CNN on every channel -> one token per channel."""

    def __init__(self, emb_size: int, n_filters: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, n_filters, kernel_size, stride=stride,
                              padding=kernel_size // 2)
        self.activation = nn.ELU()
        self.proj = nn.Linear(n_filters, emb_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T)`` -> ``(B, C, D)``."""
        batch, n_chans, n_times = x.shape
        x = x.reshape(batch * n_chans, 1, n_times)  # (B*C, 1, T)
        x = self.activation(self.conv(x))  # (B*C, F, T')
        x = self.proj(x.mean(dim=-1))  # (B*C, D)
        return x.reshape(batch, n_chans, -1)  # (B, C, D)


class ChannelAttentionPool(nn.Module):
    """Channel attention: softmax scores over channel tokens and their weighted sum."""

    def __init__(self, emb_size: int) -> None:
        super().__init__()
        self.score = nn.Sequential(
            nn.Linear(emb_size, emb_size), nn.Tanh(), nn.Linear(emb_size, 1, bias=False),
        )

    def weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, C, D)`` -> channel weights ``(B, C, 1)`` summing to 1 over ``C``."""
        return torch.softmax(self.score(tokens), dim=1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, C, D)`` -> ``(B, D)``."""
        return (self.weights(tokens) * tokens).sum(dim=1)


class DBConformer(EEGModuleMixin, nn.Module):
    """DBConformer (Wang et al., 2025): parallel temporal and spatial Conformers, fused.

    Input ``(B, n_chans, n_times)``, output logits ``(B, n_outputs)``. See the module docstring
    for the architecture and the provenance of every default.

    Parameters
    ----------
    emb_size : int
        Token dimension ``D`` of both branches (40 in the paper).
    temporal_depth : int
        Transformer layers of the temporal branch (2).
    spatial_depth : int
        Transformer layers of the spatial branch (2).
    num_heads : int
        Attention heads per layer (10); must divide ``emb_size``.
    ff_expansion : int
        Feed-forward width as a multiple of ``emb_size`` (4).
    spatial_filters : int
        Filters of the per-channel convolution of the spatial branch (16).
    temporal_kernel_seconds : float
        Depthwise temporal kernel of the temporal stem (63 samples at 250 Hz).
    patch_seconds : float
        Average-pooling window and stride, i.e. the length of one time token (125 at 250 Hz).
    spatial_kernel_seconds : float
        Kernel of the per-channel convolution (25 samples at 250 Hz).
    spatial_stride_seconds : float
        Stride of the per-channel convolution (5 samples at 250 Hz).
    drop_prob : float
        Dropout after the temporal patch pooling (0.5).
    att_drop_prob : float
        Dropout inside the Transformer layers (0.5).
    head_hidden : tuple of int
        Hidden widths of the classification MLP (64, 32).
    head_drop_probs : tuple of float
        Dropout after each hidden layer of the MLP (0.5, 0.3).
    pos_embedding : bool
        Add learned positional embeddings to the time and channel tokens (True).
    channel_attention : bool
        Pool the channel tokens with the channel attention (True) or a plain mean (False).
    """

    def __init__(
        self,
        n_outputs: int | None = None,
        n_chans: int | None = None,
        chs_info: list[dict[str, Any]] | None = None,
        n_times: int | None = None,
        input_window_seconds: float | None = None,
        sfreq: float | None = None,
        emb_size: int = 40,
        temporal_depth: int = 2,
        spatial_depth: int = 2,
        num_heads: int = 10,
        ff_expansion: int = 4,
        spatial_filters: int = 16,
        temporal_kernel_seconds: float = 0.252,
        patch_seconds: float = 0.5,
        spatial_kernel_seconds: float = 0.1,
        spatial_stride_seconds: float = 0.02,
        drop_prob: float = 0.5,
        att_drop_prob: float = 0.5,
        head_hidden: tuple[int, ...] = (64, 32),
        head_drop_probs: tuple[float, ...] = (0.5, 0.3),
        pos_embedding: bool = True,
        channel_attention: bool = True,
    ) -> None:
        super().__init__(n_outputs=n_outputs, n_chans=n_chans, chs_info=chs_info,
                         n_times=n_times, input_window_seconds=input_window_seconds,
                         sfreq=sfreq)
        del n_outputs, n_chans, chs_info, n_times, input_window_seconds, sfreq
        if emb_size % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide emb_size={emb_size}")
        if len(head_hidden) != len(head_drop_probs):
            raise ValueError("head_hidden and head_drop_probs must have the same length")
        try:
            rate = float(self.sfreq)
        except ValueError:  # neither sfreq nor input_window_seconds given: paper's rate
            rate = PAPER_SFREQ

        self.temporal_kernel = _samples(temporal_kernel_seconds, rate, odd=True)
        self.patch_size = min(_samples(patch_seconds, rate), self.n_times)
        self.spatial_kernel = _samples(spatial_kernel_seconds, rate, odd=True)
        self.spatial_stride = _samples(spatial_stride_seconds, rate)
        self.n_tokens = self.n_times // self.patch_size
        self.emb_size = emb_size
        self.use_channel_attention = channel_attention

        # Temporal branch (T-Conformer).
        self.temporal_embedding = TemporalPatchEmbedding(
            self.n_chans, emb_size, self.temporal_kernel, self.patch_size, drop_prob)
        self.temporal_transformer = _transformer(
            emb_size, temporal_depth, num_heads, ff_expansion, att_drop_prob)
        # Spatial branch (S-Conformer).
        self.spatial_embedding = SpatialChannelEmbedding(
            emb_size, spatial_filters, self.spatial_kernel, self.spatial_stride)
        self.spatial_transformer = _transformer(
            emb_size, spatial_depth, num_heads, ff_expansion, att_drop_prob)
        if pos_embedding:
            self.temporal_pos = nn.Parameter(torch.randn(1, self.n_tokens, emb_size))
            self.spatial_pos = nn.Parameter(torch.randn(1, self.n_chans, emb_size))
        else:
            self.register_parameter("temporal_pos", None)
            self.register_parameter("spatial_pos", None)
        self.channel_pool = ChannelAttentionPool(emb_size) if channel_attention else None

        # Classification head on the fused (B, 2D) features.
        layers: list[nn.Module] = []
        width = 2 * emb_size
        for hidden, p in zip(head_hidden, head_drop_probs, strict=True):
            layers += [nn.Linear(width, hidden), nn.ELU(), nn.Dropout(p)]
            width = hidden
        self.fc = nn.Sequential(*layers)
        self.final_layer = nn.Linear(width, self.n_outputs)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Fused features ``(B, 2 * emb_size)``: temporal mean ‖ attention-pooled channels."""
        tokens_t = self.temporal_embedding(x)  # (B, P, D)
        if tokens_t.shape[1] != self.n_tokens:
            raise ValueError(
                f"input of {x.shape[-1]} samples gives {tokens_t.shape[1]} time tokens; the "
                f"model was built for n_times={self.n_times} ({self.n_tokens} tokens)")
        tokens_s = self.spatial_embedding(x)  # (B, C, D)
        if self.temporal_pos is not None:
            tokens_t = tokens_t + self.temporal_pos  # (B, P, D)
            tokens_s = tokens_s + self.spatial_pos  # (B, C, D)
        tokens_t = self.temporal_transformer(tokens_t)  # (B, P, D)
        tokens_s = self.spatial_transformer(tokens_s)  # (B, C, D)
        pooled_t = tokens_t.mean(dim=1)  # (B, D)
        if self.channel_pool is not None:
            pooled_s = self.channel_pool(tokens_s)  # (B, D)
        else:
            pooled_s = tokens_s.mean(dim=1)  # (B, D)
        return torch.cat([pooled_t, pooled_s], dim=-1)  # (B, 2D)

    def forward(self, x: torch.Tensor,
                return_features: bool = False) -> torch.Tensor | dict[str, torch.Tensor]:
        """``(B, C, T)`` -> logits ``(B, n_outputs)``, or ``{"features": (B, 2D)}``."""
        if x.ndim == 4 and x.shape[1] == 1:  # tolerate (B, 1, C, T) as in the original code
            x = x.squeeze(1)
        feats = self.features(x)  # (B, 2D)
        if return_features:
            return {"features": feats}
        return self.final_layer(self.fc(feats))  # (B, n_outputs)

    def reset_head(self, n_outputs: int) -> None:
        """Replace the last linear layer for ``n_outputs`` classes (braindecode hub contract)."""
        if hasattr(self, "_set_n_outputs"):  # braindecode >= 1.8 keeps its configs in sync
            self._set_n_outputs(n_outputs)
        else:
            self._n_outputs = n_outputs
        width = self.final_layer.in_features
        self.final_layer = nn.Linear(width, n_outputs).to(self.final_layer.weight.device)


__all__ = ["DBConformer"]
