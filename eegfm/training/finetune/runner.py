"""``run_finetune(config) -> results``: task windows -> protocol splits -> models -> report.

Every model of ``config.models`` (encoders + heads, classical pipelines, networks from scratch)
is a :class:`~eegfm.training.finetune.fold_models.FoldModel` run by one fold loop on the same
windows and splits, once per subject alignment of ``config.align``. Split hygiene is asserted
again here on subjects *and* recording ids; ``within`` runs purge training windows that share
samples with a test window. Paired statistics compare every model with the best baseline.
See docs/finetune.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from eegfm import __version__
from eegfm.checkpoint import from_pretrained
from eegfm.config import ConfigError, from_mapping, to_plain, with_overrides
from eegfm.data.tasks import TaskConfig, TaskSet, build_task_set
from eegfm.data.tasks.moabb import is_moabb
from eegfm.evaluation import (
    Split,
    SplitHygieneError,
    check_split,
    fixed_split,
    make_splits,
    time_blocks,
    write_report,
)
from eegfm.evaluation.schema import to_json_safe
from eegfm.evaluation.statistics import all_pairs
from eegfm.models import create_model
from eegfm.prep import load_prep_config
from eegfm.training.finetune.config import (
    ENCODER_MODELS,
    FinetuneConfig,
    load_finetune_config,
)
from eegfm.training.finetune.fold_models import (
    RunContext,
    build_fold_model,
    cross_validate,
    display_name,
    model_tag,
)
from eegfm.training.finetune.loop import make_fabric


def resolve_config(config: FinetuneConfig | str | Path | Mapping | None,
                   **overrides: Any) -> FinetuneConfig:
    """A :class:`FinetuneConfig` from an object, a YAML path or a mapping, plus overrides."""
    if isinstance(config, FinetuneConfig):
        if not overrides:
            return config
        config = to_plain(config)
    if isinstance(config, Mapping):
        return from_mapping(FinetuneConfig, with_overrides(config, overrides), "config")
    return load_finetune_config(config, **overrides)


def hygienic_split(split: Split, task: TaskSet, groups: np.ndarray | None
                   ) -> tuple[Split, int]:
    """Assert no test subject/recording reaches train or validation; purge time overlaps.

    Returns the split (``within``: training and validation windows sharing samples with a test
    window removed) and the number of windows purged.
    """
    check_split(split, task.subject, groups)
    fit_rows = np.concatenate([split.train, split.val])
    where = f"{split.protocol} fold {split.fold}"
    if split.protocol != "within":
        for name, values in (("subject", task.subject), ("recording", task.recording_id)):
            leaked = set(values[split.test].tolist()) & set(values[fit_rows].tolist())
            if leaked:
                raise SplitHygieneError(f"{where}: test {name}(s) {sorted(leaked)[:5]} also in "
                                        "train/validation")
        return split, 0
    if set(task.subject[fit_rows].tolist()) != set(task.subject[split.test].tolist()):
        raise SplitHygieneError(f"{where}: within-subject split mixes subjects")
    length = task.x.shape[-1]
    train = split.train[~_overlaps(task, split.train, split.test, length)]
    val = split.val[~_overlaps(task, split.val, split.test, length)]
    purged = len(split.train) + len(split.val) - len(train) - len(val)
    return dataclasses.replace(split, train=train, val=val), purged


def _overlaps(task: TaskSet, rows: np.ndarray, test: np.ndarray, length: int) -> np.ndarray:
    """For each of ``rows``: does it share samples with a test window of its recording?"""
    out = np.zeros(len(rows), dtype=bool)
    for rec in np.unique(task.recording_id[test]):
        test_starts = np.sort(task.start[test][task.recording_id[test] == rec])
        mine = np.flatnonzero(task.recording_id[rows] == rec)
        starts = task.start[rows][mine]
        pos = np.searchsorted(test_starts, starts)
        after = test_starts[np.minimum(pos, len(test_starts) - 1)]
        before = test_starts[np.maximum(pos - 1, 0)]
        out[mine] = (np.abs(after - starts) < length) | (np.abs(starts - before) < length)
    return out


def _prep_config(cfg: FinetuneConfig, roots: list[Path]):
    """The prep config of the data: the shards' own prep_config.yaml, or moabb's settings."""
    if is_moabb(cfg.data):
        return load_prep_config(cfg.prep_config, **cfg.prep)
    stored = roots[0] / "prep_config.yaml" if roots else None
    if stored is not None and stored.is_file():
        return load_prep_config(stored)
    return load_prep_config(cfg.prep_config, **cfg.prep)


def run_finetune(config: FinetuneConfig | str | Path | Mapping | None = None,
                 **overrides: Any) -> dict[str, Any]:
    """Run every model of the config on every fold and write the report into ``config.out``.

    Returns the content of ``results.json`` (per-subject scores, summaries, statistics,
    figures, config).
    """
    cfg = resolve_config(config, **overrides)
    if cfg.data is None:
        raise ConfigError("no data: give --data SHARDS_DIR|moabb:NAME (or data: in the config)")
    moabb = is_moabb(cfg.data)
    if cfg.task is None:
        if not moabb:
            raise ConfigError("the config has no task section (how windows get labels); see "
                              "configs/finetune/eegmat.yaml and docs/finetune.md")
        cfg = dataclasses.replace(cfg, task=TaskConfig(name=cfg.data, type="events"))
    started = time.perf_counter()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    models = list(cfg.models)
    if cfg.checkpoint is None and "pretrained" in models:
        models.remove("pretrained")
        notes.append("No --checkpoint given: only the random-init encoder and the baselines ran "
                     "(no pretrained model in this report).")
        if not models:
            raise ConfigError("models: only 'pretrained' was asked for, but no --checkpoint given")
    fabric = make_fabric(cfg.train)  # before any data work: a missing device fails at once
    # random_init copies the checkpoint's architecture when there is one (the fair ablation)
    pretrained = from_pretrained(cfg.checkpoint) if cfg.checkpoint else None
    reference = pretrained or create_model(cfg.encoder, **cfg.encoder_options)
    uses_encoder = any(m in ENCODER_MODELS for m in models)
    roots = [] if moabb else [
        Path(p) for p in ([cfg.data] if isinstance(cfg.data, str) else cfg.data)]
    prep_config = _prep_config(cfg, roots)
    task = build_task_set(
        cfg.task, cfg.data, multiple_of=reference.patch_len if uses_encoder else 1,
        sfreq=reference.sfreq if uses_encoder else None, prep_config=prep_config,
        cache_dir=cfg.cache_dir, progress=cfg.progress)
    splits = _splits(cfg, task, notes)
    ctx = RunContext(cfg=cfg, task=task, splits=splits, out=out,
                     prep_config=prep_config.to_dict(), notes=notes, fabric=fabric)
    if cfg.train.accelerator != "cpu" or cfg.train.precision != "32-true":
        notes.append(f"Models ran on {fabric.device} in {cfg.train.precision} precision.")
    fixed = [m for m in models if m not in ENCODER_MODELS]
    channels = task.common_channels()
    if fixed and channels and len(channels) < task.x.shape[1]:
        notes.append(f"Classical and from-scratch baselines use the {len(channels)} channels "
                     f"common to all recordings ({', '.join(channels)}).")
    if "none" not in cfg.align:
        notes.append("Unaligned results were switched off (align: "
                     f"{', '.join(cfg.align)}): every model ran on subject-aligned data only.")
    elif len(cfg.align) == 1:
        notes.append("Subject alignment was switched off (align: none).")
    encoders = {"pretrained": pretrained, "random_init": reference}
    partials = Partials(out / "partial", fingerprint(cfg, roots) if cfg.resume else None)
    entries: dict[str, dict[str, Any]] = {}
    frames = []
    reused = []
    for align in cfg.align:
        for key in models:
            tag, name = model_tag(key, align), display_name(key, align)
            done = partials.load(tag)
            if done is None:
                model = build_fold_model(ctx, key, align, encoders.get(key))
                if model is None:
                    continue
                done = cross_validate(model, ctx)
                partials.save(tag, *done)
            else:
                reused.append(name)
            entries[name], frame = done
            frames.append(frame)
    if reused:
        notes.append(f"Reused from an earlier, interrupted or identical run in this directory "
                     f"(same config, data, checkpoint and eegfm version; {out / 'partial'}): "
                     f"{', '.join(reused)}.")
    statistics = paired_statistics(entries, cfg.n_bootstrap, cfg.seed)
    notes.append(f"Seed {cfg.seed} fixes the splits, the validation subjects, initialisation "
                 "and sampling (per-model, per-fold seeds derive from it).")
    notes.append(f"Total run time {time.perf_counter() - started:.0f} s.")
    results = {
        "task": task.name,
        "protocol": cfg.protocol,
        "seed": cfg.seed,
        "class_names": list(task.class_names),
        "models": entries,
        "config": to_plain(cfg),
        "splits": [split.summary() for split in splits],
        "notes": notes,
        "extras": {"task data": task.summary()},
    }
    if statistics is not None:
        results["statistics"] = statistics
    paths = write_report(results, out)
    if frames:
        pd.concat(frames).to_csv(out / "predictions.csv", index=False)
    (out / "config.yaml").write_text(yaml.safe_dump(to_plain(cfg), sort_keys=False),
                                     encoding="utf-8")
    return json.loads(Path(paths["json"]).read_text(encoding="utf-8"))


# options that change no model's result: what else runs, where and how it is shown
_NOT_FINGERPRINTED = ("models", "align", "out", "progress", "tensorboard", "resume")


def fingerprint(cfg: FinetuneConfig, roots: list[Path]) -> str:
    """What one model's results depend on: config, shard manifests, checkpoint, eegfm version."""
    plain = {k: v for k, v in to_plain(cfg).items() if k not in _NOT_FINGERPRINTED}
    digest = hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode())
    digest.update(__version__.encode())
    for path in [*(root / "manifest.jsonl" for root in roots),
                 *([Path(cfg.checkpoint)] if cfg.checkpoint else [])]:
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


class Partials:
    """Each finished model's report entry and predictions, kept so a rerun can pick them up.

    ``fingerprint`` None turns reuse off (results are still written).
    """

    def __init__(self, folder: Path, fingerprint: str | None):
        self.folder, self.fingerprint = folder, fingerprint

    def load(self, tag: str) -> tuple[dict[str, Any], pd.DataFrame] | None:
        """The entry and predictions of ``tag`` from a run with the same fingerprint, or None."""
        document, table = self.folder / f"{tag}.json", self.folder / f"{tag}.csv"
        if self.fingerprint is None or not (document.is_file() and table.is_file()):
            return None
        try:
            saved = json.loads(document.read_text(encoding="utf-8"))
            if saved.get("fingerprint") != self.fingerprint:
                return None
            return saved["entry"], pd.read_csv(table, dtype={"subject": str})
        except (OSError, ValueError, KeyError):
            return None  # unreadable partial: run the model again

    def save(self, tag: str, entry: dict[str, Any], frame: pd.DataFrame) -> None:
        """Write the entry and predictions of ``tag`` (predictions first: the entry marks done)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for name, text in ((f"{tag}.csv", frame.to_csv(index=False)),
                           (f"{tag}.json", json.dumps(
                               {"fingerprint": self.fingerprint, "entry": to_json_safe(entry)},
                               allow_nan=False))):
            tmp = self.folder / f"{name}.tmp"
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.folder / name)


def _splits(cfg: FinetuneConfig, task: TaskSet, notes: list[str]) -> list[Split]:
    """The protocol's checked splits; notes on what was cut."""
    groups = (time_blocks(task.recording_id, task.start, cfg.n_blocks)
              if cfg.protocol == "within" else None)
    if cfg.protocol == "split":
        splits = [fixed_split(task.subject, task.y, cfg.split.train, cfg.split.val,
                              cfg.split.test, seed=cfg.seed)]
        unused = sorted(set(task.subject.tolist()) - set(cfg.split.train) - set(cfg.split.val)
                        - set(cfg.split.test))
        if unused:
            notes.append(f"split: subject(s) {unused} are in no list and were not used.")
    else:
        splits = make_splits(cfg.protocol, task.subject, task.y, groups=groups,
                             n_folds=cfg.n_folds, n_val_subjects=cfg.n_val_subjects,
                             n_val_groups=cfg.n_val_groups, seed=cfg.seed)
    if cfg.max_folds is not None and cfg.max_folds < len(splits):
        notes.append(f"max_folds={cfg.max_folds}: only the first {cfg.max_folds} of "
                     f"{len(splits)} folds ran; subjects of the other folds are not scored.")
        splits = splits[:cfg.max_folds]
    checked = [hygienic_split(split, task, groups) for split in splits]
    purged = sum(n for _, n in checked)
    if purged:
        notes.append(f"within: {purged} training/validation windows overlapping a test window "
                     "in time were removed (overlapping strides).")
    return [split for split, _ in checked]


def paired_statistics(entries: Mapping[str, Mapping[str, Any]], n_bootstrap: int, seed: int,
                      metric: str = "balanced_accuracy") -> dict[str, Any] | None:
    """Every pair of models compared over their test subjects; the best baseline named.

    The reference is the baseline (any model that is not an eegfm encoder) with the highest
    mean ``metric``; ``None`` when fewer than two models ran.
    """
    if len(entries) < 2:
        return None
    scores = {name: {s: v.get(metric) for s, v in entry["per_subject"].items()}
              for name, entry in entries.items()}
    means = {name: float(np.nanmean([np.nan if v is None else v for v in per.values()]))
             for name, per in scores.items()}
    baselines = [name for name, entry in entries.items()
                 if not str(entry.get("info", {}).get("model", "")).startswith("eegfm encoder")]
    reference = max(baselines or list(entries), key=lambda name: means[name])
    return {"metric": metric, "reference": reference, "n_bootstrap": n_bootstrap,
            "test": "Two-sided Wilcoxon signed-rank over test subjects; percentile bootstrap "
                    "95 % CI of the mean paired difference",
            "pairs": all_pairs(scores, n_bootstrap=n_bootstrap, seed=seed)}


def summary_table(results: Mapping[str, Any]) -> str:
    """Plain-text table of mean ± std per model (what the CLI prints)."""
    metrics = ("balanced_accuracy", "cohen_kappa", "macro_f1", "auroc")
    width = max([18, *(len(m) + 2 for m in results["models"])])
    lines = [f"{'model':<{width}}" + "".join(f"{m:>22}" for m in metrics)]
    for model, entry in results["models"].items():
        cells = []
        for metric in metrics:
            stats = entry.get("summary", {}).get(metric)
            if not stats or stats.get("mean") is None:
                cells.append(f"{'n/a':>22}")
            else:
                std = stats.get("std")
                text = f"{stats['mean']:.3f}" + (f" ± {std:.3f}" if std is not None else "")
                cells.append(f"{text:>22}")
        lines.append(f"{model:<{width}}" + "".join(cells))
    return "\n".join(lines)


def results_summary(results: Mapping[str, Any], seconds: float, report: str | Path) -> str:
    """What `eegfm finetune` and `eegfm demo` print at the end: header, table, report path."""
    return (f"\n{results['task']}: protocol {results['protocol']}, seed {results['seed']}, "
            f"{seconds:.0f} s\n{summary_table(results)}\n\nreport: {report}")
