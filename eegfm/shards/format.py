"""The shard format: names, records, manifest lines and attrs (shared by writer and reader)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np
import pandas as pd

FORMAT = "eegfm-shard"
FORMAT_VERSION = 2
OLDEST_FORMAT_VERSION = 1  # shards of every version from here on still read and validate
METADATA_CHECKSUM_VERSION = 2  # from this version on each recording carries METADATA_SHA256
METADATA_SHA256 = "metadata_sha256"  # group attr: checksum of positions, names, events, attrs
MANIFEST = "manifest.jsonl"
FAILURES = "failures.jsonl"
PREP_CONFIG = "prep_config.yaml"
EVENT_DTYPE = np.dtype(
    [("onset", "<i8"), ("duration", "<i8"), ("code", "<i8"), ("label", h5py.string_dtype())]
)
_MANIFEST_PART = re.compile(r"^manifest(-\d+)?\.jsonl$")
_JSON_ATTRS = "_json_attrs"  # names of group attrs stored as JSON text (lists, dicts, None)


@dataclass
class Recording:
    """One cleaned recording as prep hands it to the writer (data already in µV at shard sfreq)."""

    recording_id: str
    data: np.ndarray  # (C, T) float32 µV
    coords: np.ndarray  # (C, 3) float32 metres, finite
    ref_coords: np.ndarray  # (C, 3) float32, NaN for referential channels
    ch_names: list[str]
    events: pd.DataFrame = field(default_factory=lambda: empty_events())
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ManifestEntry:
    """One manifest line: where a recording lives and what it holds (+ the root it came from)."""

    recording_id: str
    shard: str
    dataset: str
    subject: str | None
    session: str | None
    run: str | None
    n_channels: int
    n_samples: int
    sfreq: float
    montage_id: str
    has_events: bool
    labels: list[str]
    sha256: str
    source: str
    source_sha256: str
    config_hash: str
    fingerprint: str = ""  # raw-sample fingerprint used to spot the same recording twice
    localization: dict = field(default_factory=dict)  # how coordinates were found (counts, ...)
    bad_channels: list = field(default_factory=list)  # flagged flat / noisy / bad in the file
    task: str | None = None  # BIDS entities beside subject/session/run (None elsewhere)
    acquisition: str | None = None
    participant: dict = field(default_factory=dict)  # the subject's BIDS participants.tsv row
    root: str = ""

    @property
    def duration_s(self) -> float:
        """Length of the stored recording in seconds."""
        return self.n_samples / self.sfreq

    def to_json(self) -> str:
        """The manifest line (without `root`, which is where the line was read from)."""
        record = dataclasses.asdict(self)
        record.pop("root")
        return json.dumps(record, ensure_ascii=False)


class Window(NamedTuple):
    """A window of one recording: data (C, L) float32 µV, coords/ref_coords (C, 3), names."""

    data: np.ndarray
    coords: np.ndarray
    ch_names: tuple[str, ...]
    ref_coords: np.ndarray


def empty_events() -> pd.DataFrame:
    """An events table with no rows and the contract's columns."""
    return events_frame([], [], [], [])


def events_frame(
    onset: Sequence[int], duration: Sequence[int], code: Sequence[int], label: Sequence[str]
) -> pd.DataFrame:
    """Build an events table (onset/duration in samples, integer code, string label)."""
    return pd.DataFrame(
        {
            "onset": np.asarray(onset, dtype=np.int64),
            "duration": np.asarray(duration, dtype=np.int64),
            "code": np.asarray(code, dtype=np.int64),
            "label": pd.Series([str(x) for x in label], dtype=object),
        }
    )


# --------------------------------------------------------------------------------------- manifest
def manifest_files(root: os.PathLike) -> list[Path]:
    """`manifest.jsonl` and the `manifest-NNNNN.jsonl` parts of a shard directory, sorted."""
    root = Path(root)
    return sorted(p for p in root.iterdir() if p.is_file() and _MANIFEST_PART.match(p.name))


def read_manifest(root: os.PathLike) -> list[ManifestEntry]:
    """Every manifest line of a shard directory (all SLURM parts merged), in file order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"shard directory {root} does not exist")
    files = manifest_files(root)
    if not files:
        raise FileNotFoundError(
            f"no {MANIFEST} in {root}: is it a shard directory written by `eegfm prep`?"
        )
    names = {f.name for f in dataclasses.fields(ManifestEntry)} - {"root"}
    entries = []
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                entry = ManifestEntry(
                    **{k: v for k, v in record.items() if k in names}, root=str(root)
                )
            except (json.JSONDecodeError, TypeError) as error:
                raise ValueError(f"{path}:{number}: malformed manifest line ({error})") from error
            if not _is_plain_name(entry.shard):
                raise ValueError(f"{path}:{number}: shard {entry.shard!r} is not a file name "
                                 "inside the shard directory (manifests list plain names)")
            entries.append(entry)
    return entries


def _is_plain_name(name: object) -> bool:
    """A file name with no directory part: what the writer records, and all a reader opens."""
    return (isinstance(name, str) and name not in ("", ".", "..")
            and Path(name).name == name and "\\" not in name)


def write_jsonl_atomic(path: os.PathLike, lines: Iterable[str], durable: bool = True) -> None:
    """Replace a JSON-lines file atomically (temporary file, fsync if durable, rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.writelines(line + "\n" for line in lines)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """fsync a directory, so that a rename inside it survives a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_attrs(node: h5py.Group, attrs: dict) -> None:
    """Store attrs on an HDF5 node; lists, dicts and None go in as JSON text."""
    as_json = []
    for key, value in attrs.items():
        if isinstance(value, (str, bool, int, float, np.integer, np.floating)):
            node.attrs[key] = value
        else:
            node.attrs[key] = json.dumps(value, default=_json_default, ensure_ascii=False)
            as_json.append(key)
    node.attrs[_JSON_ATTRS] = json.dumps(as_json)


def read_attrs(node: h5py.Group) -> dict:
    """The attrs written by `write_attrs`, decoded to Python values."""
    as_json = set(json.loads(node.attrs.get(_JSON_ATTRS, "[]")))
    out = {}
    for key, value in node.attrs.items():
        if key == _JSON_ATTRS:
            continue
        if isinstance(value, bytes):
            value = value.decode()
        out[key] = json.loads(value) if key in as_json else _plain(value)
    return out


def metadata_sha256(group: h5py.Group) -> str:
    """Checksum of a recording's metadata: coords, ref_coords, ch_names, events and attrs.

    Taken over canonical bytes, not HDF5's layout, so that a copy or a rewrite keeps it:
    positions as little-endian float64, names and event labels as UTF-8 joined by NUL, event
    columns as little-endian int64, and the attrs (all but this checksum) as sorted compact JSON
    of their decoded values. Each part is framed by its name and length.
    """
    sha = hashlib.sha256()

    def part(name: str, payload: bytes) -> None:
        sha.update(name.encode() + b"\0" + len(payload).to_bytes(8, "little"))
        sha.update(payload)

    for name in ("coords", "ref_coords"):
        part(name, np.asarray(group[name][()], dtype="<f8").tobytes())
    part("ch_names", "\0".join(group["ch_names"].asstr()[()]).encode())
    events = group["events"][()]
    for column in ("onset", "duration", "code"):
        part(f"events.{column}", np.asarray(events[column], dtype="<i8").tobytes())
    labels = [x.decode() if isinstance(x, bytes) else str(x) for x in events["label"]]
    part("events.label", "\0".join(labels).encode())
    attrs = {k: v for k, v in read_attrs(group).items() if k != METADATA_SHA256}
    text = json.dumps(attrs, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      default=_json_default)
    part("attrs", text.encode())
    return sha.hexdigest()


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
