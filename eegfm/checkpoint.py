"""Checkpoints: one file = state dict + model config + eegfm version (+ an optional extra dict).

Files are written to a temporary name and renamed, so a crash never leaves a half-written
checkpoint under the final name, and they are read with ``torch.load(weights_only=True)``:
no pickled code runs when loading a checkpoint from an untrusted source.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from eegfm import __version__
from eegfm.model_folder import CHECKPOINT_FORMAT as FORMAT
from eegfm.model_folder import CHECKPOINT_VERSION as FORMAT_VERSION
from eegfm.model_folder import ModelFolderError, read_checkpoint_file
from eegfm.models.encoder import EEGEncoder, encoder_options
from eegfm.models.pretrainer import MaskedPretrainer
from eegfm.models.registry import list_models


def save_checkpoint(
    path: str | os.PathLike, model: nn.Module, *, extra: dict[str, Any] | None = None
) -> None:
    """Save an ``EEGEncoder`` or ``MaskedPretrainer`` (weights, config, version, ``extra``).

    ``extra`` must hold only plain Python values and tensors (it is read back with
    ``weights_only=True``), e.g. ``{"step": 1000, "dataset": "tuh"}``.
    """
    if isinstance(model, MaskedPretrainer):
        kind = "pretrainer"
    elif isinstance(model, EEGEncoder):
        kind = "encoder"
    else:
        raise TypeError(f"save_checkpoint expects an EEGEncoder or MaskedPretrainer, "
                        f"got {type(model).__name__}")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "eegfm_version": __version__,
        "config": model.config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": dict(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(payload, tmp)
        # refuse extras that could not be read back safely rather than writing a trap
        torch.load(tmp, map_location="cpu", weights_only=True)
    except Exception as err:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"could not write checkpoint {path}: {err} (extra must contain only "
                         "plain Python values and tensors)") from err
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint dict (``format, kind, eegfm_version, config, state_dict, extra``)."""
    return read_checkpoint_file(path)


def model_from_checkpoint(checkpoint: dict[str, Any]) -> nn.Module:
    """Rebuild the saved module (encoder or pretrainer) and load its weights."""
    config = dict(checkpoint["config"])
    if checkpoint["kind"] == "pretrainer":
        encoder = EEGEncoder(**encoder_options(config.pop("encoder")))
        model: nn.Module = MaskedPretrainer(encoder, **config)
    elif checkpoint["kind"] == "encoder":
        model = EEGEncoder(**encoder_options(config))
    else:
        raise ValueError(f"unknown checkpoint kind {checkpoint['kind']!r}")
    model.load_state_dict(checkpoint["state_dict"])
    return model


def from_pretrained(source: str | os.PathLike, **hub_kwargs: Any) -> Any:
    """The :class:`~eegfm.models.EEGEncoder` of a saved model: a model folder, a Hub id, or a
    single file of an earlier release (encoder, pretrainer or fine-tuned model)."""
    if str(source) in list_models() and not Path(source).exists():
        raise ModelFolderError(
            f"{source} is a model name, not saved weights: eegfm.create_model({str(source)!r}) "
            f"builds it with random weights, create_model({str(source)!r}, "
            "checkpoint_path=FOLDER) loads yours"
        )
    return EEGEncoder.from_pretrained(source, **hub_kwargs)
