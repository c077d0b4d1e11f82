"""``eegfm predict``: per-window predictions of a fine-tuned model on new recordings.

    eegfm predict --model runs/eegmat/model_pretrained.pt --input rec1.edf rec2.vhdr \\
                  --out predictions.csv

Each input (a file, a folder, a BIDS root or ``moabb:NAME``) goes through the same prep pipeline
as the training data (the prep config stored in the model), so any montage whose channels can
be located gets coordinates; it is then cut into the model's windows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np


def build_parser() -> argparse.ArgumentParser:
    """The ``eegfm predict`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="eegfm predict",
        description="Per-window class predictions of a fine-tuned model (model_<name>.pt from "
                    "`eegfm finetune`) on new recordings of any montage.")
    parser.add_argument("--model", required=True, help="fine-tuned model file")
    parser.add_argument("--input", nargs="+", required=True,
                        help="recording files, folders, BIDS roots or moabb:NAME[:subjects]")
    parser.add_argument("--out", default="predictions.csv", help="CSV to write")
    parser.add_argument("--prep-config", help="prep YAML to use instead of the model's own")
    parser.add_argument("--stride-s", type=float, help="hop between windows (default: the "
                                                       "model's training stride)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    return parser


def predict_recording(model, recording, *, window: int, stride: int, batch_size: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Window starts (samples) and class probabilities ``(n_windows, K)`` of one recording."""
    import torch

    from eegfm.data.task_windows import fixed_starts

    starts = fixed_starts(recording.data.shape[1], window, stride)
    coords = torch.from_numpy(np.asarray(recording.coords, dtype=np.float32))
    ref = torch.from_numpy(np.asarray(recording.ref_coords, dtype=np.float32))
    probs = []
    with torch.no_grad():
        for s in range(0, len(starts), batch_size):
            chunk = starts[s:s + batch_size]
            x = torch.from_numpy(np.stack([recording.data[:, a:a + window] for a in chunk]))
            b = len(chunk)
            logits = model(x.float(), coords.expand(b, -1, -1), None, ref.expand(b, -1, -1))
            probs.append(torch.softmax(logits, 1).numpy())
    return starts, (np.concatenate(probs) if probs else np.zeros((0, 0)))


def _prep_config(meta: dict[str, Any], path: str | None):
    from eegfm.prep import load_prep_config

    if path is not None:
        return load_prep_config(path)
    return load_prep_config(None, **meta["prep_config"])


def main(argv: list[str] | None = None) -> int:
    """Run ``eegfm predict``; 0 when every input was predicted, 1 if some failed, 2 on errors."""
    args = build_parser().parse_args(argv)
    import pandas as pd
    import torch

    from eegfm.prep import PrepError, expand_sources, load_item, process_raw
    from eegfm.training.finetune_module import load_finetuned

    try:
        model, meta = load_finetuned(args.model)
        config = _prep_config(meta, args.prep_config)
        items = expand_sources(args.input, config)
    except (FileNotFoundError, ValueError, PrepError) as error:
        print(f"eegfm predict: {error}", file=sys.stderr)
        return 2
    if float(config.sfreq) != float(meta["sfreq"]):
        print(f"eegfm predict: the prep config resamples to {config.sfreq} Hz but the model "
              f"expects {meta['sfreq']} Hz", file=sys.stderr)
        return 2
    classes = list(meta["class_names"])
    window = round(meta["window_s"] * meta["sfreq"])
    stride = round((args.stride_s or meta["stride_s"]) * meta["sfreq"])
    torch.set_grad_enabled(False)
    frames, failed = [], 0
    bar = items
    if args.progress:
        from tqdm import tqdm

        bar = tqdm(items, desc="predict", unit="file", dynamic_ncols=True)
    for item in bar:
        try:
            for loaded in load_item(item, config):
                recording, _ = process_raw(loaded.raw, config, recording_id=loaded.recording_id,
                                           attrs=loaded.attrs, montage=loaded.montage,
                                           event_id=loaded.event_id)
                starts, proba = predict_recording(model, recording, window=window, stride=stride,
                                                  batch_size=args.batch_size)
                if not len(starts):
                    print(f"eegfm predict: {item.location}: shorter than one "
                          f"{meta['window_s']} s window, skipped", file=sys.stderr)
                    continue
                frame = pd.DataFrame({
                    "recording": loaded.attrs.get("source", item.location),
                    "recording_id": loaded.recording_id,
                    "window_start_s": starts / meta["sfreq"],
                    "n_channels": recording.data.shape[0],
                    "predicted": np.asarray(classes)[proba.argmax(1)],
                })
                for k, name in enumerate(classes):
                    frame[f"p_{name}"] = proba[:, k]
                frames.append(frame)
        except PrepError as error:
            failed += 1
            print(f"eegfm predict: {error}", file=sys.stderr)
    if not frames:
        print("eegfm predict: no recording could be predicted", file=sys.stderr)
        return 1
    table = pd.concat(frames, ignore_index=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    for rec, rows in table.groupby("recording_id", sort=False):
        counts = rows["predicted"].value_counts()
        print(f"{rec}: {len(rows)} windows, {rows['n_channels'].iloc[0]} channels; "
              + ", ".join(f"{c} {counts.get(c, 0)}" for c in classes))
    print(f"predictions: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
