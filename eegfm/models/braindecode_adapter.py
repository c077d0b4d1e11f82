"""braindecode adapter: an eegfm encoder behind braindecode's ``EEGModuleMixin`` contract.

Lets a user drop a (pretrained) eegfm encoder into ``braindecode.EEGClassifier`` or a MOABB
pipeline: ``EEGFMModule(n_outputs, n_chans, chs_info, n_times, input_window_seconds, sfreq,
checkpoint="pretrained.pt")``. Channel positions come from ``chs_info[i]["loc"][:3]`` (MNE head
frame, metres); names are never used. Inputs at another rate are resampled to the encoder's
rate inside ``forward``; a window that is not a whole number of patches is cropped at the end
(``window="crop"``, default) or padded by reflection (``window="pad"``).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from braindecode.models.base import EEGModuleMixin
from torch import nn

from eegfm.heads import create_head
from eegfm.models.encoder import EEGEncoder
from eegfm.models.registry import create_model
from eegfm.models.resample import resample


def positions_from_chs_info(chs_info: list[dict[str, Any]]) -> torch.Tensor:
    """``(C, 3)`` float32 positions from ``chs_info[i]["loc"][:3]``; unknown (0 or NaN) -> NaN."""
    coords = np.full((len(chs_info), 3), np.nan, dtype=np.float32)
    for i, ch in enumerate(chs_info):
        loc = np.asarray(ch.get("loc", [np.nan] * 3), dtype=np.float64)[:3]
        if loc.shape == (3,) and np.isfinite(loc).all() and np.abs(loc).sum() > 0:
            coords[i] = loc
    return torch.from_numpy(coords)


class EEGFMModule(EEGModuleMixin, nn.Module):
    """eegfm encoder + linear head with braindecode's signature and input ``(B, n_chans, n_times)``.

    The head is fine-tuning's ``create_head("linear", ...)`` on the encoder's tokens: masked
    mean over channels and patches, LayerNorm, Linear.

    Parameters
    ----------
    n_outputs, n_chans, chs_info, n_times, input_window_seconds, sfreq
        braindecode's signal arguments; ``chs_info`` (MNE ``info["chs"]``) is required because
        the model knows channels only by position.
    model_name : registry size used when no checkpoint is given (``eegfm_tiny`` ...).
    checkpoint : an eegfm model folder (or Hub id, or an older single-file checkpoint) whose
        encoder to start from; ``save_pretrained`` then records its architecture, not the path.
    model_overrides : extra ``EEGEncoder`` options for a fresh model.
    window : ``"crop"`` drops the last ``n % patch_len`` samples (after resampling);
        ``"pad"`` reflect-pads up to the next whole patch.
    input_scale : factor that converts the input to µV (1.0 for ``mne.Epochs`` fed to
        ``EEGClassifier``, which reads them in µV; 1e6 for data in volts).
    freeze_encoder : train only the head (linear probe).
    """

    # braindecode's key renaming on load: folders saved before the head moved to eegfm.heads
    # hold it inside the encoder (same LayerNorm + Linear, so they predict as before)
    mapping: ClassVar[dict[str, str]] = {
        "encoder.fc_norm.weight": "head.norm.weight",
        "encoder.fc_norm.bias": "head.norm.bias",
        "encoder.head.weight": "head.classifier.weight",
        "encoder.head.bias": "head.classifier.bias",
    }

    def __init__(
        self,
        n_outputs: int | None = None,
        n_chans: int | None = None,
        chs_info: list[dict[str, Any]] | None = None,
        n_times: int | None = None,
        input_window_seconds: float | None = None,
        sfreq: float | None = None,
        model_name: str = "eegfm_tiny",
        checkpoint: str | os.PathLike | None = None,
        model_overrides: dict[str, Any] | None = None,
        window: str = "crop",
        input_scale: float = 1.0,
        freeze_encoder: bool = False,
    ) -> None:
        super().__init__(n_outputs=n_outputs, n_chans=n_chans, chs_info=chs_info,
                         n_times=n_times, input_window_seconds=input_window_seconds,
                         sfreq=sfreq)
        if window not in ("crop", "pad"):
            raise ValueError(f"window must be 'crop' or 'pad', got {window!r}")
        if self._chs_info is None:
            raise ValueError("EEGFMModule needs chs_info (MNE info['chs']): eegfm identifies "
                             "channels by their positions chs_info[i]['loc'][:3]")
        coords = positions_from_chs_info(self.chs_info)
        if not torch.isfinite(coords).all(dim=1).any():
            raise ValueError("no channel in chs_info has a position (loc[:3] all zero/NaN): "
                             "set a montage on the data first (raw.set_montage(...))")
        if checkpoint is not None:
            self.encoder = EEGEncoder.from_pretrained(checkpoint)
            self._forget_checkpoint_path()
        else:
            self.encoder = create_model(model_name, **dict(model_overrides or {}))
        self.head = create_head("linear", self.encoder.embed_dim, self.n_outputs)
        if freeze_encoder:
            self.encoder.requires_grad_(False)
        self.window = window
        self.input_scale = input_scale
        self.register_buffer("coords", coords, persistent=False)

    def _forget_checkpoint_path(self) -> None:
        """Make ``save_pretrained`` record the loaded architecture instead of the path.

        The folder's ``model.safetensors`` holds every weight, so a config that names the
        architecture rebuilds the model anywhere; a local path would not exist elsewhere.
        """
        architecture = self.encoder.config
        for name in ("_hub_mixin_config", "_braindecode_init_kwargs"):
            captured = getattr(self, name, None)
            if isinstance(captured, dict):
                captured.update(checkpoint=None, model_overrides=architecture)

    def reset_head(self, n_outputs: int) -> None:
        """A fresh linear head for ``n_outputs`` (braindecode calls it when
        ``from_pretrained(..., n_outputs=K)`` asks for another number of outputs)."""
        if hasattr(self, "_set_n_outputs"):  # braindecode >= 1.8 keeps its configs in sync
            self._set_n_outputs(n_outputs)
        else:
            self._n_outputs = n_outputs
        device = next(self.encoder.parameters()).device
        self.head = create_head("linear", self.encoder.embed_dim, n_outputs).to(device)

    def _input_sfreq(self) -> float:
        """Rate of incoming data: the given ``sfreq``, else the encoder's own rate."""
        return float(self._sfreq) if self._sfreq is not None else self.encoder.sfreq

    def prepare_input(self, X: torch.Tensor) -> torch.Tensor:
        """``(B, n_chans, n_times)`` -> µV at the encoder rate, a whole number of patches."""
        x = X.float() * self.input_scale
        if self._input_sfreq() != self.encoder.sfreq:
            x = resample(x, self._input_sfreq(), self.encoder.sfreq)
        patch_len = self.encoder.patch_len
        extra = x.shape[-1] % patch_len
        if extra and self.window == "pad":
            n_pad = patch_len - extra
            x = F.pad(x, (0, n_pad), mode="reflect" if n_pad < x.shape[-1] else "replicate")
        elif extra:
            x = x[..., : x.shape[-1] - extra]
        if x.shape[-1] == 0:
            raise ValueError(f"window of {X.shape[-1]} samples is shorter than one patch "
                             f"({patch_len} samples at {self.encoder.sfreq} Hz): use window='pad'")
        return x

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``X (B, n_chans, n_times)`` -> logits ``(B, n_outputs)``."""
        x = self.prepare_input(X)
        coords = self.coords.to(x.dtype).expand(x.shape[0], -1, -1)
        tokens = self.encoder.forward_features(x, coords)
        return self.head(tokens, self.encoder.valid_channel_mask(coords))
