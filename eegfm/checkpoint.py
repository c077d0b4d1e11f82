"""Checkpoints: one file = state dict + model config + eegfm version (+ an optional extra dict).

Files are written to a temporary name and renamed, so a crash never leaves a half-written
checkpoint under the final name, and they are read with ``torch.load(weights_only=True)``:
no pickled code runs when loading a checkpoint from an untrusted source.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "eegfm-checkpoint"
FORMAT_VERSION = 1


def _version() -> str:
    """The installed eegfm version (imported lazily: ``eegfm`` resolves names on demand)."""
    from eegfm import __version__

    return __version__


def save_checkpoint(
    path: str | os.PathLike, model: nn.Module, *, extra: dict[str, Any] | None = None
) -> None:
    """Save an ``EEGEncoder`` or ``MaskedPretrainer`` (weights, config, version, ``extra``).

    ``extra`` must hold only plain Python values and tensors (it is read back with
    ``weights_only=True``), e.g. ``{"step": 1000, "dataset": "tuh"}``.
    """
    from eegfm.models.encoder import EEGEncoder
    from eegfm.models.pretrainer import MaskedPretrainer

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
        "eegfm_version": _version(),
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
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError) as err:
        raise ValueError(f"checkpoint {path} is unreadable (truncated, corrupt, or not saved "
                         f"by eegfm.checkpoint.save_checkpoint): {err}") from err
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise ValueError(f"{path} is a torch file but not an eegfm checkpoint (no "
                         f"format={FORMAT!r}); save models with eegfm.checkpoint.save_checkpoint")
    if checkpoint.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"checkpoint {path} has format_version {checkpoint['format_version']}, "
                         f"newer than this eegfm ({FORMAT_VERSION}): upgrade eegfm")
    missing = {"kind", "config", "state_dict"} - set(checkpoint)
    if missing:
        raise ValueError(f"checkpoint {path} lacks {sorted(missing)}: the file is damaged")
    return checkpoint


def model_from_checkpoint(checkpoint: dict[str, Any]) -> nn.Module:
    """Rebuild the saved module (encoder or pretrainer) and load its weights."""
    from eegfm.models.encoder import EEGEncoder
    from eegfm.models.pretrainer import MaskedPretrainer

    config = dict(checkpoint["config"])
    if checkpoint["kind"] == "pretrainer":
        model: nn.Module = MaskedPretrainer(EEGEncoder(**config.pop("encoder")), **config)
    elif checkpoint["kind"] == "encoder":
        model = EEGEncoder(**config)
    else:
        raise ValueError(f"unknown checkpoint kind {checkpoint['kind']!r}")
    model.load_state_dict(checkpoint["state_dict"])
    return model


def from_pretrained(path: str | os.PathLike) -> Any:
    """Load the :class:`~eegfm.models.EEGEncoder` of an encoder or pretrainer checkpoint."""
    checkpoint = load_checkpoint(path)
    if checkpoint["kind"] == "pretrainer":
        prefix = "encoder."
        checkpoint = {
            **checkpoint, "kind": "encoder", "config": checkpoint["config"]["encoder"],
            "state_dict": {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items()
                           if k.startswith(prefix)},
        }
    try:
        return model_from_checkpoint(checkpoint)
    except (TypeError, RuntimeError) as err:
        raise ValueError(f"checkpoint {path} does not match this eegfm's EEGEncoder "
                         f"(saved by eegfm {checkpoint.get('eegfm_version')}): {err}") from err
