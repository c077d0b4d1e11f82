"""Saved models: the encoder's files and folders, and the fine-tuned model's folder.

Encoder checkpoints: one file = state dict + model config + eegfm version (+ an optional extra
dict), the previous release's format, still written by ``save_checkpoint``; fine-tuned models:
a model folder (:func:`save_finetuned`, :func:`load_finetuned`) that ``eegfm predict`` and
``eegfm export`` read.

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
from eegfm.heads import create_head
from eegfm.model_folder import CHECKPOINT_FORMAT as FORMAT
from eegfm.model_folder import CHECKPOINT_VERSION as FORMAT_VERSION
from eegfm.model_folder import (
    ModelFolderError,
    first_line,
    read_checkpoint_file,
    read_model,
    write_model_folder,
)
from eegfm.models.classifier import EncoderClassifier
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


# ------------------------------------------------------------------- fine-tuned models
def save_finetuned(path: str | os.PathLike, model: EncoderClassifier, *, class_names: list[str],
                   window_s: float, stride_s: float, sfreq: float, prep_config: dict,
                   align: str = "none", extra: dict | None = None) -> Path:
    """Write a fine-tuned model folder (config.json + model.safetensors) that
    :func:`load_finetuned` rebuilds; weights stay float32, so predictions are unchanged."""
    preprocessing = {
        **model.encoder.preprocessing,
        "sfreq": float(sfreq), "window_s": float(window_s), "stride_s": float(stride_s),
        "align": str(align),  # subject alignment the model was trained with (predict repeats it)
        "class_names": list(class_names), "prep_config": prep_config,
    }
    state = {**{f"encoder.{k}": v for k, v in model.encoder.state_dict().items()},
             **{f"head.{k}": v for k, v in model.head.state_dict().items()}}
    return write_model_folder(
        path, kind="finetuned", architecture=model.encoder.config, state_dict=state,
        head={**model.head.config, "frozen": bool(model.frozen)}, preprocessing=preprocessing,
        extra=extra, eegfm_version=__version__,
    )  # fmt: skip


def load_finetuned(path: str | os.PathLike) -> tuple[EncoderClassifier, dict[str, Any]]:
    """Rebuild a fine-tuned model (a folder, or an earlier release's ``model_<name>.pt``);
    returns (model in eval mode, metadata: class names, window, stride, rate, alignment...).

    A model that cannot be read or does not rebuild raises a one-line ``ValueError`` naming it.
    """
    if not Path(path).exists():
        raise FileNotFoundError(f"--model {path}: no such fine-tuned model (a folder written "
                                "by `eegfm finetune`)")
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise ValueError(f"--model {path}: the file is empty (0 bytes); was it copied or saved "
                         "in full?")
    try:
        config, state = read_model(path)
    except ModelFolderError as error:
        raise ValueError(f"--model {error}") from error
    if config["kind"] != "finetuned":
        raise ValueError(f"--model {path}: an encoder, not a fine-tuned model (fine-tune it "
                         "with `eegfm finetune --checkpoint`)")
    head_config = dict(config["head"] or {})
    frozen = bool(head_config.pop("frozen", True))
    try:
        encoder = EEGEncoder(**encoder_options(config["architecture"]))
        encoder.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("encoder.")})
        head = create_head(**head_config)
        head.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")})
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        first = first_line(error)
        raise ValueError(f"--model {path}: does not rebuild with this eegfm (damaged, or written "
                         f"by another version): {type(error).__name__}: {first}") from error
    encoder.preprocessing.update(config["preprocessing"])
    model = EncoderClassifier(encoder, head, frozen=True).eval()
    meta = {**config["preprocessing"], "frozen": frozen, "encoder_config": config["architecture"],
            "head_config": head_config, "extra": config["extra"],
            "eegfm_version": config["eegfm_version"]}
    meta.setdefault("align", "none")  # files written before alignment existed
    return model, meta
