"""Model folders: `config.json` + `model.safetensors`, the format eegfm models are shared in.

A folder holds one model: an encoder, or a fine-tuned encoder with its head. `config.json`
says what it is (`format`, `format_version`, `kind`), how to rebuild it (`architecture`, and
`head` for fine-tuned models), what input it expects (`preprocessing`: sampling rate, window,
scaling, alignment, class names) and where it came from (`eegfm_version`, `extra`); it holds no
absolute path, so a folder copied or pushed anywhere loads the same. The layout is the one
huggingface_hub's `PyTorchModelHubMixin` uses, so a folder pushed to the Hub is read back by
its id. This module knows no model class: `eegfm.models` and `eegfm.checkpoint` build models
from what it reads.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT = "eegfm-model"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
KINDS = ("encoder", "finetuned")
# single-file formats of earlier releases, still read (one release of compatibility)
CHECKPOINT_FORMAT, CHECKPOINT_VERSION = "eegfm-checkpoint", 1  # encoders and pretrainers
FINETUNED_FORMAT, FINETUNED_VERSION = "eegfm-finetuned", 1  # `eegfm finetune`'s model_*.pt
# released folders store floating-point weights as float16 above this size (issue #15's rule)
HALF_ABOVE_BYTES = 10 * 2**20


def first_line(error: BaseException) -> str:
    """The first line of an error's message (torch's run to paragraphs), or its type's name."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class ModelFolderError(ValueError):
    """A model folder (or hub id) that cannot be read: one line naming it and the problem."""


def is_model_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a local folder holding a `config.json`."""
    return Path(path).is_dir() and (Path(path) / CONFIG_NAME).is_file()


def write_model_folder(
    directory: str | os.PathLike,
    *,
    kind: str,
    architecture: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    preprocessing: dict[str, Any] | None = None,
    head: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    half: bool | None = False,
    eegfm_version: str = "",
) -> Path:
    """Write a model folder; `half=True` stores float weights as float16 (read back as
    float32), `half=None` does so only above 10 MB, the rule for released weights.

    Each file is written under a temporary name and renamed, weights first, so a folder whose
    `config.json` is present has its weights complete.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    tensors = {name: value.detach().to("cpu").contiguous().clone()
               for name, value in state_dict.items()}
    float_bytes = sum(t.numel() * t.element_size() for t in tensors.values()
                      if t.is_floating_point())
    if half is None:
        half = float_bytes > HALF_ABOVE_BYTES
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "eegfm_version": eegfm_version,
        "weights_dtype": "float16" if half else "float32",
        "architecture": dict(architecture),
        "head": dict(head) if head is not None else None,
        "preprocessing": dict(preprocessing or {}),
        "extra": dict(extra or {}),
    }
    try:
        text = json.dumps(config, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"model folder {directory}: config must hold plain JSON values "
                         f"({error})") from error
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights, config_path = directory / WEIGHTS_NAME, directory / CONFIG_NAME
    config_path.unlink(missing_ok=True)  # no config beside half-written weights
    save_file(tensors, weights.with_name(WEIGHTS_NAME + ".tmp"), metadata={"format": "pt"})
    os.replace(weights.with_name(WEIGHTS_NAME + ".tmp"), weights)
    config_path.with_name(CONFIG_NAME + ".tmp").write_text(text + "\n")
    os.replace(config_path.with_name(CONFIG_NAME + ".tmp"), config_path)
    return directory


def resolve_files(source: str | os.PathLike, **hub_kwargs: Any) -> tuple[Path, Path, str]:
    """Local paths of a folder's config and weights, downloading them for a hub id.

    Returns (config, weights, a name for messages). A string that is no local folder is taken
    as a Hub repository id; offline or unknown, the error names it.
    """
    path = Path(source)
    if path.is_dir():
        return path / CONFIG_NAME, path / WEIGHTS_NAME, str(path)
    if path.exists():
        raise ModelFolderError(f"{path} is a file, not a model folder (config.json + "
                               "model.safetensors); eegfm.from_pretrained reads old files")
    name = str(source)
    if path.is_absolute() or name.startswith(".") or len(path.parts) > 2:
        # a Hub id is "name" or "owner/name"; this can only be a local path
        raise FileNotFoundError(f"{name}: no such model folder or file")
    try:
        config = hf_hub_download(name, CONFIG_NAME, **hub_kwargs)
        weights = hf_hub_download(name, WEIGHTS_NAME, **hub_kwargs)
    except HFValidationError as error:
        raise ModelFolderError(f"{name}: no such folder, and not a Hugging Face Hub id "
                               f"({str(error).splitlines()[0]})") from error
    except LocalEntryNotFoundError as error:
        raise ModelFolderError(f"{name}: no such folder, and the Hugging Face Hub cannot be "
                               "reached to fetch it (offline, or HF_HUB_OFFLINE=1); download it "
                               "on a machine with internet and pass the folder") from error
    except OSError as error:  # huggingface_hub's HTTP errors (not found, gated) are OSErrors
        raise ModelFolderError(f"{name}: no such folder, and the Hugging Face Hub has no "
                               f"model by that id ({str(error).splitlines()[0]})") from error
    return Path(config), Path(weights), name


def read_model_folder(
    source: str | os.PathLike, **hub_kwargs: Any
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read (config, float32 state dict) of a local model folder or a Hub id."""
    config_path, weights_path, name = resolve_files(source, **hub_kwargs)
    if not config_path.is_file():
        raise ModelFolderError(f"model folder {name} has no {CONFIG_NAME}")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFolderError(f"model folder {name}: {CONFIG_NAME} is unreadable "
                               f"({error})") from error
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFolderError(f"model folder {name}: {CONFIG_NAME} is not an eegfm model "
                               f"config (no format={FORMAT!r})")
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFolderError(f"model folder {name} has format_version {version!r}, newer "
                               f"than this eegfm reads ({FORMAT_VERSION}): upgrade eegfm")
    if config.get("kind") not in KINDS or not isinstance(config.get("architecture"), dict):
        raise ModelFolderError(f"model folder {name}: {CONFIG_NAME} lacks a known kind or "
                               "the architecture")
    if not weights_path.is_file():
        raise ModelFolderError(f"model folder {name} has no {WEIGHTS_NAME}")
    try:
        tensors = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelFolderError(f"model folder {name}: {WEIGHTS_NAME} is unreadable (truncated "
                               f"or corrupt: {error})") from error
    state = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    return config, state


def read_checkpoint_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read an older single-file encoder/pretrainer checkpoint (``torch.load``, weights only).

    Returns its dict: ``format, kind, eegfm_version, config, state_dict, extra``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError) as err:
        raise ValueError(f"checkpoint {path} is unreadable (truncated, corrupt, or not saved "
                         f"by eegfm.checkpoint.save_checkpoint): {err}") from err
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is a torch file but not an eegfm checkpoint (no "
                         f"format={CHECKPOINT_FORMAT!r}); save models with save_pretrained")
    if checkpoint.get("format_version", 0) > CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint {path} has format_version {checkpoint['format_version']}, "
                         f"newer than this eegfm ({CHECKPOINT_VERSION}): upgrade eegfm")
    missing = {"kind", "config", "state_dict"} - set(checkpoint)
    if missing:
        raise ValueError(f"checkpoint {path} lacks {sorted(missing)}: the file is damaged")
    return checkpoint


def read_model(source: str | os.PathLike, **hub_kwargs: Any) -> tuple[dict, dict]:
    """(config, state dict) of any saved eegfm model, in the model-folder layout.

    Reads a model folder or Hub id, and the single files of earlier releases: an encoder or
    pretrainer checkpoint (a pretrainer gives its encoder) and a fine-tuned ``model_*.pt``.
    """
    path = Path(source)
    if not path.is_file():
        return read_model_folder(source, **hub_kwargs)
    try:
        document = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError) as err:
        first = first_line(err)
        raise ModelFolderError(f"{path}: unreadable (truncated, damaged, or not an eegfm "
                               f"model): {first}") from err
    kind = document.get("format") if isinstance(document, dict) else None
    if kind == CHECKPOINT_FORMAT:
        checkpoint = read_checkpoint_file(path)
        config, state = checkpoint["config"], checkpoint["state_dict"]
        if checkpoint["kind"] == "pretrainer":
            config = config["encoder"]
            state = {k[len("encoder."):]: v for k, v in state.items()
                     if k.startswith("encoder.")}
        return _legacy_config("encoder", config, {}, None, checkpoint), state
    if kind == FINETUNED_FORMAT:
        try:
            state = {**{f"encoder.{k}": v for k, v in document["encoder_state"].items()},
                     **{f"head.{k}": v for k, v in document["head_state"].items()}}
            preprocessing = {
                "sfreq": document["sfreq"], "window_s": document["window_s"],
                "stride_s": document["stride_s"], "align": document.get("align", "none"),
                "class_names": list(document["class_names"]),
                "prep_config": document.get("prep_config") or {},
            }
            head = {**document["head_config"], "frozen": bool(document["frozen"])}
            config = _legacy_config("finetuned", document["encoder_config"], preprocessing,
                                    head, document)
        except (KeyError, TypeError) as err:
            raise ModelFolderError(f"{path}: a fine-tuned model file that lacks {err}: "
                                   "damaged") from err
        return config, state
    raise ModelFolderError(f"{path}: not an eegfm model (a model folder, or a file with "
                           f"format {CHECKPOINT_FORMAT!r} or {FINETUNED_FORMAT!r})")


def _legacy_config(kind: str, architecture: dict, preprocessing: dict, head: dict | None,
                   document: dict) -> dict[str, Any]:
    """The config.json a single file of an earlier release would have had as a folder."""
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
        "eegfm_version": document.get("eegfm_version", ""), "weights_dtype": "float32",
        "architecture": dict(architecture), "head": head,
        "preprocessing": preprocessing, "extra": dict(document.get("extra") or {}),
    }
