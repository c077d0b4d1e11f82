"""EEGEncoder: coordinate-embedded patch tokens through a spatially guided transformer.

Any montage (1 to >1,132 channels, identified only by position), any window ``T`` that is a
multiple of ``patch_len`` with at most ``max_patches`` patches. Read top-down:
``prepare`` (validity, scaling, geometry) -> ``patch_embed`` -> ``encode`` -> tokens. The
encoder ends at its tokens: pooling and classification are :mod:`eegfm.heads`' (fine-tuning,
``eegfm predict`` and the braindecode adapter build one of its heads on the tokens).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from timm.layers import trunc_normal_
from torch import nn

from eegfm import __version__
from eegfm.heads import masked_mean_pool
from eegfm.model_folder import ModelFolderError, first_line, read_model, write_model_folder
from eegfm.models.attention import SpatioTemporalBlock
from eegfm.models.embedding import (
    INPUT_SCALINGS,
    ElectrodeEmbedding,
    PatchEmbedding,
    TemporalPositionEmbedding,
    amplitude_features,
    robust_scale,
)
from eegfm.models.neighbours import SpatialContext, build_spatial_context, init_distance_bias

# Encoders of earlier releases carried a timm-style classifier (``fc_norm`` LayerNorm + ``head``
# Linear, sized by the ``num_classes`` option) that only the braindecode adapter trained. It
# moved to eegfm.heads, so folders and checkpoint files saved with it still load: the option
# and the weights are dropped (fine-tuning never used them; the adapter maps its own).
LEGACY_OPTIONS = ("num_classes",)
LEGACY_WEIGHTS = ("fc_norm.", "head.")


def encoder_options(architecture: dict[str, Any]) -> dict[str, Any]:
    """``EEGEncoder`` keyword arguments of a saved architecture (earlier releases' head
    options dropped)."""
    return {k: v for k, v in architecture.items() if k not in LEGACY_OPTIONS}


@dataclass
class EncoderInputs:
    """A batch made ready for the encoder by :meth:`EEGEncoder.prepare`.

    ``valid (B, C)``: real channel with a finite coordinate. ``x_norm (B, C, T)``: robust-scaled
    signal (zeros on invalid channels), the units of masked-pretraining targets.
    ``center``/``scale (B, C)`` µV undo the scaling. ``electrode (B, C, D)``: position embedding.
    """

    x_norm: torch.Tensor
    center: torch.Tensor
    scale: torch.Tensor
    valid: torch.Tensor
    electrode: torch.Tensor
    spatial: SpatialContext
    n_patches: int


MODEL_CARD = """---
{{ card_data }}
---

# eegfm encoder

A spatially guided EEG transformer whose electrode embedding is computed from 3-D electrode
positions, so it reads any montage. `config.json` holds the architecture and the input it
expects (`preprocessing`: sampling rate, units, window); `model.safetensors` the weights.

```python
import eegfm
encoder = eegfm.from_pretrained("THIS_FOLDER_OR_HUB_ID")
```
"""


class EEGEncoder(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="eegfm",
    tags=["eeg", "eegfm", "foundation-model"],
    license="bsd-3-clause",
    model_card_template=MODEL_CARD,
):
    """Spatially guided EEG transformer over per-channel patch tokens (see docs/models.md).

    ``save_pretrained(folder)`` writes a model folder (``config.json`` + ``model.safetensors``,
    :mod:`eegfm.model_folder`); ``EEGEncoder.from_pretrained(folder_or_hub_id)`` reads it back,
    and ``push_to_hub`` (huggingface_hub's mixin) shares it.
    """

    def __init__(
        self,
        *,
        embed_dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        patch_len: int = 200,
        sfreq: float = 200.0,
        max_patches: int = 64,
        head_radius_m: float = 0.095,
        n_fourier: int = 6,
        n_rbf: int = 16,
        knn_k: int = 32,
        dense_max_channels: int = 64,
        knn_block: int = 32,
        conv_channels: int = 8,
        conv_kernel: int = 25,
        conv_stride: int = 10,
        amplitude_embedding: bool = True,
        scale_floor_uv: float = 0.1,
        clip: float = 20.0,
        input_scaling: str = "channel",
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        knn_recompute_above: int = 1 << 24,
    ) -> None:
        super().__init__()
        self._config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        if knn_k < 1:
            raise ValueError(f"knn_k={knn_k} must be >= 1")
        if input_scaling not in INPUT_SCALINGS:
            raise ValueError(f"input_scaling={input_scaling!r}: choose one of " + "; ".join(
                f"'{name}' ({text})" for name, text in INPUT_SCALINGS.items()))
        self.embed_dim = embed_dim
        self.patch_len = patch_len
        self.sfreq = float(sfreq)
        self.max_patches = max_patches
        self.head_radius_m = head_radius_m
        self.n_rbf = n_rbf
        self.knn_k = knn_k
        self.dense_max_channels = dense_max_channels
        self.knn_block = knn_block
        self.scale_floor_uv = scale_floor_uv
        self.clip = clip
        self.input_scaling = input_scaling

        self.patch_embed = PatchEmbedding(
            patch_len,
            embed_dim,
            conv_channels=conv_channels,
            conv_kernel=conv_kernel,
            conv_stride=conv_stride,
        )
        self.electrode_embed = ElectrodeEmbedding(
            embed_dim, head_radius_m=head_radius_m, n_freqs=n_fourier
        )
        self.time_embed = TemporalPositionEmbedding(max_patches, embed_dim)
        self.amplitude_embed = nn.Linear(1, embed_dim) if amplitude_embedding else None
        self.pos_drop = nn.Dropout(drop_rate)
        drop_paths = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            SpatioTemporalBlock(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                n_rbf=n_rbf,
                drop=drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=dp,
                knn_recompute_above=knn_recompute_above,
            )
            for dp in drop_paths
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.apply(_init_weights)
        for block in self.blocks:
            init_distance_bias(block.spatial.distance_bias)
        self.register_load_state_dict_pre_hook(_drop_legacy_weights)
        # what the input must be; fine-tuning adds its window, alignment and class names
        self.preprocessing: dict[str, Any] = {
            "sfreq": self.sfreq,
            "input_unit": "uV",
            "coords": "metres, MNE head frame",
            "max_window_s": max_patches * patch_len / self.sfreq,
            "scaling": f"inside the encoder: {INPUT_SCALINGS[input_scaling]}",
        }

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        half: bool | None = False,
        extra: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> str | None:
        """Write a model folder; ``half=True`` stores float16 weights (``None``: above 10 MB),
        ``extra`` plain JSON values kept in ``config.json`` (provenance: steps, data...).

        Other keyword arguments are huggingface_hub's (``push_to_hub``, ``repo_id``...).
        """
        self._save_options = {"half": half, "extra": extra}
        try:
            return super().save_pretrained(save_directory, **kwargs)
        finally:
            del self._save_options

    def _save_pretrained(self, save_directory: Path) -> None:
        """Write this encoder's model folder (called by the mixin's ``save_pretrained``)."""
        options = getattr(self, "_save_options", {})
        write_model_folder(
            save_directory, kind="encoder", architecture=self.config,
            state_dict=self.state_dict(), preprocessing=self.preprocessing,
            half=options.get("half", False), extra=options.get("extra"),
            eegfm_version=__version__,
        )  # fmt: skip

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, **hub_kwargs: Any) -> EEGEncoder:
        """The encoder of a saved model: a model folder, a Hub id, or an earlier release's
        single file (of a fine-tuned model or a pretrainer: its encoder).

        ``hub_kwargs`` go to ``huggingface_hub.hf_hub_download`` (``revision``, ``token``...).
        """
        config, state = read_model(source, **hub_kwargs)
        if config["kind"] == "finetuned":
            prefix = "encoder."
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            model = cls(**encoder_options(config["architecture"]))
            model.load_state_dict(state)
        except (TypeError, ValueError, RuntimeError) as error:
            first = first_line(error)
            raise ModelFolderError(
                f"model folder {source} does not rebuild with this eegfm's EEGEncoder (written "
                f"by eegfm {config.get('eegfm_version') or '?'}): {first}"
            ) from error
        model.preprocessing.update(config.get("preprocessing") or {})
        return model

    @property
    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this model: ``EEGEncoder(**model.config)``."""
        return dict(self._config)

    def valid_channel_mask(
        self, coords: torch.Tensor, channel_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(B, C)`` bool: a real channel (``channel_mask``) whose coordinates are all finite."""
        valid = torch.isfinite(coords).all(dim=-1)
        return valid if channel_mask is None else valid & channel_mask.to(torch.bool)

    def prepare(
        self,
        x: torch.Tensor,
        coords: torch.Tensor,
        channel_mask: torch.Tensor | None = None,
        ref_coords: torch.Tensor | None = None,
    ) -> EncoderInputs:
        """Check shapes, scale the signal, embed electrodes and build the spatial geometry."""
        _check_inputs(x, coords, channel_mask, ref_coords, self.patch_len)
        coords = coords.to(x.dtype)
        ref_coords = None if ref_coords is None else ref_coords.to(x.dtype)
        valid = self.valid_channel_mask(coords, channel_mask)
        zeros = torch.zeros((), dtype=coords.dtype, device=coords.device)
        coords_m = torch.where(valid[..., None], coords, zeros)
        if ref_coords is None:
            bipolar = torch.zeros_like(valid)
            ref_m = coords_m
        else:
            bipolar = valid & torch.isfinite(ref_coords).all(dim=-1)
            ref_m = torch.where(bipolar[..., None], ref_coords, coords_m)
        x_norm, center, scale = robust_scale(
            x, valid, scale_floor_uv=self.scale_floor_uv, clip=self.clip, per=self.input_scaling
        )
        electrode = self.electrode_embed(coords_m, ref_m, bipolar)
        # a bipolar channel sits at the midpoint of its two electrodes for distances/neighbours
        positions = (coords_m + ref_m) / 2
        spatial = build_spatial_context(
            positions,
            valid,
            head_radius_m=self.head_radius_m,
            n_rbf=self.n_rbf,
            knn_k=self.knn_k,
            dense_max_channels=self.dense_max_channels,
            block_size=self.knn_block,
        )
        return EncoderInputs(
            x_norm,
            center,
            scale,
            valid,
            electrode,
            spatial,
            n_patches=x.shape[-1] // self.patch_len,
        )

    def encode(self, patch_tokens: torch.Tensor, inputs: EncoderInputs) -> torch.Tensor:
        """Add electrode/time/amplitude embeddings to ``(B, C, P, D)`` tokens and run the blocks.

        Output tokens of invalid channels are set to zero (defined, to be ignored).
        """
        tokens = (
            patch_tokens + inputs.electrode[:, :, None] + self.time_embed(patch_tokens.shape[2])
        )
        if self.amplitude_embed is not None:
            amplitude = amplitude_features(inputs.scale).to(tokens.dtype)
            tokens = tokens + self.amplitude_embed(amplitude)[:, :, None]
        tokens = self.pos_drop(tokens)
        for block in self.blocks:
            tokens = block(tokens, inputs.spatial)
        tokens = self.norm(tokens)
        return tokens * inputs.valid[:, :, None, None].to(tokens.dtype)

    def forward_features(
        self,
        x: torch.Tensor,
        coords: torch.Tensor,
        channel_mask: torch.Tensor | None = None,
        ref_coords: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x (B, C, T)`` µV, ``coords (B, C, 3)`` m -> tokens ``(B, C, P, D)``."""
        inputs = self.prepare(x, coords, channel_mask, ref_coords)
        return self.encode(self.patch_embed(inputs.x_norm), inputs)

    def forward(
        self,
        x: torch.Tensor,
        coords: torch.Tensor,
        channel_mask: torch.Tensor | None = None,
        ref_coords: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pooled features ``h (B, D)``: the tokens' mean over valid channels and all patches.

        The window's embedding, without parameters of its own (what an exported encoder
        outputs); a head from :mod:`eegfm.heads` reads :meth:`forward_features` instead.
        """
        tokens = self.forward_features(x, coords, channel_mask, ref_coords)
        return masked_mean_pool(tokens, self.valid_channel_mask(coords, channel_mask))


def _drop_legacy_weights(module: nn.Module, state_dict: dict[str, Any], prefix: str,
                         *_: Any) -> None:
    """Load-state-dict pre-hook: forget an earlier release's classifier weights (see
    ``LEGACY_WEIGHTS``), so its folders, files and Lightning checkpoints load strictly."""
    legacy = tuple(prefix + name for name in LEGACY_WEIGHTS)
    for key in [k for k in state_dict if k.startswith(legacy)]:
        del state_dict[key]


def _init_weights(module: nn.Module) -> None:
    """timm-style init: truncated normal (std 0.02) linear weights, zero biases."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def _check_inputs(
    x: torch.Tensor,
    coords: torch.Tensor,
    channel_mask: torch.Tensor | None,
    ref_coords: torch.Tensor | None,
    patch_len: int,
) -> None:
    """Raise a ValueError naming the argument whose shape does not fit ``x (B, C, T)``."""
    if x.ndim != 3:
        raise ValueError(f"x must be (batch, channels, times), got shape {tuple(x.shape)}")
    B, C, T = x.shape
    if T == 0 or T % patch_len:
        raise ValueError(
            f"window length {T} samples is not a positive multiple of "
            f"patch_len={patch_len}: crop or pad the window"
        )
    if tuple(coords.shape) != (B, C, 3):
        raise ValueError(f"coords must have shape {(B, C, 3)}, got {tuple(coords.shape)}")
    if ref_coords is not None and tuple(ref_coords.shape) != (B, C, 3):
        raise ValueError(f"ref_coords must have shape {(B, C, 3)}, got {tuple(ref_coords.shape)}")
    if channel_mask is not None and tuple(channel_mask.shape) != (B, C):
        raise ValueError(f"channel_mask must have shape {(B, C)}, got {tuple(channel_mask.shape)}")
