"""``eegfm predict``: per-window predictions of a fine-tuned model on new recordings.

    eegfm predict --model runs/eegmat/model_pretrained --input rec1.edf rec2.vhdr \\
                  --out predictions.csv

Each input (a file, a folder, a BIDS root or ``moabb:NAME``) goes through the same prep pipeline
as the training data (the prep config stored in the model), so any montage whose channels can
be located gets coordinates; it is then cut into the model's windows. A model trained on
subject-aligned windows gets each recording aligned from its own windows.

With ``--task CONFIG`` (a fine-tuning YAML) the inputs are labelled recordings: they are
converted into temporary shards, cut and labelled by the config's ``task`` section exactly as
``eegfm finetune`` cuts them, aligned per subject as the model was trained (from each subject's
own windows, no labels), and scored: balanced accuracy and the other metrics per subject and
pooled, the same functions ``finetune`` reports with.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from lightning.fabric import Fabric

from eegfm.config import ConfigError
from eegfm.data.tasks import build_task_set
from eegfm.data.tasks.windows import TaskDataError, fixed_starts
from eegfm.evaluation import classification_metrics
from eegfm.evaluation.alignment import ALIGNED_RMS_UV, mean_covariance_of, whitening_of
from eegfm.prep import PrepError, expand_sources, load_item, load_prep_config, process_raw, run_prep
from eegfm.training.finetune.config import TrainConfig, add_device_options, load_finetune_config
from eegfm.training.finetune.fold_models import predict_windows
from eegfm.training.finetune.loop import make_fabric
from eegfm.training.finetune.module import autocast, load_finetuned
from eegfm.training.finetune.report import model_results, predictions_frame


def _positive(kind: type):
    """An argparse type: a number of ``kind`` greater than zero."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The ``eegfm predict`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="eegfm predict",
        description="Per-window class predictions of a fine-tuned model (the model_<name>/ "
                    "folder from `eegfm finetune`) on new recordings of any montage.")
    parser.add_argument("--model", required=True,
                        help="fine-tuned model folder (an earlier release's model_<name>.pt "
                             "also reads)")
    parser.add_argument("--input", nargs="+", required=True,
                        help="recording files, folders, BIDS roots or moabb:NAME[:subjects]")
    parser.add_argument("--out", default="predictions.csv", help="CSV to write")
    parser.add_argument("--prep-config", help="prep YAML to use instead of the model's own")
    parser.add_argument("--stride-s", type=_positive(float),
                        help="hop between windows in s (default: the model's training stride)")
    parser.add_argument("--batch-size", type=_positive(int), default=64)
    parser.add_argument("--task", metavar="CONFIG",
                        help="fine-tuning YAML whose task section labels the inputs' windows "
                             "(e.g. configs/finetune/eegmat.yaml): score the model per subject "
                             "and pooled")
    add_device_options(parser)
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    return parser


def predict_recording(model, recording, *, window: int, stride: int, batch_size: int,
                      align: str = "none", fabric: Fabric | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Window starts (samples) and class probabilities ``(n_windows, K)`` of one recording,
    in batches on the fabric's device and precision (default: the CPU in float32).

    A model trained on Euclidean-aligned windows gets the recording aligned from its own
    windows (the recording stands for its subject: no labels or subject ids are known here).
    """
    starts = fixed_starts(recording.data.shape[1], window, stride)
    coords = torch.from_numpy(np.asarray(recording.coords, dtype=np.float32))
    ref = torch.from_numpy(np.asarray(recording.ref_coords, dtype=np.float32))
    batches = [starts[s:s + batch_size] for s in range(0, len(starts), batch_size)]

    def windows(chunk: np.ndarray) -> np.ndarray:
        return np.stack([recording.data[:, a:a + window] for a in chunk]).astype(np.float32)

    whitening = None
    if align != "none" and len(starts):
        cov = sum(mean_covariance_of(windows(chunk)) * len(chunk) for chunk in batches)
        whitening = whitening_of(cov / len(starts)) * ALIGNED_RMS_UV
    probs = []
    device = torch.device("cpu") if fabric is None else fabric.device
    model.to(device)
    with torch.no_grad():
        for chunk in batches:
            x = windows(chunk)
            if whitening is not None:
                x = np.einsum("cd,ndt->nct", whitening, x).astype(np.float32)
            b = len(chunk)
            with autocast(fabric):
                logits = model(torch.from_numpy(x).to(device),
                               coords.expand(b, -1, -1).to(device), None,
                               ref.expand(b, -1, -1).to(device))
            probs.append(torch.softmax(logits.float(), 1).cpu().numpy())
    return starts, (np.concatenate(probs) if probs else np.zeros((0, 0)))


def _prep_config(meta: dict[str, Any], path: str | None):
    if path is not None:
        return load_prep_config(path)
    return load_prep_config(None, **meta["prep_config"])


def main(argv: list[str] | None = None) -> int:
    """Run ``eegfm predict``; 0 when every input was predicted, 1 if some failed, 2 on errors."""
    args = build_parser().parse_args(argv)
    try:
        fabric = make_fabric(TrainConfig(accelerator=args.accelerator or "cpu",
                                         devices=args.devices or 1,
                                         precision=args.precision or "32-true"))
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
    if args.task is not None:
        if args.stride_s is not None:
            print("eegfm predict: --stride-s does not apply with --task (the task config's "
                  "stride_s cuts the windows)", file=sys.stderr)
            return 2
        return score_labelled(model, meta, config, args, fabric)
    window = round(meta["window_s"] * meta["sfreq"])
    stride = max(1, round((meta["stride_s"] if args.stride_s is None else args.stride_s)
                          * meta["sfreq"]))
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
                                                  batch_size=args.batch_size,
                                                  align=meta["align"], fabric=fabric)
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


def score_labelled(model, meta: dict[str, Any], config, args: argparse.Namespace,
                   fabric: Fabric | None = None) -> int:
    """``--task``: label, align and predict the inputs' windows; print and write the scores."""
    try:
        task_config = load_finetune_config(args.task).task
        if task_config is None:
            raise ConfigError(f"--task {args.task}: the config has no task section")
    except (ConfigError, FileNotFoundError) as error:
        print(f"eegfm predict: {error}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="eegfm-predict-") as tmp:
        try:
            summary = run_prep(args.input, tmp, config, progress=args.progress)
        except PrepError as error:
            print(f"eegfm predict: {error}", file=sys.stderr)
            return 2
        for failure in summary.failures:
            print(f"eegfm predict: {failure['source']}: {failure['reason']}", file=sys.stderr)
        if not summary.converted:
            print("eegfm predict: no recording could be converted", file=sys.stderr)
            return 1
        try:
            task = build_task_set(task_config, tmp, multiple_of=model.encoder.patch_len,
                                  sfreq=meta["sfreq"], prep_config=config,
                                  progress=args.progress)
        except (TaskDataError, ConfigError) as error:
            print(f"eegfm predict: --task {args.task}: {error}", file=sys.stderr)
            return 2
    if list(task.class_names) != list(meta["class_names"]):
        print(f"eegfm predict: --task {args.task} labels classes {task.class_names}, the model "
              f"predicts {meta['class_names']}", file=sys.stderr)
        return 2
    if abs(task.window_s - meta["window_s"]) > 1e-9:
        print(f"eegfm predict: --task {args.task} cuts {task.window_s} s windows, the model was "
              f"trained on {meta['window_s']} s", file=sys.stderr)
        return 2
    proba = predict_windows(model, task, meta["align"], args.batch_size, fabric)
    every = np.ones(len(task), dtype=bool)
    entry = model_results(task.y, proba, task.subject, every, task.class_names)
    pooled = classification_metrics(task.y, proba.argmax(1), proba,
                                    labels=list(range(task.n_classes)))
    frame = predictions_frame(Path(args.model).name, task, proba, np.zeros(len(task), int),
                              every).drop(columns=["fold"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    print(scores_table(entry["per_subject"], dict(pooled), meta["align"], len(task)))
    print(f"predictions: {out}")
    return 1 if summary.failures else 0


def scores_table(per_subject: dict[str, dict[str, float]], pooled: dict[str, float],
                 align: str, n_windows: int) -> str:
    """Per-subject and pooled metrics as printed by ``eegfm predict --task``."""
    metrics = ("balanced_accuracy", "cohen_kappa", "macro_f1", "auroc")
    width = max([10, *(len(s) + 2 for s in per_subject)])
    lines = [f"{n_windows} labelled windows, alignment {align}",
             f"{'subject':<{width}}" + "".join(f"{m:>20}" for m in metrics)]
    rows = [*per_subject.items(), ("pooled", pooled)]
    for subject, scores in rows:
        cells = [scores.get(m) for m in metrics]
        lines.append(f"{subject:<{width}}" + "".join(
            f"{'n/a':>20}" if v is None or v != v else f"{v:>20.3f}" for v in cells))
    mean = np.nanmean([s["balanced_accuracy"] for s in per_subject.values()])
    lines.append(f"{'mean':<{width}}{mean:>20.3f}  (balanced accuracy over subjects)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
