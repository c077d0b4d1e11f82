"""``eegfm export``: a saved model as a ``.pt2`` (torch.export) or ``.onnx`` graph.

    eegfm export runs/eegmat/model_pretrained --format onnx --channels 19 --seconds 4

The export takes one montage size and window length (any batch size unless ``--batch-size``);
``OUT.json`` beside it states the inputs (shapes, µV, metres in the MNE head frame, 200 Hz),
the output and, for a fine-tuned model, its class names.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import NoReturn

from eegfm.export import FORMATS, ExportError, export_model

EXIT_USAGE = 2


class _OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``eegfm export: MESSAGE`` and exit 2."""
        print(f"{self.prog}: {message} (see --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """The ``eegfm export`` argument parser."""
    parser = _OneLineParser(
        prog="eegfm export",
        description="Export an encoder or fine-tuned model folder as a graph that runs "
                    "without eegfm: torch.export (.pt2) or ONNX (.onnx), for N channels and "
                    "windows of S seconds.")
    parser.add_argument("model", help="model folder (encoder or fine-tuned) or Hub id")
    parser.add_argument("--format", required=True, choices=list(FORMATS),
                        help="torch-export: .pt2 for torch.export.load; onnx: .onnx (needs "
                             "the onnx and onnxscript packages)")
    parser.add_argument("--channels", type=int, required=True,
                        help="number of channels N the export takes")
    parser.add_argument("--seconds", type=float, required=True,
                        help="window length in s, a whole number of 1 s patches")
    parser.add_argument("--batch-size", type=int,
                        help="fix the batch size (default: any batch size)")
    parser.add_argument("--out", help="file to write (default: the model folder's name with "
                                      ".pt2 or .onnx, in the current folder)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``eegfm export``; returns the exit status."""
    args = build_parser().parse_args(argv)
    out = args.out or Path(str(args.model).rstrip("/")).name + FORMATS[args.format]
    try:
        with warnings.catch_warnings():
            # torch.export's notes on its own tracing are not the user's to act on
            warnings.simplefilter("ignore")
            path = export_model(args.model, out, args.format, args.channels, args.seconds,
                                args.batch_size)
    except (ExportError, ValueError, FileNotFoundError) as error:
        print(f"eegfm export: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
