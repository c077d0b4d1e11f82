"""Which windows each recording gives: labels per recording (fixed windows) or event epochs.

Each builder returns one :class:`Cut` per recording (window starts + raw labels) and counts for
the report; :func:`eegfm.data.tasks.build_task_set` reads and stacks the windows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from eegfm.config import ConfigError
from eegfm.data.tasks.config import TaskConfig
from eegfm.data.tasks.windows import (
    TaskDataError,
    epoch_starts,
    event_matches,
    fixed_starts,
    label_from_pattern,
    read_label_csv,
    recording_keys,
)


@dataclass
class Cut:
    """The windows cut from one recording, before stacking."""

    recording_id: str
    subject: str
    starts: np.ndarray
    raw_labels: list[str]


def recording_cuts(task: TaskConfig, reader, entries, length: int, stride: int
                   ) -> tuple[list[Cut], dict]:
    """Fixed windows of ``length`` every ``stride`` samples over each labelled recording."""
    pattern = re.compile(task.pattern) if task.pattern else None
    table = read_label_csv(task.csv) if task.label_from == "csv" else {}
    cuts, unlabelled = [], []
    for entry in entries:
        found = recording_label(task, reader, entry, pattern, table)
        if found is None:
            unlabelled.append(entry.recording_id)
            continue
        starts = fixed_starts(entry.n_samples, length, stride)
        subject = found.get("subject") or entry.subject or entry.recording_id
        cuts.append(Cut(entry.recording_id, str(subject), starts, [found["label"]] * len(starts)))
    if not cuts:
        raise TaskDataError(f"task {task.name!r}: no recording got a label from "
                            f"{task.label_from} ({task.pattern or task.field or task.csv}); "
                            f"recordings seen, e.g. {[e.source for e in entries[:3]]}")
    return cuts, {"unlabelled_recordings": unlabelled}


def recording_label(task: TaskConfig, reader, entry, pattern, table) -> dict | None:
    """``{label, subject?}`` of one recording from its file name, the CSV or the manifest."""
    if task.label_from == "filename":
        return label_from_pattern(pattern, [entry.source or "", entry.recording_id])
    if task.label_from == "csv":
        for key in recording_keys(entry.recording_id, entry.source):
            if key in table:
                return table[key]
        return None
    value = field_value(entry, task.field)
    if value is None:
        value = field_value(reader.attrs(entry.recording_id), task.field)
    return None if value is None else {"label": str(value)}


def field_value(record: Any, name: str) -> Any:
    """A manifest field or attr; a dotted name reads into a dict (``participant.sex``)."""
    head, *keys = name.split(".")
    value = record.get(head) if isinstance(record, dict) else getattr(record, head, None)
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def event_cuts(task: TaskConfig, reader, entries, rate: float, length: int
               ) -> tuple[list[Cut], dict]:
    """Windows ``[onset + tmin_s, +length)`` around the events named in ``task.classes``."""
    if task.classes is None:
        raise ConfigError("task.classes is needed for type: events (event label or code -> "
                          "class name), e.g. {left_hand: left, right_hand: right}")
    cuts, outside = [], 0
    for entry in entries:
        events = reader.events(entry.recording_id)
        rows, keys = event_matches(events, task.classes)
        if not len(rows):
            continue
        starts, inside = epoch_starts(events["onset"].to_numpy()[rows], task.tmin_s, rate,
                                      length, entry.n_samples)
        outside += int((~inside).sum())
        cuts.append(Cut(entry.recording_id, str(entry.subject or entry.recording_id),
                         starts[inside], [k for k, ok in zip(keys, inside, strict=True) if ok]))
    if not cuts:
        raise TaskDataError(f"task {task.name!r}: no event matches task.classes "
                            f"{list(task.classes)} in {len(entries)} recording(s)")
    return cuts, {"epochs_outside_recording": outside}
