"""Masked pretraining: mask tokens, encode, decode the normalised signal of masked patches.

Read top-down: ``make_mask`` -> ``forward_encoder`` -> ``forward_decoder`` -> ``forward_loss``
(-> ``forward_targets``). The mask token replaces a masked patch embedding *before* electrode,
time and amplitude embeddings are added, so the encoder knows where (which electrode, which
patch) it must reconstruct but not what was there. Optional heads predict neuro-statistics of
the unmasked window from the encoder's tokens (``eegfm.models.targets``); they are
pretraining-only: exports and fine-tuning take ``encoder`` alone.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import trunc_normal_
from torch import nn

from eegfm.models.attention import SpatioTemporalBlock
from eegfm.models.encoder import EEGEncoder, EncoderInputs, _init_weights
from eegfm.models.masking import MASK_KINDS, mixed_mask
from eegfm.models.targets import (
    BANDPOWER_STATS,
    BANDS_HZ,
    CONNECTIVITY_BANDS,
    CONNECTIVITY_STATS,
    bandpower_features,
    connectivity_features,
    feature_stats,
    mean_baseline,
    pair_weight,
    weighted_mse,
)


class ConnectivityHead(nn.Module):
    """Low-rank bilinear read-out of channel pairs: ``pred_ij = <U h_i, U h_j> / sqrt(r) + b``.

    ``h_i`` is channel i's token averaged over patches; one ``U`` (``rank`` rows) and one bias
    per band. Symmetric by construction, and its cost grows with C·D·r, the pairs only in a
    product of rank r.
    """

    def __init__(self, dim: int, n_bands: int, rank: int) -> None:
        super().__init__()
        self.n_bands, self.rank = n_bands, rank
        self.norm = nn.LayerNorm(dim)
        # PyTorch's default init, not the encoder's std 0.02: a bilinear form's gradient scales
        # with U itself, so a near-zero start would sit at the saddle at U = 0
        self.proj = nn.Linear(dim, n_bands * rank)
        self.bias = nn.Parameter(torch.zeros(n_bands))

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``tokens (B, C, P, D)``, ``valid (B, C)`` -> ``(B, n_bands, C, C)``."""
        B, C, _, _ = tokens.shape
        channel = self.norm(tokens.mean(dim=2))  # invalid channels' tokens are zero
        u = self.proj(channel).reshape(B, C, self.n_bands, self.rank).transpose(1, 2)
        pred = u @ u.transpose(-1, -2) / self.rank**0.5 + self.bias[:, None, None]
        return pred * pair_weight(valid)


class MaskedPretrainer(nn.Module):
    """Wrap an :class:`EEGEncoder` with a mask token, a light decoder and the masked-token loss.

    Parameters
    ----------
    encoder : the encoder to pretrain (its ``patch_len`` sets the decoder output).
    mask_ratio : fraction of real tokens masked per sample.
    patch_weight, channel_weight, block_weight : shares of random-patch, whole-channel and
        spatial-block masking in the mix (see :func:`eegfm.models.masking.mixed_mask`).
    block_radius_m, block_span : spatial blocks: electrodes within this radius of a random
        centre, over all patches (``'all'``) or a random run of patches (``'random'``).
    decoder_depth : spatio-temporal decoder blocks (0, default: a linear read-out, as in
        LaBraM/CBraMod; the encoder already sees the mask tokens in place).
    decoder_dim, decoder_heads : decoder width (default: half the encoder's) and heads.
    spectrum_weight : weight of an extra loss on the amplitude spectrum of masked patches.
    bandpower_weight : weight of the band-power target (log power and log relative power per
        channel, patch and band, ``eegfm.models.targets``); 0 (default): no head, no cost.
    bandpower_tokens : tokens whose band power enters the loss: ``'all'`` valid tokens
        (default: visible tokens must hold their patch's spectrum, masked ones infer it) or
        ``'masked'`` only. Both halves are logged either way.
    connectivity_weight : weight of the alpha/beta amplitude-envelope correlation target
        between channels; 0 (default): no head, no cost.
    connectivity_rank : rank of the bilinear connectivity head.
    """

    def __init__(
        self,
        encoder: EEGEncoder,
        *,
        mask_ratio: float = 0.5,
        patch_weight: float = 1.0,
        channel_weight: float = 1.0,
        block_weight: float = 1.0,
        block_radius_m: float = 0.05,
        block_span: str = "all",
        decoder_depth: int = 0,
        decoder_dim: int | None = None,
        decoder_heads: int | None = None,
        spectrum_weight: float = 0.0,
        bandpower_weight: float = 0.0,
        bandpower_tokens: str = "all",
        connectivity_weight: float = 0.0,
        connectivity_rank: int = 16,
    ) -> None:
        super().__init__()
        self._options = {
            k: v for k, v in locals().items() if k not in ("self", "__class__", "encoder")
        }
        self.encoder = encoder
        self.mask_ratio = mask_ratio
        self.mask_weights = (patch_weight, channel_weight, block_weight)
        self.block_radius_m = block_radius_m
        self.block_span = block_span
        self.spectrum_weight = spectrum_weight
        dim = encoder.embed_dim
        self.mask_token = nn.Parameter(torch.zeros(dim))
        trunc_normal_(self.mask_token, std=0.02)
        decoder_dim = decoder_dim or max(dim // 2, 8)
        decoder_heads = decoder_heads or max(1, decoder_dim // 32)
        self.decoder_embed = nn.Linear(dim, decoder_dim) if decoder_depth else nn.Identity()
        self.decoder_blocks = nn.ModuleList(
            SpatioTemporalBlock(decoder_dim, decoder_heads, n_rbf=encoder.n_rbf)
            for _ in range(decoder_depth)
        )
        out_dim = decoder_dim if decoder_depth else dim
        self.decoder_norm = nn.LayerNorm(out_dim)
        self.decoder_pred = nn.Linear(out_dim, encoder.patch_len)
        for module in (
            self.decoder_embed,
            self.decoder_blocks,
            self.decoder_norm,
            self.decoder_pred,
        ):
            module.apply(_init_weights)
        self._build_target_heads(
            bandpower_weight, bandpower_tokens, connectivity_weight, connectivity_rank
        )

    def _build_target_heads(self, bandpower_weight: float, bandpower_tokens: str,
                            connectivity_weight: float, connectivity_rank: int) -> None:
        """Create only the heads whose weight is positive: a disabled target adds no parameter
        (old checkpoints load, DDP finds no unused one) and no computation."""
        for key, value in (("bandpower_weight", bandpower_weight),
                           ("connectivity_weight", connectivity_weight)):
            if not value >= 0:
                raise ValueError(f"pretrainer option {key} must be >= 0 (0 = off), got {value}")
        if bandpower_tokens not in ("all", "masked"):
            raise ValueError(f"pretrainer option bandpower_tokens must be 'all' or 'masked', "
                             f"got {bandpower_tokens!r}")
        self.bandpower_weight = bandpower_weight
        self.bandpower_tokens = bandpower_tokens
        self.connectivity_weight = connectivity_weight
        dim = self.encoder.embed_dim
        self.bandpower_head = None
        self.connectivity_head = None
        if bandpower_weight > 0:
            n_features = 2 * len(BANDS_HZ)  # log power and log relative power per band
            self.bandpower_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, n_features))
            self.bandpower_head.apply(_init_weights)
            # fixed constants, moved with the module; not in the state dict (nothing to load)
            self.register_buffer("bandpower_stats", feature_stats(BANDPOWER_STATS),
                                 persistent=False)
        if connectivity_weight > 0:
            self.connectivity_head = ConnectivityHead(dim, len(CONNECTIVITY_BANDS),
                                                      connectivity_rank)
            self.register_buffer("connectivity_stats", feature_stats(CONNECTIVITY_STATS),
                                 persistent=False)

    @property
    def config(self) -> dict[str, Any]:
        """``{"encoder": encoder config, **options}``: enough to rebuild the pretrainer."""
        return {"encoder": self.encoder.config, **self._options}

    def make_mask(
        self,
        coords: torch.Tensor,
        valid: torch.Tensor,
        n_patches: int,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mask, kind)`` of shape ``(B, C, P)``, drawn on the device of ``valid``.

        A ``generator``, if given, must be on that device; without one the device's global RNG
        is used.
        """
        return mixed_mask(  # NaN coordinates (padding) are zeroed inside
            coords,
            valid,
            n_patches,
            self.mask_ratio,
            weights=self.mask_weights,
            radius_m=self.block_radius_m,
            span=self.block_span,
            generator=generator,
        )

    def forward_encoder(self, inputs: EncoderInputs, mask: torch.Tensor) -> torch.Tensor:
        """Patch-embed, swap masked tokens for the mask token, encode: ``(B, C, P, D)``."""
        patches = self.encoder.patch_embed(inputs.x_norm)
        patches = torch.where(mask[..., None], self.mask_token.to(patches.dtype), patches)
        return self.encoder.encode(patches, inputs)

    def forward_decoder(self, tokens: torch.Tensor, inputs: EncoderInputs) -> torch.Tensor:
        """``(B, C, P, D)`` tokens -> ``(B, C, P, patch_len)`` predicted normalised signal."""
        hidden = self.decoder_embed(tokens)
        for block in self.decoder_blocks:
            hidden = block(hidden, inputs.spatial)
        return self.decoder_pred(self.decoder_norm(hidden))

    def forward_loss(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor,
        kind: torch.Tensor,
        valid: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """MSE over masked tokens (+ spectrum term), per-kind parts and the zero baseline."""
        weight = mask.to(pred.dtype)
        n_masked = weight.sum().clamp_min(1.0)
        token_mse = (pred - target).pow(2).mean(dim=-1)  # (B, C, P)
        loss_mse = (token_mse * weight).sum() / n_masked
        parts: dict[str, torch.Tensor] = {"loss_mse": loss_mse.detach()}
        parts["loss_zero"] = (target.pow(2).mean(dim=-1) * weight).sum() / n_masked
        detached = token_mse.detach()
        for name, code in MASK_KINDS.items():
            # masked sums, not a boolean index: no host sync per step on GPU; 0/0 = NaN marks
            # a kind absent from the batch, which the logging skips
            of_kind = (kind == code).to(detached.dtype)
            parts[f"loss_{name}"] = (detached * of_kind).sum() / of_kind.sum()
        loss = loss_mse
        if self.spectrum_weight > 0:
            spectrum = (
                (
                    torch.fft.rfft(pred.float(), dim=-1).abs()
                    - torch.fft.rfft(target.float(), dim=-1).abs()
                )
                .pow(2)
                .mean(dim=-1)
            )
            loss_spectrum = (spectrum * weight).sum() / n_masked / pred.shape[-1]
            parts["loss_spectrum"] = loss_spectrum.detach()
            loss = loss + self.spectrum_weight * loss_spectrum
        n_real = valid.to(pred.dtype).sum() * mask.shape[-1]
        parts["mask_ratio"] = weight.sum() / n_real.clamp_min(1.0)
        return loss, parts

    def forward(
        self,
        x: torch.Tensor,
        coords: torch.Tensor,
        channel_mask: torch.Tensor | None = None,
        ref_coords: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Masked-reconstruction loss of a batch and its parts (detached, for logging)."""
        inputs = self.encoder.prepare(x, coords, channel_mask, ref_coords)
        mask, kind = self.make_mask(coords, inputs.valid, inputs.n_patches, generator)
        tokens = self.forward_encoder(inputs, mask)
        pred = self.forward_decoder(tokens, inputs)
        B, C, _ = inputs.x_norm.shape
        target = inputs.x_norm.reshape(B, C, inputs.n_patches, -1)
        loss, parts = self.forward_loss(pred, target, mask, kind, inputs.valid)
        if self.bandpower_head is None and self.connectivity_head is None:
            return loss, parts
        target_loss, target_parts = self.forward_targets(x, tokens, mask, inputs.valid)
        return loss + target_loss, {**parts, **target_parts}

    def forward_targets(
        self,
        x: torch.Tensor,
        tokens: torch.Tensor,
        mask: torch.Tensor,
        valid: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted losses of the neuro-statistics heads, with their parts and baselines.

        Targets come from the unmasked window ``x (B, C, T)`` µV; ``tokens (B, C, P, D)``,
        ``mask (B, C, P)``. Each ``loss_<target>_mean`` is the loss of predicting every feature's
        batch mean over the same entries (its variance): a head that learned nothing scores it.
        """
        sfreq_hz, patch_len = float(self.encoder.sfreq), int(self.encoder.patch_len)
        loss = tokens.new_zeros((), dtype=torch.float32)
        parts: dict[str, torch.Tensor] = {}
        # targets are constants of the window: float32, no graph, whatever the autocast
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            bandpower = None if self.bandpower_head is None else bandpower_features(
                x, valid, self.bandpower_stats, sfreq_hz=sfreq_hz, patch_len=patch_len)
            connectivity = None if self.connectivity_head is None else connectivity_features(
                x, valid, self.connectivity_stats, sfreq_hz=sfreq_hz)
        if bandpower is not None:
            pred = self.bandpower_head(tokens).float()  # (B, C, P, 10)
            real = valid[:, :, None].expand_as(mask)
            masked = (real & mask).float()[..., None]
            visible = (real & ~mask).float()[..., None]
            used = masked if self.bandpower_tokens == "masked" else masked + visible
            loss_bandpower = weighted_mse(pred, bandpower, used)
            loss = loss + self.bandpower_weight * loss_bandpower
            parts["loss_bandpower"] = loss_bandpower.detach()
            parts["loss_bandpower_mean"] = mean_baseline(bandpower, used, dims=(0, 1, 2))
            detached = pred.detach()
            # 0/0 = NaN when no token of the batch is masked, which the logging skips
            for name, weight in (("masked", masked), ("visible", visible)):
                error = ((detached - bandpower).square() * weight).sum()
                parts[f"loss_bandpower_{name}"] = error / (weight.sum() * detached.shape[-1])
        if connectivity is not None:
            pred = self.connectivity_head(tokens, valid).float()  # (B, n_bands, C, C)
            pairs = pair_weight(valid)
            loss_connectivity = weighted_mse(pred, connectivity, pairs)
            loss = loss + self.connectivity_weight * loss_connectivity
            parts["loss_connectivity"] = loss_connectivity.detach()
            parts["loss_connectivity_mean"] = mean_baseline(connectivity, pairs, dims=(0, 2, 3))
        return loss, parts
