"""The ``task`` section of a fine-tuning config: how windows get their labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from eegfm.config import ConfigError


@dataclass
class TaskConfig:
    """The ``task`` section of a fine-tuning config (see the module docstring)."""

    name: str = "task"
    """Name of the task in the report."""
    type: Literal["recording", "events"] = "recording"
    """recording: one label per recording, cut into windows; events: a window per event."""
    label_from: Literal["filename", "manifest", "csv"] = "filename"
    """Where a recording's label comes from (recording tasks)."""
    pattern: str | None = None
    """Regex searched in the source path, then the recording id (label_from: filename)."""
    field: str | None = None
    """Manifest field or recording attribute holding the label; a dotted name reads into a
    dict field: participant.sex (BIDS participants.tsv)."""
    csv: str | None = None
    """CSV with columns recording,label[,subject] (label_from: csv)."""
    classes: dict[str, str] | None = None
    """Raw label (or event code) -> class name, in order."""
    window_s: float = 4.0
    """Recording tasks: window length in s."""
    stride_s: float | None = None
    """Recording tasks: hop between windows in s (None: window_s)."""
    tmin_s: float | None = None
    """Events: window start relative to onset in s (moabb: from MOABB)."""
    tmax_s: float | None = None
    """Events: window end relative to onset in s."""
    reject_uv: float | None = None
    """Drop windows whose peak-to-peak amplitude exceeds this (µV)."""
    datasets: list[str] | None = None
    """Keep only recordings of these datasets."""
    subjects: list[str] | None = None
    """Keep only these subjects (ids as in the task set)."""
    moabb_paradigm: str | None = None
    """moabb data: a paradigm class (e.g. LeftRightImagery)."""

    def __post_init__(self) -> None:
        if self.classes is not None:
            self.classes = {str(k): str(v) for k, v in self.classes.items()}
            if len(set(self.classes.values())) < 2:
                raise ConfigError(f"task.classes must name at least 2 classes, got {self.classes}")
        if self.type == "recording":
            if self.label_from == "filename" and not self.pattern:
                raise ConfigError("task.pattern is needed with label_from: filename (a regex "
                                  "with a (?P<label>...) group, e.g. 'Subject(?P<subject>\\d+)_"
                                  "(?P<label>[12])')")
            if self.label_from == "filename" and "(?P<label>" not in self.pattern:
                raise ConfigError(f"task.pattern {self.pattern!r} needs a (?P<label>...) group")
            if self.label_from == "manifest" and not self.field:
                raise ConfigError("task.field is needed with label_from: manifest")
            if self.label_from == "csv" and not self.csv:
                raise ConfigError("task.csv is needed with label_from: csv")
        if self.window_s <= 0 or (self.stride_s is not None and self.stride_s <= 0):
            raise ConfigError("task.window_s and task.stride_s must be positive")
