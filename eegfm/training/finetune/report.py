"""Turn the folds of a fine-tuning run into the ``results`` dict of ``eegfm.evaluation``.

Per-subject metrics come from the out-of-fold predictions of every window (each window is
predicted by the one fold that held its subject, or its time block, out), so ``within`` runs,
where a subject spans several folds, are scored the same way as LOSO and k-fold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from eegfm.evaluation import classification_metrics, confusion


def model_results(y: np.ndarray, proba: np.ndarray, subject: np.ndarray, tested: np.ndarray,
                  class_names: Sequence[str]) -> dict[str, Any]:
    """``per_subject`` scores, ``subject_notes`` and the summed ``confusion_matrix``."""
    labels = list(range(len(class_names)))
    pred = proba.argmax(1)
    per_subject, notes = {}, {}
    for s in sorted(np.unique(subject[tested]).tolist(), key=_natural):
        rows = np.flatnonzero(tested & (subject == s))
        scores = classification_metrics(y[rows], pred[rows], proba[rows], labels=labels)
        per_subject[str(s)] = dict(scores)
        if scores.notes:
            notes[str(s)] = list(scores.notes)
    matrix = confusion(y[tested], pred[tested], labels)
    out = {"per_subject": per_subject, "confusion_matrix": matrix.tolist()}
    if notes:
        out["subject_notes"] = notes
    return out


def _natural(value: str) -> tuple:
    """Sort subject ids numerically when they are numbers ('2' before '10')."""
    return (0, int(value), "") if str(value).isdigit() else (1, 0, str(value))


def learning_curve(fold: int, fit_result) -> dict[str, Any]:
    """One ``learning_curves`` entry of the results schema."""
    curve = {"fold": int(fold), "train_loss": list(fit_result.train_loss),
             "best_epoch": int(fit_result.best_epoch)}
    if fit_result.val_loss:
        curve["val_loss"] = list(fit_result.val_loss)
    return curve


def predictions_frame(model: str, task, proba: np.ndarray, fold_of: np.ndarray,
                      tested: np.ndarray) -> pd.DataFrame:
    """Out-of-fold predictions of one model, one row per test window."""
    rows = np.flatnonzero(tested)
    frame = pd.DataFrame({
        "model": model,
        "fold": fold_of[rows],
        "subject": task.subject[rows],
        "recording": task.recording_id[rows],
        "window_start_s": task.start[rows] / task.sfreq,
        "true": np.asarray(task.class_names)[task.y[rows]],
        "predicted": np.asarray(task.class_names)[proba[rows].argmax(1)],
    })
    for k, name in enumerate(task.class_names):
        frame[f"p_{name}"] = proba[rows, k]
    return frame


def energy_tables(reports: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Spiking energy extras: one summary row per fold, and per-layer means over folds."""
    summary = [{
        "fold": fold,
        "spiking": r["spiking"],
        "timesteps": r["timesteps"],
        "virtual_timesteps": r["virtual_timesteps"],
        "n_samples": r["n_samples"],
        "mean_firing_rate": _mean([v for v in r["firing_rates"].values() if v is not None]),
        "sops": r["sops"],
        "macs": r["macs"],
        "energy_pj": r["energy_pj"],
        "ann_macs": r["ann"]["macs"],
        "ann_energy_pj": r["ann"]["energy_pj"],
        "energy_ratio": r["energy_ratio"],
    } for fold, r in reports]
    layers: dict[str, dict[str, list]] = {}
    for _, report in reports:
        for name, layer in report["layers"].items():
            entry = layers.setdefault(name, {"input": layer["input"]})
            for key in ("firing_rate", "flops", "macs", "sops", "energy_pj"):
                if layer[key] is not None:
                    entry.setdefault(key, []).append(layer[key])
            ann = report["ann"]["layers"].get(name)
            if ann is not None:
                entry.setdefault("ann_macs", []).append(ann)
    per_layer = [{"layer": name, **{k: (_mean(v) if isinstance(v, list) else v)
                                   for k, v in entry.items()}} for name, entry in layers.items()]
    firing = [{"fold": fold, **{k: v for k, v in r["firing_rates"].items()}}
              for fold, r in reports]
    return {"energy (per sample; " + reports[0][1]["label"] + ")": summary,
            "energy per layer (mean over folds)": per_layer,
            "firing rates per neuron layer": firing}


def _mean(values: Sequence[float]) -> float | None:
    values = [float(v) for v in values if v is not None]
    return float(np.mean(values)) if values else None
