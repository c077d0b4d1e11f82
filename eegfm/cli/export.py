"""``eegfm export``: a saved model as a ``.pt2`` (torch.export) or ``.onnx`` graph.

    eegfm export runs/eegmat/model_pretrained --format onnx --channels 19 --seconds 4

The export takes one montage size and window length (any batch size unless ``--batch_size``);
``OUT.json`` beside it states the inputs (shapes, µV, metres in the MNE head frame, 200 Hz),
the output and, for a fine-tuned model, its class names.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from jsonargparse import ArgumentParser

from eegfm.config import ConfigError, config_parser, parse_config
from eegfm.export import FORMATS, ExportError, export_model

EXIT_USAGE = 2


@dataclass
class ExportConfig:
    """What `eegfm export` writes (the model is a positional argument)."""

    format: Literal["torch-export", "onnx"]
    """torch-export: .pt2 for torch.export.load; onnx: .onnx (needs the onnx and onnxscript
    packages)"""
    channels: int
    """number of channels N the export takes"""
    seconds: float
    """window length in s, a whole number of 1 s patches"""
    batch_size: int | None = None
    """fix the batch size (default: any batch size)"""
    out: str | None = None
    """file to write (default: the model folder's name with .pt2 or .onnx, in the current
    folder)"""


def build_parser() -> ArgumentParser:
    """The ``eegfm export`` argument parser: the model, then the fields of ExportConfig."""
    parser = config_parser(
        ExportConfig, prog="eegfm export",
        description="Export an encoder or fine-tuned model folder as a graph that runs "
                    "without eegfm: torch.export (.pt2) or ONNX (.onnx), for N channels and "
                    "windows of S seconds.")
    parser.add_argument("model", help="model folder (encoder or fine-tuned) or Hub id")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``eegfm export``; returns the exit status."""
    try:
        config, rest = parse_config(build_parser(), ExportConfig, argv)
        out = config.out or Path(str(rest.model).rstrip("/")).name + FORMATS[config.format]
        with warnings.catch_warnings():
            # torch.export's notes on its own tracing are not the user's to act on
            warnings.simplefilter("ignore")
            path = export_model(rest.model, out, config.format, config.channels,
                                config.seconds, config.batch_size)
    except (ConfigError, ExportError, ValueError, FileNotFoundError) as error:
        print(f"eegfm export: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
