"""Prep configuration: one flat, typed dataclass mirrored by configs/prep/default.yaml."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Default entity pattern: `Subject07_2.edf` -> subject 07, run 2; `sub-01_ses-02_run-3` -> 01/02/3.
DEFAULT_ENTITY_REGEX = (
    r"(?i)sub(?:ject)?[-_]?(?P<subject>[0-9]+)"
    r"(?:[-_]ses(?:sion)?[-_]?(?P<session>[0-9A-Za-z]+))?"
    r"(?:[-_](?:run[-_]?)?(?P<run>[0-9]+))?"
)


class PrepError(Exception):
    """A recording or config that cannot be converted; the message names the file and the fix."""


@dataclass(frozen=True)
class PrepConfig:
    """Every knob of `eegfm prep`; all of them enter `config_hash`."""

    sfreq: float = 200.0  # common sampling rate of every shard (Hz)
    highpass_hz: float | None = 0.5  # band-pass lower edge; None = no high-pass
    lowpass_hz: float | None = 75.0  # band-pass upper edge; None = anti-aliasing only
    transition_hz: float | None = None  # FIR transition width; None = min(max(hp / 4, 2), hp)
    line_freq_hz: float | None = 50.0  # notch (and harmonics below lowpass) when the file says none
    notch_width_hz: float = 2.0
    reference: str = "average"  # 'average' (over channels not flagged bad) or 'none'
    min_channels: int = 2  # fewer located EEG channels -> the recording fails
    flat_std_uv: float = 0.5  # band-passed std below this -> channel flagged flat
    noisy_std_ratio: float = 10.0  # std above this x median channel std -> flagged noisy
    stim_events: str = (
        "auto"  # 'auto' (stim channels only without annotations) | 'always' | 'never'
    )
    chunk_s: float = 60.0  # processing block length (memory), output unchanged by it
    chunk_mb: float = 256.0  # cap on one block of input samples (float64) in memory
    shard_max_bytes: int = 1_000_000_000
    shard_dtype: str = "float32"  # or 'float16'
    shard_chunk_s: float = 2.0  # HDF5 chunk length along time
    dataset: str | None = None  # dataset name; None = name of the source folder
    entity_regex: str = DEFAULT_ENTITY_REGEX  # subject/session/run from a file name
    reader_options: list[dict] = field(default_factory=list)  # [{match: glob, options: {...}}]
    montages: list[dict] = field(default_factory=list)  # [{match: glob, montage: path or name}]
    event_codes: dict[str, int] = field(default_factory=dict)  # label -> code for annotations
    moabb_options: dict[str, dict] = field(default_factory=dict)  # dataset -> constructor kwargs
    allow_truncated: bool = False  # convert the readable part of a truncated EDF/BDF

    def __post_init__(self) -> None:
        nyquist = self.sfreq / 2
        if self.sfreq <= 0:
            raise PrepError(f"prep config: sfreq must be positive, got {self.sfreq}")
        if self.lowpass_hz is not None and not 0 < self.lowpass_hz < nyquist:
            raise PrepError(
                f"prep config: lowpass_hz ({self.lowpass_hz}) must be below half "
                f"of sfreq ({nyquist}); lower it or raise sfreq"
            )
        if self.highpass_hz is not None and not 0 < self.highpass_hz < (self.lowpass_hz or nyquist):
            raise PrepError(
                f"prep config: highpass_hz ({self.highpass_hz}) must be positive "
                "and below lowpass_hz"
            )
        choices = {
            "reference": ("average", "none"),
            "stim_events": ("auto", "always", "never"),
            "shard_dtype": ("float32", "float16"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise PrepError(
                    f"prep config: {key} must be one of {allowed}, got {getattr(self, key)!r}"
                )
        positive = ("min_channels", "notch_width_hz", "chunk_s", "chunk_mb", "shard_max_bytes",
                    "shard_chunk_s", "noisy_std_ratio")
        for key in positive:
            if not getattr(self, key) > 0:
                raise PrepError(f"prep config: {key} must be positive, got {getattr(self, key)}")
        if self.flat_std_uv < 0:
            raise PrepError(f"prep config: flat_std_uv must be >= 0, got {self.flat_std_uv}")
        try:
            re.compile(self.entity_regex)
        except re.error as error:
            raise PrepError(f"prep config: entity_regex {self.entity_regex!r} is not a valid "
                            f"regular expression ({error})") from error
        for key in ("reader_options", "montages"):
            for rule in getattr(self, key):
                needed = {"match", "options" if key == "reader_options" else "montage"}
                if not isinstance(rule, dict) or set(rule) != needed:
                    raise PrepError(
                        f"prep config: every {key} entry needs exactly the keys "
                        f"{sorted(needed)}, got {rule!r}"
                    )

    @property
    def transition(self) -> float:
        """FIR transition width in Hz (explicit, or derived from the high-pass edge)."""
        if self.transition_hz is not None:
            return self.transition_hz
        if self.highpass_hz is None:
            return 2.0
        return min(max(self.highpass_hz / 4, 2.0), self.highpass_hz)  # MNE's rule for FIR edges

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, as written to prep_config.yaml."""
        return dataclasses.asdict(self)


def load_prep_config(path: os.PathLike | None = None, **overrides: Any) -> PrepConfig:
    """Read a prep YAML (None: built-in defaults, the values of configs/prep/default.yaml)."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            raise PrepError(f"cannot read prep config {path}: {error}") from error
        if not isinstance(values, dict):
            raise PrepError(f"prep config {path} must be a mapping of keys to values")
        values.pop("config_hash", None)  # a prep_config.yaml written by a run can be reused
    values.update(overrides)
    known = {f.name: f for f in dataclasses.fields(PrepConfig)}
    hints = typing.get_type_hints(PrepConfig)
    for key, value in values.items():
        if key not in known:
            raise PrepError(
                f"prep config {path or ''}: unknown key {key!r}; known keys: {', '.join(known)}"
            )
        values[key] = _coerce(key, value, hints[key])
    return PrepConfig(**values)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise PrepError(f"prep config: {key} cannot be null")
    for option in options:
        origin = typing.get_origin(option) or option
        if origin is bool and isinstance(value, bool):
            return value
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin in (str, list, dict) and isinstance(value, origin):
            return value
    raise PrepError(f"prep config: {key} must be {hint}, got {value!r}")


def config_hash(config: PrepConfig) -> str:
    """16 hex chars identifying every setting that changes the output."""
    text = json.dumps(config.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_prep_config(config: PrepConfig, path: os.PathLike) -> None:
    """Write the exact config and its hash (prep_config.yaml of a shard directory)."""
    record = {"config_hash": config_hash(config), **config.to_dict()}
    Path(path).write_text(yaml.safe_dump(record, sort_keys=False), encoding="utf-8")
