"""Masked pretraining: mask tokens, encode, decode the normalised signal of masked patches.

Read top-down: ``make_mask`` -> ``forward_encoder`` -> ``forward_decoder`` -> ``forward_loss``.
The mask token replaces a masked patch embedding *before* electrode, time and amplitude
embeddings are added, so the encoder knows where (which electrode, which patch) it must
reconstruct but not what was there.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import trunc_normal_
from torch import nn

from eegfm.models.attention import SpatioTemporalBlock
from eegfm.models.encoder import EEGEncoder, EncoderInputs, _init_weights
from eegfm.models.masking import MASK_KINDS, mixed_mask


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
        pred = self.forward_decoder(self.forward_encoder(inputs, mask), inputs)
        B, C, _ = inputs.x_norm.shape
        target = inputs.x_norm.reshape(B, C, inputs.n_patches, -1)
        return self.forward_loss(pred, target, mask, kind, inputs.valid)
