"""The HDF5 shard contract: writer, manifest, lazy window reader and validation.

A shard directory holds `manifest.jsonl` (plus `manifest-NNNNN.jsonl` parts written by SLURM array
tasks), `failures.jsonl`, `prep_config.yaml` and `shard-*.h5` files. Each shard is written under a
temporary name and renamed when closed; its manifest lines are added (atomically) only after the
rename, so a crash never leaves a listed shard that is incomplete.

Each recording is one HDF5 group: `data` float32 (C, T) µV chunked (C, ~2 s), `coords` and
`ref_coords` float32 (C, 3) metres, `ch_names`, an `events` table and provenance attrs. The stored
`sha256` is taken over the data in sample-major order (T, C) as little-endian bytes of the stored
dtype, so it can be computed while a recording is streamed in time chunks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np
import pandas as pd

FORMAT = "eegfm-shard"
FORMAT_VERSION = 1
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


def events_frame(onset, duration, code, label) -> pd.DataFrame:
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
            entries.append(entry)
    return entries


def write_jsonl_atomic(path: os.PathLike, lines: Iterable[str]) -> None:
    """Replace a JSON-lines file atomically (temporary file, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.writelines(line + "\n" for line in lines)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------- writer
class RecordingStream:
    """Writes one recording into an open shard, time chunk by time chunk, hashing as it goes."""

    def __init__(
        self,
        writer: ShardWriter,
        recording_id: str,
        *,
        ch_names: Sequence[str],
        coords: np.ndarray,
        ref_coords: np.ndarray,
        n_samples: int,
    ):
        n_channels = len(ch_names)
        coords = np.asarray(coords, dtype=np.float32)
        ref_coords = np.asarray(ref_coords, dtype=np.float32)
        if "/" in recording_id or not recording_id:
            raise ValueError(f"recording_id {recording_id!r} must be non-empty and contain no '/'")
        if coords.shape != (n_channels, 3) or ref_coords.shape != (n_channels, 3):
            raise ValueError(f"{recording_id}: coords and ref_coords must be ({n_channels}, 3)")
        if not np.isfinite(coords).all():
            raise ValueError(f"{recording_id}: coords must be finite (drop unlocated channels)")
        if n_channels == 0 or n_samples <= 0:
            raise ValueError(f"{recording_id}: empty recording ({n_channels} x {n_samples})")
        self.writer, self.recording_id, self.n_samples = writer, recording_id, int(n_samples)
        h5 = writer._shard_file()
        if recording_id in h5:
            raise ValueError(f"recording {recording_id} is already in {writer._tmp_path.name}")
        self._group = h5.create_group(recording_id)
        chunk = max(1, min(self.n_samples, round(writer.chunk_s * writer.sfreq)))
        self._data = self._group.create_dataset(
            "data",
            shape=(n_channels, self.n_samples),
            dtype=writer.dtype,
            chunks=(n_channels, chunk),
        )
        self._group["coords"] = coords
        self._group["ref_coords"] = ref_coords
        self._group["ch_names"] = np.array(list(ch_names), dtype=h5py.string_dtype())
        self._position = 0
        self._sha = hashlib.sha256()

    def write(self, chunk: np.ndarray) -> None:
        """Append the next (C, t) block of µV data."""
        block = np.asarray(chunk)
        stop = self._position + block.shape[1]
        if block.ndim != 2 or block.shape[0] != self._data.shape[0] or stop > self.n_samples:
            raise ValueError(
                f"{self.recording_id}: block {block.shape} does not fit "
                f"{self._data.shape} at sample {self._position}"
            )
        if not np.isfinite(block).all():
            raise ValueError(f"{self.recording_id}: refusing to store NaN/Inf values")
        stored = block.astype(self.writer.dtype, copy=False)
        self._data[:, self._position : stop] = stored
        self._sha.update(
            np.ascontiguousarray(stored.T)
            .astype(stored.dtype.newbyteorder("<"), copy=False)
            .tobytes()
        )
        self._position = stop

    def abort(self) -> None:
        """Remove the unfinished recording from the shard."""
        del self.writer._shard_file()[self.recording_id]

    def finish(self, events: pd.DataFrame | None = None, attrs: dict | None = None) -> None:
        """Store events and attrs and register the manifest entry with the writer."""
        if self._position != self.n_samples:
            raise ValueError(
                f"{self.recording_id}: wrote {self._position} of {self.n_samples} samples"
            )
        events = empty_events() if events is None else events
        table = np.empty(len(events), dtype=EVENT_DTYPE)
        for column in ("onset", "duration", "code"):
            table[column] = events[column].to_numpy(dtype=np.int64)
        table["label"] = [str(x) for x in events["label"]]
        self._group.create_dataset("events", data=table, dtype=EVENT_DTYPE)
        attrs = dict(attrs or {})
        attrs["sha256"] = self._sha.hexdigest()
        write_attrs(self._group, attrs)
        self.writer._add_entry(self._entry(attrs, events))

    def _entry(self, attrs: dict, events: pd.DataFrame) -> ManifestEntry:
        return ManifestEntry(
            recording_id=self.recording_id,
            shard=self.writer._final_path.name,
            dataset=str(attrs.get("dataset", "")),
            subject=attrs.get("subject"),
            session=attrs.get("session"),
            run=attrs.get("run"),
            n_channels=int(self._data.shape[0]),
            n_samples=self.n_samples,
            sfreq=float(self.writer.sfreq),
            montage_id=str(attrs.get("montage_id", "")),
            has_events=len(events) > 0,
            labels=sorted({str(x) for x in events["label"]}),
            sha256=attrs["sha256"],
            source=str(attrs.get("source", "")),
            source_sha256=str(attrs.get("source_sha256", "")),
            config_hash=self.writer.config_hash,
            fingerprint=str(attrs.get("fingerprint", "")),
            localization=dict(attrs.get("localization") or {}),
            bad_channels=list(attrs.get("bad_channels") or []),
        )


class ShardWriter:
    """Writes recordings into `PREFIX-NNNNN.h5` shards closed once they reach `max_shard_bytes`.

    Each shard is written as `*.h5.tmp` and renamed on close; the manifest (`manifest_name`,
    None for none) is then replaced atomically with its lines added. Use as a context manager.
    """

    def __init__(
        self,
        out_dir: os.PathLike,
        *,
        sfreq: float,
        shard_prefix: str = "shard",
        max_shard_bytes: float = 1e9,
        manifest_name: str | None = MANIFEST,
        config_hash: str = "",
        dtype: str = "float32",
        chunk_s: float = 2.0,
        created_by: str | None = None,
        durable: bool = True,
    ):
        from eegfm import __version__

        if dtype not in ("float32", "float16"):
            raise ValueError(f"shard dtype must be float32 or float16, got {dtype!r}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.sfreq, self.shard_prefix = float(sfreq), shard_prefix
        self.max_shard_bytes = max_shard_bytes
        self.manifest_name, self.config_hash = manifest_name, config_hash
        self.dtype, self.chunk_s = np.dtype(dtype), chunk_s
        self.created_by = created_by or f"eegfm {__version__}"
        self.durable = durable  # fsync shards and manifests (off for scratch files)
        pattern = re.compile(rf"^{re.escape(shard_prefix)}-(\d+)\.h5$")
        taken = [int(m.group(1)) for p in self.out_dir.iterdir() if (m := pattern.match(p.name))]
        self._next_index = max(taken, default=-1) + 1
        self._h5: h5py.File | None = None
        self._pending: list[ManifestEntry] = []
        self._bytes = 0
        self.entries: list[ManifestEntry] = []
        self.last_entry: ManifestEntry | None = None  # the recording written last

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        if exc_info[0] is None:
            self.close()
        else:
            self.abort()

    @property
    def _final_path(self) -> Path:
        return self.out_dir / f"{self.shard_prefix}-{self._next_index:05d}.h5"

    @property
    def _tmp_path(self) -> Path:
        return self._final_path.with_name(self._final_path.name + ".tmp")

    def _shard_file(self) -> h5py.File:
        if self._h5 is None:
            self._h5 = h5py.File(self._tmp_path, "w", rdcc_nbytes=64 << 20)
            self._h5.attrs.update(
                format=FORMAT,
                format_version=FORMAT_VERSION,
                sfreq=self.sfreq,
                units="uV",
                created_by=self.created_by,
                config_hash=self.config_hash,
            )
        return self._h5

    def _add_entry(self, entry: ManifestEntry) -> None:
        # A shard closes once it holds max_shard_bytes: the decision depends only on recordings
        # that were written in full, so failed ones never move a shard boundary.
        self._pending.append(entry)
        self.last_entry = entry
        self._bytes += entry.n_channels * entry.n_samples * self.dtype.itemsize
        if self._bytes >= self.max_shard_bytes:
            self._close_shard()

    def open_recording(
        self,
        recording_id: str,
        *,
        ch_names: Sequence[str],
        coords: np.ndarray,
        ref_coords: np.ndarray,
        n_samples: int,
    ) -> RecordingStream:
        """Start streaming a recording into the current shard; call `finish` when done."""
        return RecordingStream(
            self,
            recording_id,
            ch_names=ch_names,
            coords=coords,
            ref_coords=ref_coords,
            n_samples=n_samples,
        )

    def write(self, recording: Recording) -> None:
        """Write one in-memory recording."""
        stream = self.open_recording(
            recording.recording_id,
            ch_names=recording.ch_names,
            coords=recording.coords,
            ref_coords=recording.ref_coords,
            n_samples=recording.data.shape[1],
        )
        try:
            stream.write(recording.data)
            stream.finish(recording.events, recording.attrs)
        except Exception:
            stream.abort()
            raise

    def write_staged(self, staged: ManifestEntry) -> None:
        """Copy a recording from a closed staging shard (one written by another process)."""
        source = Path(staged.root) / staged.shard
        h5 = self._shard_file()
        with h5py.File(source, "r") as src:
            stored_dtype = src[staged.recording_id]["data"].dtype
            if float(src.attrs["sfreq"]) != self.sfreq or stored_dtype != self.dtype:
                raise ValueError(
                    f"{source}: staged recording has another sfreq or dtype "
                    f"than shard {self._final_path.name}"
                )
            src.copy(src[staged.recording_id], h5, name=staged.recording_id)
        self._add_entry(
            dataclasses.replace(
                staged, shard=self._final_path.name, root="", config_hash=self.config_hash
            )
        )

    def _close_shard(self) -> None:
        if self._h5 is None:
            return
        self._h5.flush()
        if self.durable:
            os.fsync(self._h5.id.get_vfd_handle())
        self._h5.close()
        self._h5 = None
        os.replace(self._tmp_path, self._final_path)
        if self.durable:
            _fsync_dir(self.out_dir)
        if self.manifest_name is not None:
            path = self.out_dir / self.manifest_name
            old = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
            write_jsonl_atomic(path, [*old, *(e.to_json() for e in self._pending)])
        root = str(self.out_dir)
        self.entries += [dataclasses.replace(e, root=root) for e in self._pending]
        self._pending, self._bytes = [], 0
        self._next_index += 1

    def close(self) -> list[ManifestEntry]:
        """Close (rename, list) the current shard; return every entry this writer wrote."""
        self._close_shard()
        return list(self.entries)

    def abort(self) -> None:
        """Drop the current unfinished shard (nothing of it is listed)."""
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None
            self._tmp_path.unlink(missing_ok=True)
        self._pending, self._bytes = [], 0


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


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# ----------------------------------------------------------------------------------------- reader
class ShardReader:
    """Random-access reader over one or more shard directories.

    Picklable: HDF5 handles are opened lazily in the process that reads (and reopened after a
    fork), so a reader built in the main process can go into DataLoader workers.
    """

    def __init__(
        self,
        roots: os.PathLike | Sequence[os.PathLike],
        *,
        max_open_files: int = 128,
        rdcc_nbytes: int = 4 << 20,
    ):
        roots = [roots] if isinstance(roots, (str, os.PathLike)) else list(roots)
        self.roots = [Path(r) for r in roots]
        self.entries: list[ManifestEntry] = []
        self.last_entry: ManifestEntry | None = None  # the recording written last
        self._index: dict[str, ManifestEntry] = {}
        for root in self.roots:
            for entry in read_manifest(root):
                if entry.recording_id in self._index:
                    other = self._index[entry.recording_id]
                    raise ValueError(
                        f"recording {entry.recording_id} is listed in both "
                        f"{other.root} and {entry.root}: rename one dataset"
                    )
                self._index[entry.recording_id] = entry
                self.entries.append(entry)
        self.max_open_files, self.rdcc_nbytes = max_open_files, rdcc_nbytes
        self._reset_handles()

    def _reset_handles(self) -> None:
        self._pid = os.getpid()
        self._files: OrderedDict[Path, h5py.File] = OrderedDict()
        self._cache: dict[str, tuple] = {}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for key in ("_files", "_cache", "_pid"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset_handles()

    def __len__(self) -> int:
        return len(self.entries)

    def entry(self, recording_id: str) -> ManifestEntry:
        """The manifest entry of a recording."""
        try:
            return self._index[recording_id]
        except KeyError:
            roots = ", ".join(str(r) for r in self.roots)
            raise KeyError(f"no recording {recording_id!r} in {roots}") from None

    def _file(self, path: Path) -> h5py.File:
        handle = self._files.get(path)
        if handle is None:
            if len(self._files) >= self.max_open_files:
                _, oldest = self._files.popitem(last=False)
                self._cache = {k: v for k, v in self._cache.items() if v[4] is not oldest}
                oldest.close()
            handle = h5py.File(path, "r", rdcc_nbytes=self.rdcc_nbytes, rdcc_nslots=10007)
            self._files[path] = handle
        else:
            self._files.move_to_end(path)
        return handle

    def _open(self, recording_id: str) -> tuple:
        if self._pid != os.getpid():  # forked: h5py handles must not be shared across processes
            self._reset_handles()
        cached = self._cache.get(recording_id)
        if cached is None:
            entry = self.entry(recording_id)
            handle = self._file(Path(entry.root) / entry.shard)
            group = handle[recording_id]
            names = tuple(group["ch_names"].asstr()[()])
            cached = (
                group["data"],
                group["coords"][()],
                names,
                group["ref_coords"][()],
                handle,
                entry.n_samples,
                group,
            )
            self._cache[recording_id] = cached
        return cached

    def read_window(self, recording_id: str, start: int, length: int) -> Window:
        """Samples [start, start + length) of one recording, without loading the rest."""
        data, coords, names, ref_coords, _, n_samples, _ = self._open(recording_id)
        if start < 0 or length <= 0 or start + length > n_samples:
            raise IndexError(
                f"window [{start}, {start + length}) outside {recording_id} (0..{n_samples})"
            )
        block = data[:, start : start + length]
        return Window(
            block if block.dtype == np.float32 else block.astype(np.float32),
            coords,
            names,
            ref_coords,
        )

    def read_recording(self, recording_id: str) -> Window:
        """The whole recording."""
        return self.read_window(recording_id, 0, self.entry(recording_id).n_samples)

    def events(self, recording_id: str) -> pd.DataFrame:
        """The events table (onset/duration in samples at the shard sfreq)."""
        table = self._open(recording_id)[6]["events"][()]
        return events_frame(
            table["onset"],
            table["duration"],
            table["code"],
            [x.decode() if isinstance(x, bytes) else x for x in table["label"]],
        )

    def attrs(self, recording_id: str) -> dict:
        """The provenance attrs of a recording."""
        return read_attrs(self._open(recording_id)[6])

    def close(self) -> None:
        """Close every open HDF5 handle."""
        for handle in self._files.values():
            handle.close()
        self._reset_handles()


# ------------------------------------------------------------------------------------- validation
REQUIRED_ATTRS = (
    "dataset",
    "subject",
    "session",
    "run",
    "source",
    "source_sha256",
    "orig_sfreq",
    "montage_id",
    "reference",
    "highpass",
    "lowpass",
    "line_freq",
    "bad_channels",
    "sha256",
)


def data_sha256(dataset: h5py.Dataset, block_samples: int = 1 << 16) -> str:
    """Recompute the stored checksum of a `data` dataset (sample-major bytes)."""
    sha = hashlib.sha256()
    for start in range(0, dataset.shape[1], block_samples):
        block = dataset[:, start : start + block_samples]
        sha.update(
            np.ascontiguousarray(block.T)
            .astype(block.dtype.newbyteorder("<"), copy=False)
            .tobytes()
        )
    return sha.hexdigest()


def validate_shards(root: os.PathLike, progress: bool = False) -> list[str]:
    """Check schema and recompute every checksum; return the problems found (empty = valid)."""
    root = Path(root)
    try:
        entries = read_manifest(root)
    except (FileNotFoundError, ValueError) as error:
        return [str(error)]
    problems = []
    if not (root / PREP_CONFIG).is_file():
        problems.append(f"{root}: {PREP_CONFIG} is missing")
    by_shard: dict[str, list[ManifestEntry]] = {}
    for entry in entries:
        by_shard.setdefault(entry.shard, []).append(entry)
    seen = set()
    for entry in entries:
        if entry.recording_id in seen:
            problems.append(f"recording {entry.recording_id} is listed twice")
        seen.add(entry.recording_id)
    listed = set(by_shard)
    for path in sorted(root.glob("*.h5")):
        if path.name not in listed:
            problems.append(
                f"{path.name}: shard not listed in any manifest (interrupted prep? "
                "re-run `eegfm prep` with the same --out to finish)"
            )
    shards = sorted(by_shard.items())
    if progress:
        from tqdm import tqdm

        shards = tqdm(shards, desc="validate", unit="shard")
    for shard, shard_entries in shards:
        problems += _validate_shard(root / shard, shard_entries)
    return problems


def _validate_shard(path: Path, entries: list[ManifestEntry]) -> list[str]:
    if not path.is_file():
        return [f"{path.name}: listed in the manifest but missing"]
    problems = []
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        return [f"{path.name}: cannot open ({error})"]
    with handle:
        attrs = dict(handle.attrs)
        if attrs.get("format") != FORMAT or int(attrs.get("format_version", -1)) != FORMAT_VERSION:
            problems.append(f"{path.name}: not an {FORMAT} v{FORMAT_VERSION} file")
        if attrs.get("units") != "uV":
            problems.append(f"{path.name}: units attr is {attrs.get('units')!r}, expected 'uV'")
        for entry in entries:
            try:
                problems += [
                    f"{path.name}: recording {entry.recording_id}: {p}"
                    for p in _validate_recording(handle, entry, attrs)
                ]
            except Exception as error:  # any HDF5 read error means damage; report, keep going
                problems.append(
                    f"{path.name}: recording {entry.recording_id}: unreadable "
                    f"({type(error).__name__}: {error})"
                )
    return problems


def _validate_recording(handle: h5py.File, entry: ManifestEntry, file_attrs: dict) -> list[str]:
    if entry.recording_id not in handle:
        return ["group missing"]
    group = handle[entry.recording_id]
    problems = []
    shape = (entry.n_channels, entry.n_samples)
    if group["data"].shape != shape or group["data"].dtype not in (np.float32, np.float16):
        problems.append(f"data is {group['data'].shape} {group['data'].dtype}, expected {shape}")
    for name in ("coords", "ref_coords"):
        if group[name].shape != (entry.n_channels, 3):
            problems.append(f"{name} has shape {group[name].shape}")
    if not np.isfinite(group["coords"][()]).all():
        problems.append("coords are not all finite")
    if len(group["ch_names"]) != entry.n_channels:
        problems.append("ch_names length differs from n_channels")
    if group["events"].dtype.names != EVENT_DTYPE.names:
        problems.append(f"events columns are {group['events'].dtype.names}")
    attrs = read_attrs(group)
    missing = [k for k in REQUIRED_ATTRS if k not in attrs]
    if missing:
        problems.append(f"attrs missing: {missing}")
    if float(file_attrs.get("sfreq", -1)) != entry.sfreq:
        problems.append(f"manifest sfreq {entry.sfreq} differs from shard sfreq")
    if attrs.get("sha256") != entry.sha256:
        problems.append("sha256 in the manifest differs from the one stored in the shard")
    if not problems:
        computed = data_sha256(group["data"])
        if computed != entry.sha256:
            problems.append(
                f"data checksum mismatch (stored {entry.sha256[:12]}, "
                f"computed {computed[:12]}): the data is damaged"
            )
    return problems
