"""The ``results`` dict that :func:`eegfm.evaluation.write_report` takes, and its validation.

The schema is documented in ``docs/evaluation.md``. Validation raises
:class:`ResultsSchemaError` naming the exact key path at fault, e.g.
``results['models']['eegnet']['per_subject']['S03']['auroc']: expected a number, got 'x'``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any

import numpy as np

from eegfm.evaluation.protocols import PROTOCOLS

SCHEMA = "eegfm-results/1"
TOP_KEYS_REQUIRED = ("protocol", "seed", "class_names", "models")
# "schema", "figures" and a model's "summary" are written by write_report; accepted (and
# recomputed) so that a results.json can be fed back to write_report to re-render a report.
TOP_KEYS_OPTIONAL = ("task", "config", "splits", "extras", "notes", "schema", "figures",
                     "statistics")
MODEL_KEYS_REQUIRED = ("per_subject",)
MODEL_KEYS_OPTIONAL = ("confusion_matrix", "learning_curves", "subject_notes", "info", "extras",
                       "summary")
CURVE_KEYS = ("fold", "train_loss", "val_loss", "best_epoch")
HEATMAP_KEYS = ("matrix", "row_labels", "col_labels")
HEADLINE_METRIC = "balanced_accuracy"


class ResultsSchemaError(ValueError):
    """The results dict does not follow the schema in docs/evaluation.md."""


def _fail(path: str, problem: str) -> None:
    raise ResultsSchemaError(f"{path}: {problem} (schema: docs/evaluation.md)")


def _is_number(value: Any) -> bool:
    return isinstance(value, (Real, np.number)) and not isinstance(value, (bool, np.bool_))


def _check_keys(obj: Any, path: str, required: tuple, optional: tuple) -> None:
    if not isinstance(obj, Mapping):
        _fail(path, f"expected a dict, got {type(obj).__name__}")
    missing = [k for k in required if k not in obj]
    if missing:
        _fail(path, f"missing key(s) {missing}")
    unknown = [k for k in obj if k not in required + optional]
    if unknown:
        _fail(path, f"unknown key(s) {unknown}; allowed: {list(required + optional)} "
                    "(free-form data goes under 'extras' or 'info')")


def _check_number_list(values: Any, path: str) -> None:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        _fail(path, f"expected a list of numbers, got {type(values).__name__}")
    for i, v in enumerate(values):
        if not _is_number(v):
            _fail(f"{path}[{i}]", f"expected a number, got {v!r}")


def _check_per_subject(per_subject: Any, path: str) -> None:
    if not isinstance(per_subject, Mapping) or not per_subject:
        _fail(path, "expected a non-empty dict {subject: {metric: number}}")
    seen: dict[str, Any] = {}
    for subject, scores in per_subject.items():
        if not isinstance(subject, (str, Integral)) or isinstance(subject, bool):
            _fail(path, f"subject key {subject!r} must be a str or int")
        if str(subject) in seen:
            _fail(path, f"subjects {seen[str(subject)]!r} and {subject!r} collide as text")
        seen[str(subject)] = subject
        where = f"{path}[{subject!r}]"
        if not isinstance(scores, Mapping) or HEADLINE_METRIC not in scores:
            _fail(where, f"expected a dict of metrics including '{HEADLINE_METRIC}'")
        for metric, value in scores.items():
            if not isinstance(metric, str):
                _fail(where, f"metric name {metric!r} must be a str")
            if value is not None and not _is_number(value):
                _fail(f"{where}[{metric!r}]", f"expected a number (or None/NaN), got {value!r}")


def _check_confusion(matrix: Any, path: str, n_classes: int) -> None:
    try:
        arr = np.asarray(matrix, dtype=float)
    except (TypeError, ValueError):
        _fail(path, "expected a K × K list of counts")
    if arr.shape != (n_classes, n_classes):
        _fail(path, f"expected shape ({n_classes}, {n_classes}) to match class_names, "
                    f"got {arr.shape}")
    if not np.isfinite(arr).all() or (arr < 0).any() or (arr != np.round(arr)).any():
        _fail(path, "counts must be finite non-negative integers")


def _check_curves(curves: Any, path: str) -> None:
    if not isinstance(curves, (list, tuple)):
        _fail(path, "expected a list of {'fold', 'train_loss', 'val_loss'?, 'best_epoch'?}")
    for i, curve in enumerate(curves):
        where = f"{path}[{i}]"
        _check_keys(curve, where, ("fold", "train_loss"), ("val_loss", "best_epoch"))
        if not isinstance(curve["fold"], Integral):
            _fail(f"{where}['fold']", f"expected an int, got {curve['fold']!r}")
        _check_number_list(curve["train_loss"], f"{where}['train_loss']")
        if curve.get("val_loss") is not None:
            _check_number_list(curve["val_loss"], f"{where}['val_loss']")
        best = curve.get("best_epoch")
        if best is not None and not isinstance(best, Integral):
            _fail(f"{where}['best_epoch']", f"expected an int (1-based epoch), got {best!r}")


def _check_extras(extras: Any, path: str) -> None:
    """Each extra is a table (list of flat dicts) or a heatmap ({matrix, row/col labels})."""
    if not isinstance(extras, Mapping):
        _fail(path, "expected a dict {name: table (list of dicts) | heatmap dict}")
    for name, extra in extras.items():
        where = f"{path}[{name!r}]"
        if isinstance(extra, (list, tuple)):
            for i, row in enumerate(extra):
                if not isinstance(row, Mapping):
                    _fail(f"{where}[{i}]", f"table rows must be dicts, got {type(row).__name__}")
        elif isinstance(extra, Mapping) and "matrix" in extra:
            missing = [k for k in HEATMAP_KEYS if k not in extra]
            if missing:
                _fail(where, f"heatmap extra is missing {missing}")
            shape = np.shape(extra["matrix"])
            if shape != (len(extra["row_labels"]), len(extra["col_labels"])):
                _fail(where, f"heatmap matrix shape {shape} does not match "
                             f"{len(extra['row_labels'])} rows × {len(extra['col_labels'])} cols")
        elif not isinstance(extra, Mapping):
            _fail(where, "expected a list of dicts (table) or a dict (heatmap or free-form)")


def validate_results(results: Any) -> None:
    """Raise :class:`ResultsSchemaError` unless ``results`` follows the documented schema."""
    _check_keys(results, "results", TOP_KEYS_REQUIRED, TOP_KEYS_OPTIONAL)
    if results["protocol"] not in PROTOCOLS:
        _fail("results['protocol']", f"expected one of {PROTOCOLS}, got {results['protocol']!r}")
    if not isinstance(results["seed"], Integral) or isinstance(results["seed"], bool):
        _fail("results['seed']", f"expected an int, got {results['seed']!r}")
    names = results["class_names"]
    if (not isinstance(names, (list, tuple)) or len(names) < 2
            or not all(isinstance(n, str) for n in names)):
        _fail("results['class_names']", "expected a list of at least 2 class names (str)")
    if results.get("schema", SCHEMA) != SCHEMA:
        _fail("results['schema']", f"expected {SCHEMA!r}, got {results['schema']!r}")
    if "config" in results and not isinstance(results["config"], Mapping):
        _fail("results['config']", "expected a dict")
    if "notes" in results and not isinstance(results["notes"], (list, tuple)):
        _fail("results['notes']", "expected a list of str")
    if "extras" in results:
        _check_extras(results["extras"], "results['extras']")
    models = results["models"]
    if "statistics" in results:
        _check_statistics(results["statistics"], models)
    if not isinstance(models, Mapping) or not models:
        _fail("results['models']", "expected a non-empty dict {model name: model results}")
    for model, entry in models.items():
        path = f"results['models'][{model!r}]"
        if not isinstance(model, str) or not model:
            _fail("results['models']", f"model names must be non-empty str, got {model!r}")
        _check_keys(entry, path, MODEL_KEYS_REQUIRED, MODEL_KEYS_OPTIONAL)
        _check_per_subject(entry["per_subject"], f"{path}['per_subject']")
        if "confusion_matrix" in entry:
            _check_confusion(entry["confusion_matrix"], f"{path}['confusion_matrix']", len(names))
        if "learning_curves" in entry:
            _check_curves(entry["learning_curves"], f"{path}['learning_curves']")
        if "subject_notes" in entry and not isinstance(entry["subject_notes"], Mapping):
            _fail(f"{path}['subject_notes']", "expected a dict {subject: [str]}")
        if "info" in entry and not isinstance(entry["info"], Mapping):
            _fail(f"{path}['info']", "expected a dict")
        if "extras" in entry:
            _check_extras(entry["extras"], f"{path}['extras']")


def _check_statistics(statistics: Any, models: Any) -> None:
    """``statistics``: the reference model and paired comparisons between named models."""
    path = "results['statistics']"
    _check_keys(statistics, path, ("metric", "reference", "pairs"), ("n_bootstrap", "test"))
    names = set(models) if isinstance(models, Mapping) else set()
    if statistics["reference"] not in names:
        _fail(f"{path}['reference']", f"{statistics['reference']!r} is not a model of the report")
    for i, pair in enumerate(statistics["pairs"]):
        where = f"{path}['pairs'][{i}]"
        _check_keys(pair, where, ("model", "versus", "n", "mean_difference", "ci95",
                                  "wilcoxon_p"), ("wins", "losses"))
        for key in ("model", "versus"):
            if pair[key] not in names:
                _fail(f"{where}['{key}']", f"{pair[key]!r} is not a model of the report")


def to_json_safe(value: Any) -> Any:
    """Plain-JSON copy: numpy -> Python, NaN/Inf -> None, tuples -> lists, keys -> str."""
    if isinstance(value, Mapping):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return to_json_safe(value.tolist())
    if isinstance(value, (list, tuple, set)):
        return [to_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)  # Paths, enums, dataclass-free objects: readable rather than a crash
