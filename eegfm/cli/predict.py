"""``eegfm predict``: per-window predictions of a fine-tuned model on new recordings.

    eegfm predict --model runs/eegmat/model_pretrained --input rec1.edf rec2.vhdr \\
                  --out predictions.csv [--stride_s 2] [--prep.line_freq_hz 60]

Besides the model and the inputs, every option is a field of :class:`PredictConfig`, spelled as
for every command (``--batch_size 16``, ``--config predict.yaml``, ``--print_config``).

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

import logging
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from jsonargparse import ArgumentParser
from lightning.fabric import Fabric

from eegfm.checkpoint import load_finetuned
from eegfm.config import ConfigError, Options, config_parser, parse_config
from eegfm.console import progress as progress_bar
from eegfm.data.tasks import build_task_set
from eegfm.data.tasks.windows import TaskDataError, fixed_starts
from eegfm.evaluation import classification_metrics
from eegfm.evaluation.alignment import ALIGNED_RMS_UV, mean_covariance_of, whitening_of
from eegfm.prep import (
    PrepConfig,
    PrepError,
    expand_sources,
    load_item,
    load_prep_config,
    process_raw,
    run_prep,
)
from eegfm.training.finetune.config import (
    Accelerator,
    Precision,
    TrainConfig,
    check_devices,
    load_finetune_config,
)
from eegfm.training.finetune.fold_models import predict_windows
from eegfm.training.finetune.loop import make_fabric
from eegfm.training.finetune.module import autocast
from eegfm.training.finetune.report import model_results, predictions_frame

log = logging.getLogger(__name__)


@dataclass
class PredictConfig:
    """How `eegfm predict` cuts, prepares and predicts the inputs, and where the CSV goes."""

    out: str = "predictions.csv"
    """CSV to write."""
    prep_config: str | None = None
    """Prep YAML to use instead of the model's own prep settings."""
    prep: Options = field(default_factory=dict)
    """Prep settings overriding the model's (or prep_config's), e.g. --prep.line_freq_hz 60."""
    stride_s: float | None = None
    """Hop between windows in s (None: the model's training stride); not with --task."""
    batch_size: int = 64
    """Windows per forward pass."""
    task: str | None = None
    """Fine-tuning YAML whose task section labels the inputs' windows (e.g.
    configs/finetune/eegmat.yaml): score the model per subject and pooled."""
    accelerator: Accelerator = "cpu"
    """Where the model runs (Lightning Fabric): cpu, or cuda / gpu for a GPU."""
    devices: int = 1
    """Devices to use (one)."""
    precision: Precision = "32-true"
    """32-true, or bf16-mixed / 16-mixed (autocast)."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self) -> None:
        if self.stride_s is not None and not self.stride_s > 0:
            raise ConfigError(f"stride_s must be greater than 0, got {self.stride_s}")
        if not self.batch_size > 0:
            raise ConfigError(f"batch_size must be greater than 0, got {self.batch_size}")
        if self.task is not None and self.stride_s is not None:
            raise ConfigError("stride_s does not apply with task (the task config's stride_s "
                              "cuts the windows)")
        check_devices(self.accelerator, self.devices, self.precision)


def build_parser() -> ArgumentParser:
    """The ``eegfm predict`` argument parser: the model and inputs, then PredictConfig."""
    parser = config_parser(
        PredictConfig, prog="eegfm predict",
        description="Per-window class predictions of a fine-tuned model (the model_<name>/ "
                    "folder from `eegfm finetune`) on new recordings of any montage.")
    parser.add_argument("--model", required=True,
                        help="fine-tuned model folder (an earlier release's model_<name>.pt "
                             "also reads)")
    parser.add_argument("--input", nargs="+", required=True,
                        help="recording files, folders, BIDS roots or moabb:NAME[:subjects]")
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


def prep_settings(meta: dict[str, Any], config: PredictConfig) -> PrepConfig:
    """The model's prep settings (or --prep_config's), with --prep.* over them."""
    if config.prep_config is not None:
        return load_prep_config(config.prep_config, **config.prep)
    return load_prep_config(None, **{**meta["prep_config"], **config.prep})


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``eegfm predict``; 0 when every input was predicted, 1 if some failed, 2 on errors."""
    try:
        options, args = parse_config(build_parser(), PredictConfig, argv)
        fabric = make_fabric(TrainConfig(accelerator=options.accelerator,
                                         devices=options.devices, precision=options.precision))
        model, meta = load_finetuned(args.model)
        config = prep_settings(meta, options)
        items = expand_sources(args.input, config)
    except (FileNotFoundError, ValueError, PrepError) as error:
        print(f"eegfm predict: {error}", file=sys.stderr)
        return 2
    if float(config.sfreq) != float(meta["sfreq"]):
        print(f"eegfm predict: the prep config resamples to {config.sfreq} Hz but the model "
              f"expects {meta['sfreq']} Hz", file=sys.stderr)
        return 2
    classes = list(meta["class_names"])
    if options.task is not None:
        return score_labelled(model, meta, config, args.input, args.model, options, fabric)
    window = round(meta["window_s"] * meta["sfreq"])
    stride = max(1, round((meta["stride_s"] if options.stride_s is None else options.stride_s)
                          * meta["sfreq"]))
    frames, failed = [], 0
    bar = items
    if options.progress:
        bar = progress_bar(items, desc="predict", unit="file")
    for item in bar:
        try:
            for loaded in load_item(item, config):
                recording, _ = process_raw(loaded.raw, config, recording_id=loaded.recording_id,
                                           attrs=loaded.attrs, montage=loaded.montage,
                                           event_id=loaded.event_id)
                starts, proba = predict_recording(model, recording, window=window, stride=stride,
                                                  batch_size=options.batch_size,
                                                  align=meta["align"], fabric=fabric)
                if not len(starts):
                    log.warning(f"eegfm predict: {item.location}: shorter than one "
                                f"{meta['window_s']} s window, skipped")
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
    out = Path(options.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    for rec, rows in table.groupby("recording_id", sort=False):
        counts = rows["predicted"].value_counts()
        print(f"{rec}: {len(rows)} windows, {rows['n_channels'].iloc[0]} channels; "
              + ", ".join(f"{c} {counts.get(c, 0)}" for c in classes))
    print(f"predictions: {out}")
    return 1 if failed else 0


def score_labelled(model, meta: dict[str, Any], config, inputs: list[str], model_path: str,
                   options: PredictConfig, fabric: Fabric | None = None) -> int:
    """``--task``: label, align and predict the inputs' windows; print and write the scores."""
    try:
        task_config = load_finetune_config(options.task).task
        if task_config is None:
            raise ConfigError(f"--task {options.task}: the config has no task section")
    except (ConfigError, FileNotFoundError) as error:
        print(f"eegfm predict: {error}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="eegfm-predict-") as tmp:
        try:
            summary = run_prep(inputs, tmp, config, progress=options.progress)
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
                                  progress=options.progress)
        except (TaskDataError, ConfigError) as error:
            print(f"eegfm predict: --task {options.task}: {error}", file=sys.stderr)
            return 2
    if list(task.class_names) != list(meta["class_names"]):
        print(f"eegfm predict: --task {options.task} labels classes {task.class_names}, the model "
              f"predicts {meta['class_names']}", file=sys.stderr)
        return 2
    if abs(task.window_s - meta["window_s"]) > 1e-9:
        print(f"eegfm predict: --task {options.task} cuts {task.window_s} s windows, the model was "
              f"trained on {meta['window_s']} s", file=sys.stderr)
        return 2
    proba = predict_windows(model, task, meta["align"], options.batch_size, fabric)
    every = np.ones(len(task), dtype=bool)
    entry = model_results(task.y, proba, task.subject, every, task.class_names)
    pooled = classification_metrics(task.y, proba.argmax(1), proba,
                                    labels=list(range(task.n_classes)))
    frame = predictions_frame(Path(model_path).name, task, proba, np.zeros(len(task), int),
                              every).drop(columns=["fold"])
    out = Path(options.out)
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
