"""Opening a source item: MNE readers with per-file options, provenance and fingerprints.

`load_item` yields the recordings of one `SourceItem` with their identity (dataset, subject,
session, run) and provenance (source files and their checksum).
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from eegfm.prep.config import PrepConfig, PrepError
from eegfm.prep.sources import (
    NIHON_KOHDEN_SIDECARS,
    RawRecording,
    SourceItem,
    entities_from_name,
    moabb_dataset,
)

if TYPE_CHECKING:
    import mne


def source_files(path: Path) -> list[Path]:
    """The files that make up one recording (header + data + sidecars, or an MFF folder)."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    lower = path.name.lower()
    siblings = {p.name: p for p in path.parent.iterdir() if p.is_file()}
    wanted: set[str] = set()
    if lower.endswith((".vhdr", ".ahdr")):
        text = path.read_text(encoding="latin-1", errors="replace")
        wanted = set(re.findall(r"(?im)^\s*(?:DataFile|MarkerFile)\s*=\s*(.+?)\s*$", text))
    elif lower.endswith(".set"):
        wanted = {n for n in siblings if n.lower() == lower[:-4] + ".fdt"}
    elif lower.endswith(".eeg"):
        stem = lower[:-4]
        wanted = {n for n in siblings if n.lower() in {stem + e for e in NIHON_KOHDEN_SIDECARS}}
    return [path, *sorted(siblings[n] for n in wanted if n in siblings)]


def sha256_files(paths: Sequence[Path], base: Path) -> str:
    """Checksum of the names (relative to base) and bytes of several files."""
    sha = hashlib.sha256()
    buffer = bytearray(1 << 20)  # one buffer read into: no new bytes object per megabyte
    view = memoryview(buffer)
    for path in paths:
        sha.update(path.relative_to(base).as_posix().encode() + b"\0")
        with open(path, "rb", buffering=0) as handle:
            while size := handle.readinto(buffer):
                sha.update(view[:size])
    return sha.hexdigest()


def raw_fingerprint(raw: mne.io.BaseRaw, seconds: float = 10.0) -> str:
    """Identity of a recording's samples, blind to channel names, order and scaling.

    The sign pattern of successive differences of the first seconds of every channel, with the
    rate and length: the same recording exported to another format (other names, other gain)
    has the same fingerprint.
    """
    stop = min(raw.n_times, max(1, int(seconds * raw.info["sfreq"])))
    signs = np.sign(np.nan_to_num(np.diff(raw.get_data(start=0, stop=stop), axis=1)))
    rows = sorted(hashlib.sha1(row.tobytes()).hexdigest() for row in signs.astype(np.int8))
    text = f"{raw.info['sfreq']}|{raw.n_times}|" + ",".join(rows)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def reader_options_for(path: str, config: PrepConfig) -> dict:
    """MNE reader keyword arguments configured for this file (later rules win)."""
    options: dict = {}
    for rule in config.reader_options:
        if fnmatch.fnmatch(path, rule["match"]) or fnmatch.fnmatch(Path(path).name, rule["match"]):
            options.update(rule["options"])
    return options


def montage_for(path: str, config: PrepConfig) -> str | None:
    """The user montage configured for this file, if any (last matching rule)."""
    chosen = None
    for rule in config.montages:
        if fnmatch.fnmatch(path, rule["match"]) or fnmatch.fnmatch(Path(path).name, rule["match"]):
            chosen = rule["montage"]
    return chosen


def edf_records(path: Path) -> tuple[int, int] | None:
    """(records the EDF/BDF header announces, complete records in the file), None if unreadable."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(256)
            header_bytes, n_records, n_signals = (
                int(head[184:192]),
                int(head[236:244]),
                int(head[252:256]),
            )
            handle.seek(256 + 216 * n_signals)
            samples = [int(handle.read(8)) for _ in range(n_signals)]
    except (ValueError, OSError):
        return None
    record_bytes = sum(samples) * (3 if path.suffix.lower() == ".bdf" else 2)
    present = (path.stat().st_size - header_bytes) // max(record_bytes, 1)
    return n_records, present


def read_recording_file(path: str | Path, config: PrepConfig) -> mne.io.BaseRaw:
    """Open one recording file lazily with MNE, applying its configured reader options."""
    import mne

    path = Path(path)
    options = reader_options_for(str(path), config)
    if path.is_file() and path.stat().st_size == 0:
        raise PrepError(f"{path}: the file is empty (0 bytes)")
    if path.suffix.lower() in (".edf", ".bdf") and not config.allow_truncated:
        records = edf_records(path)
        if records is not None and records[1] < records[0]:
            raise PrepError(
                f"{path}: truncated: the header announces {records[0]} data records, "
                f"the file holds {records[1]} (incomplete copy?); set "
                "allow_truncated: true in the prep config to convert the part present"
            )
    try:
        if path.suffix.lower() == ".cnt":  # read_raw would also try ANT's reader and hide why
            return mne.io.read_raw_cnt(path, preload=False, verbose="error", **options)
        return mne.io.read_raw(path, preload=False, verbose="error", **options)
    except Exception as error:
        hint = ""
        if path.suffix.lower() == ".cnt" and "data_format" not in options:
            hint = (
                f"; Neuroscan CNT files may need their sample size: add to the prep config "
                f"reader_options: [{{match: '{path.name}', options: {{data_format: int32}}}}]"
                " (or int16)"
            )
        reason = _first_message_line(error)
        raise PrepError(
            f"{path}: MNE cannot read it ({type(error).__name__}: {reason}){hint}"
        ) from error


def _first_message_line(error: Exception) -> str:
    """The informative line of a reader's error (some MNE messages embed traceback lines)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(('File "', "raise ", "WARNING"))]
    return re.sub(r"^\w+(Error|Exception): ", "", lines[0]) if lines else ""


def load_item(item: SourceItem, config: PrepConfig) -> Iterator[RawRecording]:
    """Open the recording(s) of one source item."""
    if item.kind == "moabb":
        yield from _load_moabb(item, config)
        return
    path = Path(item.location)
    files = source_files(path)
    if item.kind == "bids":  # sidecars (channels, electrodes, events) change the recording too
        files += sorted(p for p in path.parent.iterdir() if p.suffix in (".tsv", ".json"))
    provenance = {
        "dataset": item.dataset,
        "source": str(path),
        "source_sha256": sha256_files(files, path.parent),
    }
    if item.kind == "bids":
        import mne_bids

        bids_path = mne_bids.get_bids_path_from_fname(path)
        try:
            raw = mne_bids.read_raw_bids(bids_path, verbose="error")
        except Exception as error:
            raise PrepError(
                f"{path}: mne-bids cannot read it ({type(error).__name__}: {error})"
            ) from error
        entities = {
            "subject": bids_path.subject,
            "session": bids_path.session,
            "run": None if bids_path.run is None else str(bids_path.run),
        }
        recording_id = item.recording_id(bids_path.basename.rsplit(".", 1)[0])
    else:
        raw = read_recording_file(path, config)
        entities = entities_from_name(path.name, config)
        recording_id = item.recording_id()
    yield RawRecording(
        recording_id, raw, {**provenance, **entities}, montage=montage_for(str(path), config)
    )


def _load_moabb(item: SourceItem, config: PrepConfig) -> Iterator[RawRecording]:
    name, subject = item.location.split(":")[1:]
    dataset = moabb_dataset(name, config)
    try:
        data = dataset.get_data([int(subject)])
    except Exception as error:
        raise PrepError(
            f"{item.location}: MOABB could not load it ({type(error).__name__}: "
            f"{error}); on a machine without internet the data must already be in "
            "MOABB's cache (MNE_DATA)"
        ) from error
    for subject_key, sessions in data.items():
        for session, runs in sorted(sessions.items()):
            for run, raw in sorted(runs.items()):
                suffix = f"sub-{subject_key}_ses-{session}_run-{run}"
                attrs = {
                    "dataset": item.dataset,
                    "source": item.location,
                    "source_sha256": _raw_sha256(raw),
                    "subject": str(subject_key),
                    "session": str(session),
                    "run": str(run),
                }
                yield RawRecording(
                    item.recording_id(suffix),
                    raw,
                    attrs,
                    event_id=dict(getattr(dataset, "event_id", {}) or {}),
                )


def _raw_sha256(raw) -> str:
    sha = hashlib.sha256(f"{raw.info['sfreq']}|{raw.ch_names}".encode())
    sha.update(np.ascontiguousarray(raw.get_data()).tobytes())
    sha.update(repr((list(raw.annotations.onset), list(raw.annotations.description))).encode())
    return sha.hexdigest()
