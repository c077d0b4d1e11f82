"""Labelled task windows for fine-tuning, cut from coordinate-tagged shards.

Three ways to label (``configs/finetune/*.yaml``, section ``task``):

- ``type: recording``: one label per recording, from a regex on the source path
  (``label_from: filename``), a manifest field or recording attribute (``manifest``; a dotted
  ``field`` such as ``participant.sex`` reads a BIDS participants.tsv column) or a CSV of
  recording -> label (``csv``); each recording is cut into fixed windows (``window_s``,
  ``stride_s``). eegmat, clinical normal/abnormal sets.
- ``type: events``: windows ``[onset + tmin_s, onset + tmax_s)`` around shard events whose label
  (or integer code) is a key of ``classes``.
- ``moabb:NAME[:subjects]`` data: converted by our prep pipeline into a cache, then cut around
  the events and interval MOABB defines for the dataset (see :mod:`eegfm.data.tasks.moabb`).

The result is an in-memory :class:`TaskSet`: every window as ``x (N, C, T)`` µV, zero-padded to
the largest montage with ``channel_mask``, plus coordinates, labels, subjects and provenance.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eegfm.config import ConfigError
from eegfm.console import progress as progress_bar
from eegfm.data.tasks.config import TaskConfig
from eegfm.data.tasks.cuts import Cut, event_cuts, recording_cuts
from eegfm.data.tasks.moabb import is_moabb, prepare_moabb
from eegfm.data.tasks.windows import (
    TaskDataError,
    class_map,
    class_names_of,
    peak_to_peak_ok,
    window_samples,
)
from eegfm.shards import ShardReader


@dataclass
class TaskSet:
    """Every labelled window of a task, in memory (one row per window).

    ``x (N, C, T)`` float32 µV, zero in padded channels; ``coords``/``ref_coords (N, C, 3)``
    metres (``ref_coords`` NaN for referential channels and padding); ``channel_mask (N, C)``;
    ``y (N,)`` class index into ``class_names``; ``subject``/``recording_id (N,)`` str;
    ``start (N,)`` window start in samples of its recording; ``ch_names`` per recording.
    """

    x: np.ndarray
    coords: np.ndarray
    ref_coords: np.ndarray
    channel_mask: np.ndarray
    y: np.ndarray
    subject: np.ndarray
    recording_id: np.ndarray
    start: np.ndarray
    class_names: list[str]
    sfreq: float
    ch_names: dict[str, tuple[str, ...]]
    name: str = "task"
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def window_s(self) -> float:
        """Window length in seconds."""
        return self.x.shape[-1] / self.sfreq

    def subset(self, index: np.ndarray) -> TaskSet:
        """The windows at ``index`` (a copy)."""
        index = np.asarray(index)
        return TaskSet(self.x[index], self.coords[index], self.ref_coords[index],
                       self.channel_mask[index], self.y[index], self.subject[index],
                       self.recording_id[index], self.start[index], list(self.class_names),
                       self.sfreq, dict(self.ch_names), self.name, dict(self.info))

    def common_channels(self) -> list[str]:
        """Channel labels present in every recording, in the first recording's order."""
        names = [self.ch_names[rec] for rec in dict.fromkeys(self.recording_id.tolist())]
        common = set(names[0]).intersection(*names[1:])
        return [c for c in names[0] if c in common]

    def channel_matrix(self, labels: Sequence[str]) -> np.ndarray:
        """``(N, len(labels), T)`` signal of the named channels (for fixed-montage baselines)."""
        out = np.empty((len(self), len(labels), self.x.shape[-1]), dtype=np.float32)
        for rec in np.unique(self.recording_id):
            rows = np.flatnonzero(self.recording_id == rec)
            names = list(self.ch_names[rec])
            try:
                picks = [names.index(label) for label in labels]
            except ValueError as error:
                raise TaskDataError(f"recording {rec} lacks a channel of {list(labels)}") from error
            out[rows] = self.x[rows][:, picks]
        return out

    def summary(self) -> dict[str, Any]:
        """Counts for the report: windows per class, subjects, recordings, rejections."""
        counts = Counter(self.y.tolist())
        return {
            "name": self.name,
            "n_windows": len(self),
            "n_subjects": int(np.unique(self.subject).size),
            "n_recordings": int(np.unique(self.recording_id).size),
            "windows_per_class": {c: int(counts.get(i, 0)) for i, c in enumerate(self.class_names)},
            "window_s": self.window_s,
            "sfreq": self.sfreq,
            "max_channels": int(self.x.shape[1]),
            **self.info,
        }


def build_task_set(task: TaskConfig, data: str | Path | Sequence[str | Path], *,
                   multiple_of: int = 1, sfreq: float | None = None, prep_config=None,
                   cache_dir: str | Path | None = None, progress: bool = True) -> TaskSet:
    """Cut the labelled windows of ``task`` from shard directories or a ``moabb:`` spec.

    ``multiple_of`` crops each window to a whole number of encoder patches; ``sfreq`` (the
    encoder's rate) must match the shards'. ``prep_config`` and ``cache_dir`` serve ``moabb:``.
    """
    subjects: set[str] | None = None
    if is_moabb(data):
        prepared = prepare_moabb(str(data), prep_config, cache_dir=cache_dir,
                                 paradigm=task.moabb_paradigm, progress=progress)
        classes = task.classes or {k: k for k in prepared.event_id}
        task = TaskConfig(**{**task.__dict__, "type": "events", "classes": classes,
                             "datasets": [prepared.dataset],
                             "tmin_s": prepared.tmin_s if task.tmin_s is None else task.tmin_s,
                             "tmax_s": prepared.tmax_s if task.tmax_s is None else task.tmax_s})
        roots: list[Path] = [prepared.shard_dir]
        subjects = set(prepared.subjects)
    else:
        roots = [Path(p) for p in ([data] if isinstance(data, (str, Path)) else data)]
        for root in roots:
            if not (root / "manifest.jsonl").is_file():
                raise TaskDataError(f"--data {root}: not a shard directory (no manifest.jsonl); "
                                    f"convert recordings first: eegfm prep SOURCE --out {root}")
    reader = ShardReader(roots)
    entries = [e for e in reader.entries
               if (task.datasets is None or e.dataset in task.datasets)
               and (subjects is None or str(e.subject) in subjects)]
    if not entries:
        raise TaskDataError(f"no recording in {', '.join(map(str, roots))} belongs to "
                            f"datasets {task.datasets} / subjects {sorted(subjects or [])}")
    rates = {float(e.sfreq) for e in entries}
    if len(rates) != 1 or (sfreq is not None and rates != {float(sfreq)}):
        raise TaskDataError(f"shards sampled at {sorted(rates)} Hz, the model expects {sfreq} Hz: "
                            "prep the data with the model's rate (prep config sfreq)")
    rate = rates.pop()
    if task.type == "events":
        if task.tmin_s is None or task.tmax_s is None or task.tmax_s <= task.tmin_s:
            raise ConfigError("task.tmin_s < task.tmax_s are needed for type: events "
                              f"(got {task.tmin_s}, {task.tmax_s})")
        length = window_samples(task.tmax_s - task.tmin_s, rate, multiple_of)
        cuts, info = event_cuts(task, reader, entries, rate, length)
    else:
        length = window_samples(task.window_s, rate, multiple_of)
        stride = round((task.stride_s or task.window_s) * rate)
        cuts, info = recording_cuts(task, reader, entries, length, stride)
    if task.subjects is not None:
        cuts = [cut for cut in cuts if cut.subject in set(map(str, task.subjects))]
        if not cuts:
            raise TaskDataError(f"task.subjects {task.subjects}: none of them is in the data")
    return _stack(task, reader, cuts, info, rate, length, progress)


def _stack(task: TaskConfig, reader, cuts: list[Cut], info: dict, rate: float, length: int,
           progress: bool) -> TaskSet:
    """Read the windows and stack them, padding channels; apply rejection and class mapping."""
    mapping = class_map(task.classes, [lab for cut in cuts for lab in cut.raw_labels])
    class_names = class_names_of(mapping)
    kept = [(cut, [i for i, lab in enumerate(cut.raw_labels) if lab in mapping]) for cut in cuts]
    kept = [(cut, keep) for cut, keep in kept if keep]
    n = sum(len(keep) for _, keep in kept)
    if n == 0:
        raise TaskDataError(f"task {task.name!r}: no window left with a label in "
                            f"task.classes {list(mapping)}")
    n_channels = max(reader.entry(cut.recording_id).n_channels for cut, _ in kept)
    x = np.zeros((n, n_channels, length), dtype=np.float32)
    coords = np.zeros((n, n_channels, 3), dtype=np.float32)
    ref_coords = np.full((n, n_channels, 3), np.nan, dtype=np.float32)
    mask = np.zeros((n, n_channels), dtype=bool)
    y, subject, recording, start = (np.zeros(n, np.int64), [], [], np.zeros(n, np.int64))
    ch_names: dict[str, tuple[str, ...]] = {}
    row = 0
    bar = _progress(len(kept), progress)
    for cut, keep in kept:
        window = reader.read_recording(cut.recording_id)
        c = window.data.shape[0]
        ch_names[cut.recording_id] = tuple(window.ch_names)
        for i in keep:
            s = int(cut.starts[i])
            x[row, :c] = window.data[:, s:s + length]
            coords[row, :c], ref_coords[row, :c], mask[row, :c] = (window.coords,
                                                                   window.ref_coords, True)
            y[row] = class_names.index(mapping[cut.raw_labels[i]])
            subject.append(cut.subject)
            recording.append(cut.recording_id)
            start[row] = s
            row += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    ok = peak_to_peak_ok(x, mask, task.reject_uv)
    rejected = Counter(np.asarray(class_names)[y[~ok]].tolist())
    info = {**info, "rejected_windows": {c: int(rejected.get(c, 0)) for c in class_names},
            "reject_uv": task.reject_uv}
    result = TaskSet(x, coords, ref_coords, mask, y, np.asarray(subject, dtype=str),
                     np.asarray(recording, dtype=str), start, class_names, rate, ch_names,
                     task.name, info)
    return result if ok.all() else result.subset(np.flatnonzero(ok))


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    return progress_bar(total=total, desc="task windows", unit="rec", leave=False)
