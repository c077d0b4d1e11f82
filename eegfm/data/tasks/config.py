"""The ``task`` section of a fine-tuning config: how windows get their labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from eegfm.config import ConfigError


@dataclass
class TaskConfig:
    """The ``task`` section of a fine-tuning config (see the module docstring)."""

    name: str = "task"
    type: Literal["recording", "events"] = "recording"
    label_from: Literal["filename", "manifest", "csv"] = "filename"
    pattern: str | None = None  # regex searched in the source path, then the recording id
    field: str | None = None  # manifest field or recording attribute holding the label;
    # a dotted name reads into a dict field: participant.sex (BIDS participants.tsv)
    csv: str | None = None  # CSV with columns recording,label[,subject]
    classes: dict[str, str] | None = None  # raw label (or event code) -> class name, in order
    window_s: float = 4.0  # recording tasks: window length
    stride_s: float | None = None  # recording tasks: hop between windows (None: window_s)
    tmin_s: float | None = None  # events: window start relative to onset (moabb: from MOABB)
    tmax_s: float | None = None  # events: window end relative to onset
    reject_uv: float | None = None  # drop windows whose peak-to-peak exceeds this (µV)
    datasets: list[str] | None = None  # keep only recordings of these datasets
    subjects: list[str] | None = None  # keep only these subjects (ids as in the task set)
    moabb_paradigm: str | None = None  # moabb data: a paradigm class (e.g. LeftRightImagery)

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
