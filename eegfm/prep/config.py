"""Prep configuration: one flat, typed dataclass mirrored by configs/prep/default.yaml."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from eegfm.config import ConfigError, from_mapping, read_yaml

# Default entity pattern: `Subject07_2.edf` -> subject 07, run 2; `sub-01_ses-02_run-3` -> 01/02/3.
DEFAULT_ENTITY_REGEX = (
    r"(?i)sub(?:ject)?[-_]?(?P<subject>[0-9]+)"
    r"(?:[-_]ses(?:sion)?[-_]?(?P<session>[0-9A-Za-z]+))?"
    r"(?:[-_](?:run[-_]?)?(?P<run>[0-9]+))?"
)
HASH_KEY = "config_hash"  # written into prep_config.yaml next to the settings, not one of them


class PrepError(Exception):
    """A recording or config that cannot be converted; the message names the file and the fix."""


@dataclass(frozen=True)
class PrepConfig:
    """Every knob of `eegfm prep`; all of them enter `config_hash`."""

    sfreq: float = 200.0
    """Common sampling rate of every shard (Hz)."""
    highpass_hz: float | None = 0.5
    """Band-pass lower edge (Hz); None: no high-pass."""
    lowpass_hz: float | None = 75.0
    """Band-pass upper edge (Hz); None: anti-aliasing only."""
    transition_hz: float | None = None
    """FIR transition width (Hz); None: min(max(highpass / 4, 2), highpass)."""
    line_freq_hz: float | None = 50.0
    """Notch (and harmonics below lowpass) when the file names no line frequency."""
    notch_width_hz: float = 2.0
    """Width of each notch (Hz)."""
    reference: str = "average"
    """'average' (over channels not flagged bad) or 'none'."""
    min_channels: int = 2
    """Fewer located EEG channels: the recording fails."""
    flat_std_uv: float = 0.5
    """Band-passed std below this (µV): channel flagged flat."""
    noisy_std_ratio: float = 10.0
    """Std above this x the median channel std: channel flagged noisy."""
    stim_events: str = "auto"
    """'auto' (stim channels only without annotations), 'always' or 'never'."""
    chunk_s: float = 60.0
    """Processing block length (memory); the output does not change with it."""
    chunk_mb: float = 256.0
    """Cap on one block of input samples (float64) in memory."""
    shard_max_bytes: int = 1_000_000_000
    """Size at which a shard file is closed and the next begun."""
    shard_dtype: str = "float32"
    """Sample type of the shards: 'float32' or 'float16'."""
    shard_chunk_s: float = 2.0
    """HDF5 chunk length along time (s)."""
    dataset: str | None = None
    """Dataset name; None: the name of the source folder."""
    entity_regex: str = DEFAULT_ENTITY_REGEX
    """Subject/session/run from a file name (named groups subject, session, run)."""
    reader_options: list[dict] = field(default_factory=list)
    """Reader options by file: [{match: glob, options: {...}}]."""
    montages: list[dict] = field(default_factory=list)
    """Montages by file: [{match: glob, montage: path or name}]."""
    event_codes: dict[str, int] = field(default_factory=dict)
    """Label -> code for annotations."""
    moabb_options: dict[str, dict] = field(default_factory=dict)
    """MOABB dataset name -> constructor keyword arguments."""
    allow_truncated: bool = False
    """Convert the readable part of a truncated EDF/BDF."""

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
    """Read a prep YAML (None: built-in defaults, the values of configs/prep/default.yaml) and
    apply ``overrides`` (None values included: ``lowpass_hz=None`` removes the low-pass)."""
    where = "prep config" if path is None else f"prep config {path}"
    try:
        values = read_yaml(path) if path is not None else {}
        values.pop(HASH_KEY, None)  # a prep_config.yaml written by a run can be reused
        return from_mapping(PrepConfig, {**values, **overrides}, where)
    except ConfigError as error:
        raise PrepError(str(error)) from None


def config_hash(config: PrepConfig) -> str:
    """16 hex chars identifying every setting that changes the output."""
    text = json.dumps(config.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_prep_config(config: PrepConfig, path: os.PathLike) -> None:
    """Write the exact config and its hash (prep_config.yaml of a shard directory)."""
    record = {HASH_KEY: config_hash(config), **config.to_dict()}
    Path(path).write_text(yaml.safe_dump(record, sort_keys=False), encoding="utf-8")
