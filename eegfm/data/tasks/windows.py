"""Where task windows come from: labels per recording, epochs around events, rejection.

Pure functions over manifest entries, event tables and arrays; :mod:`eegfm.data.tasks`
assembles them into a :class:`~eegfm.data.tasks.TaskSet`.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


class TaskDataError(ValueError):
    """Task data cannot be built from the shards and config (the message says what to change)."""


def window_samples(duration_s: float, sfreq: float, multiple_of: int = 1) -> int:
    """Samples in a window of ``duration_s``, rounded down to a multiple of ``multiple_of``.

    The encoder needs a whole number of patches, so windows are cropped at the end to fit.
    """
    n = round(duration_s * sfreq)
    n -= n % max(multiple_of, 1)
    if n <= 0:
        raise TaskDataError(
            f"a window of {duration_s} s at {sfreq} Hz holds no whole block of {multiple_of} "
            "samples (the encoder's patch length); use a longer window"
        )
    return n


def fixed_starts(n_samples: int, length: int, stride: int) -> np.ndarray:
    """Start samples of consecutive windows of ``length`` every ``stride`` samples."""
    if stride < 1:
        raise TaskDataError(f"stride must be at least one sample, got {stride}")
    if n_samples < length:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_samples - length + 1, stride, dtype=np.int64)


def class_map(classes: Mapping[Any, str] | None, raw_labels: Sequence[str]) -> dict[str, str]:
    """Raw label (text) -> class name; ``None`` maps every raw label seen to itself, sorted."""
    if classes is None:
        return {label: label for label in sorted(set(raw_labels))}
    return {str(raw): str(name) for raw, name in classes.items()}


def class_names_of(mapping: Mapping[str, str]) -> list[str]:
    """Class names in the order they first appear in the mapping (the confusion order)."""
    names: list[str] = []
    for name in mapping.values():
        if name not in names:
            names.append(name)
    return names


# ------------------------------------------------------------------ labels per recording
def label_from_pattern(pattern: re.Pattern, texts: Sequence[str]) -> dict[str, str] | None:
    """Named groups (``label``, optional ``subject``) of the first text the pattern matches."""
    for text in texts:
        match = pattern.search(text)
        if match:
            return {k: v for k, v in match.groupdict().items() if v is not None}
    return None


def read_label_csv(path: str | Path) -> dict[str, dict[str, str]]:
    """``recording -> {label, subject?}`` from a CSV with columns ``recording,label[,subject]``."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise TaskDataError(f"task.csv: cannot read {path}: {error}") from error
    if not rows or not {"recording", "label"} <= set(rows[0]):
        raise TaskDataError(
            f"task.csv: {path} needs a header with the columns 'recording' and 'label' "
            "(and optionally 'subject')"
        )
    labels: dict[str, dict[str, str]] = {}
    for i, row in enumerate(rows, start=2):
        key = (row["recording"] or "").strip()
        if not key or not (row["label"] or "").strip():
            raise TaskDataError(f"task.csv: {path} line {i} has an empty recording or label")
        labels[key] = {k: row[k].strip() for k in ("label", "subject") if row.get(k)}
    return labels


def recording_keys(recording_id: str, source: str | None) -> list[str]:
    """Names a CSV row may use for a recording: id, source path, file name, file stem."""
    keys = [recording_id]
    if source:
        path = Path(source)
        keys += [source, path.name, path.stem]
    return keys


# ------------------------------------------------------------------------ epochs at events
def event_matches(events: pd.DataFrame, mapping: Mapping[str, str]) -> tuple[np.ndarray, list]:
    """Rows of ``events`` whose label (or integer code, as text) is a key of ``mapping``.

    Returns the row indices and the raw key each matched (label first, then code).
    """
    rows, keys = [], []
    for i, (label, code) in enumerate(zip(events["label"], events["code"], strict=True)):
        if str(label) in mapping:
            rows.append(i)
            keys.append(str(label))
        elif str(int(code)) in mapping:
            rows.append(i)
            keys.append(str(int(code)))
    return np.asarray(rows, dtype=np.int64), keys


def epoch_starts(
    onsets: np.ndarray, tmin_s: float, sfreq: float, length: int, n_samples: int
) -> tuple[np.ndarray, np.ndarray]:
    """Window starts ``onset + tmin`` and a mask of the windows inside the recording."""
    starts = np.asarray(onsets, dtype=np.int64) + round(tmin_s * sfreq)
    inside = (starts >= 0) & (starts + length <= n_samples)
    return starts, inside


def peak_to_peak_ok(
    x: np.ndarray, channel_mask: np.ndarray, threshold_uv: float | None
) -> np.ndarray:
    """``(N,)`` True for windows whose largest real-channel peak-to-peak is ≤ the threshold."""
    if threshold_uv is None:
        return np.ones(len(x), dtype=bool)
    ptp = np.ptp(x, axis=-1)  # (N, C)
    ptp = np.where(channel_mask, ptp, 0.0)
    return ptp.max(axis=1) <= threshold_uv
