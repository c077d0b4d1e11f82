"""Export a saved model (encoder or fine-tuned folder) as a graph that runs without eegfm.

``torch-export`` writes a ``.pt2`` (``torch.export.save``; ``torch.export.load(path).module()``
runs it in any PyTorch); ``onnx`` writes a ``.onnx`` (``torch.onnx.export``, run by
onnxruntime and other ONNX runtimes). Both take ``(x, coords, channel_mask, ref_coords)`` for one
montage size and window length fixed at export time and any batch size (or one fixed batch).
A JSON file beside the export states that input contract.

The model's data-dependent steps export as they are: robust scaling (median/MAD), validity
masks and the dense/kNN switch, which depends on the channel count only. Above
``dense_max_channels`` the kNN plan has data-dependent sizes; while exporting,
:mod:`eegfm.models.neighbours` gives it fixed ones (all channels as key slots, the extra ones
masked), same outputs at the cost of dense attention.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from eegfm import __version__
from eegfm.checkpoint import load_finetuned
from eegfm.model_folder import read_model
from eegfm.models import EEGEncoder

FORMATS = {"torch-export": ".pt2", "onnx": ".onnx"}
CONTRACT_FORMAT, CONTRACT_VERSION = "eegfm-export", 1
INPUT_NAMES = ["x", "coords", "channel_mask", "ref_coords"]
ONNX_PACKAGES = ("onnx", "onnxscript")
# a dynamic batch is traced with 2 rows: torch.export specialises a dimension of size 1
_TRACE_BATCH = 2


class ExportError(ValueError):
    """A model or export option that cannot be exported: one line naming it."""


def load_for_export(source: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """The model of a saved folder in eval mode and its metadata (kind, preprocessing)."""
    config, _ = read_model(source)
    if config["kind"] == "finetuned":
        try:
            model, meta = load_finetuned(source)
        except ValueError as error:  # its messages name the `predict --model` option
            raise ExportError(str(error).removeprefix("--model ")) from error
        return model, {"kind": "finetuned", "preprocessing": meta,
                       "output": "logits", "n_outputs": len(meta["class_names"])}
    encoder = EEGEncoder.from_pretrained(source).eval()
    # an encoder's forward pools its tokens over valid channels and patches: features (B, D)
    return encoder, {"kind": "encoder", "preprocessing": dict(encoder.preprocessing),
                     "output": "features", "n_outputs": encoder.embed_dim}


def example_inputs(model: nn.Module, channels: int, seconds: float,
                   batch_size: int) -> tuple[torch.Tensor, ...]:
    """Inputs of the export's shapes: ``x (B, N, T)``, ``coords (B, N, 3)`` on a sphere,
    ``channel_mask (B, N)`` all True, ``ref_coords (B, N, 3)`` all NaN (referential)."""
    encoder = _encoder_of(model)
    n_times = round(seconds * encoder.sfreq)
    generator = torch.Generator().manual_seed(0)
    x = 20.0 * torch.randn(batch_size, channels, n_times, generator=generator)
    direction = torch.randn(batch_size, channels, 3, generator=generator)
    coords = encoder.head_radius_m * direction / direction.norm(dim=-1, keepdim=True)
    channel_mask = torch.ones(batch_size, channels, dtype=torch.bool)
    ref_coords = torch.full((batch_size, channels, 3), float("nan"))
    return x, coords, channel_mask, ref_coords


def export_model(source: str | os.PathLike, out: str | os.PathLike, format: str,
                 channels: int, seconds: float, batch_size: int | None = None) -> Path:
    """Export the model folder ``source`` to ``out`` (``.pt2`` or ``.onnx``) for ``channels``
    channels and windows of ``seconds``; ``batch_size=None`` accepts any batch size.

    Writes ``out`` and the input contract beside it (``out`` with suffix ``.json``); returns
    the path of the export.
    """
    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r}: choose one of {', '.join(FORMATS)}")
    if format == "onnx":
        missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
        if missing:
            raise ExportError(f"--format onnx needs the package(s) {', '.join(missing)}: "
                              f"pip install {' '.join(ONNX_PACKAGES)} (onnxruntime to run it)")
    if channels < 1:
        raise ExportError(f"channels must be at least 1, got {channels}")
    if batch_size is not None and batch_size < 1:
        raise ExportError(f"batch size must be at least 1, got {batch_size}")
    model, meta = load_for_export(source)
    _check_window(_encoder_of(model), seconds, source)
    out = Path(out)
    if out.suffix != FORMATS[format]:
        out = out.with_name(out.name + FORMATS[format])
    out.parent.mkdir(parents=True, exist_ok=True)
    inputs = example_inputs(model, channels, seconds, batch_size or _TRACE_BATCH)
    batch = torch.export.Dim("batch", min=1)
    dynamic = None if batch_size else tuple({0: batch} for _ in inputs)
    with torch.no_grad():
        program = torch.export.export(model, inputs, dynamic_shapes=dynamic)
    if format == "torch-export":
        torch.export.save(program, out)
    else:
        onnx_program = torch.onnx.export(
            program.run_decompositions(ONNX_DECOMPOSITIONS), dynamo=True, verbose=False,
            input_names=INPUT_NAMES, output_names=[meta["output"]],
        )
        onnx_program.save(out)
    contract = input_contract(meta, format, out.name, channels, seconds, batch_size,
                              _encoder_of(model).sfreq)
    out.with_suffix(".json").write_text(json.dumps(contract, indent=2) + "\n")
    return out


def input_contract(meta: dict[str, Any], format: str, file_name: str, channels: int,
                   seconds: float, batch_size: int | None, sfreq: float) -> dict[str, Any]:
    """The JSON written beside an export: inputs, units, output, class names, provenance."""
    batch: int | str = "batch" if batch_size is None else batch_size
    n_times = round(seconds * sfreq)
    preprocessing = meta["preprocessing"]
    return {
        "format": CONTRACT_FORMAT, "format_version": CONTRACT_VERSION,
        "export_format": format, "file": file_name, "model_kind": meta["kind"],
        "eegfm_version": __version__, "torch_version": torch.__version__,
        "sfreq": float(sfreq), "channels": channels, "window_s": float(seconds),
        "inputs": [
            {"name": "x", "shape": [batch, channels, n_times], "dtype": "float32",
             "unit": "uV", "note": f"sampled at {sfreq:g} Hz"},
            {"name": "coords", "shape": [batch, channels, 3], "dtype": "float32",
             "unit": "m", "note": "electrode positions, MNE head frame"},
            {"name": "channel_mask", "shape": [batch, channels], "dtype": "bool",
             "note": "True = a real channel; False (or a NaN coordinate) = ignored"},
            {"name": "ref_coords", "shape": [batch, channels, 3], "dtype": "float32",
             "unit": "m", "note": "second electrode of a bipolar channel; NaN = referential"},
        ],
        "outputs": [{"name": meta["output"], "shape": [batch, meta["n_outputs"]],
                     "dtype": "float32"}],
        "class_names": preprocessing.get("class_names"),
        "trained_window_s": preprocessing.get("window_s"),
        "align": preprocessing.get("align"),
        "scaling": preprocessing.get("scaling"),
    }


def _encoder_of(model: nn.Module) -> EEGEncoder:
    """The encoder of an encoder or of a fine-tuned model."""
    return model if isinstance(model, EEGEncoder) else model.encoder


def _check_window(encoder: EEGEncoder, seconds: float, source: str | os.PathLike) -> None:
    """Raise ExportError unless ``seconds`` is a positive whole number of patches the model
    takes."""
    patch_s = encoder.patch_len / encoder.sfreq
    n_patches = round(seconds / patch_s)
    if not seconds > 0 or abs(n_patches * patch_s - seconds) > 1e-9:
        raise ExportError(f"seconds must be a positive multiple of the model's patch "
                          f"({patch_s:g} s), got {seconds:g}")
    if n_patches > encoder.max_patches:
        raise ExportError(f"{source} takes windows of at most "
                          f"{encoder.max_patches * patch_s:g} s, got {seconds:g}")


# ------------------------------------------------------------------ ONNX decompositions
# ATen ops the ONNX exporter has no translation for, written with ops it has. Each gives the
# values eager PyTorch gives (order statistics, a stable order) or differs by rounding only.
def _median_dim(x: torch.Tensor, dim: int = -1,
                keepdim: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.median(x, dim)``: the lower median, the ``(n - 1) // 2``-th smallest."""
    k = (x.shape[dim] - 1) // 2 + 1
    values, indices = x.topk(k, dim, largest=False, sorted=True)
    values, indices = values.narrow(dim, k - 1, 1), indices.narrow(dim, k - 1, 1)
    return (values, indices) if keepdim else (values.squeeze(dim), indices.squeeze(dim))


def _cdist(x1: torch.Tensor, x2: torch.Tensor, p: float = 2.0,
           compute_mode: Any = None) -> torch.Tensor:
    """``torch.cdist`` computed pair by pair (the exact mode the model asks for)."""
    difference = (x1[..., :, None, :] - x2[..., None, :, :]).abs()
    if p == 2:
        return difference.square().sum(-1).sqrt()
    return difference.pow(p).sum(-1).pow(1.0 / p)


def _argsort_stable(x: torch.Tensor, *, stable: bool | None = None, dim: int = -1,
                    descending: bool = False) -> torch.Tensor:
    """``argsort(stable=True)``: ONNX TopK keeps equal elements in index order."""
    return x.topk(x.shape[dim], dim, largest=descending, sorted=True).indices


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0,
               is_causal: bool = False, scale: float | None = None,
               enable_gqa: bool = False) -> torch.Tensor:
    """Inference ``scaled_dot_product_attention`` for any number of leading dimensions
    (the ONNX translation takes 4-D inputs only; temporal attention's are 5-D)."""
    if is_causal or dropout_p > 0:
        raise ExportError("attention with is_causal or dropout cannot be exported to ONNX")
    scores = (q * (q.shape[-1] ** -0.5 if scale is None else scale)) @ k.transpose(-2, -1)
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    elif attn_mask is not None:
        scores = scores + attn_mask
    return scores.softmax(dim=-1) @ v


ONNX_DECOMPOSITIONS = {
    torch.ops.aten.median.dim: _median_dim,
    # cdist and argsort are composite: they must be replaced before they decompose further
    torch.ops.aten.cdist.default: _cdist,
    torch.ops.aten.argsort.stable: _argsort_stable,
    torch.ops.aten.scaled_dot_product_attention.default: _attention,
}
