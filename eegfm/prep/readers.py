"""Opening a source item: MNE readers with per-file options, provenance and fingerprints.

`load_item` yields the recordings of one `SourceItem` with their identity (dataset, subject,
session, run; for BIDS also task, acquisition and the subject's `participants.tsv` row) and
provenance (source files and their checksum).
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from eegfm.prep.config import PrepConfig, PrepError
from eegfm.prep.sources import (
    NIHON_KOHDEN_SIDECARS,
    RawRecording,
    SourceItem,
    bids_participant,
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


FINGERPRINT_VERSION = "v2"  # v1 (unversioned, 32 hex digits) covered only the first 10 s
_FINGERPRINT_BLOCK_BYTES = 32e6  # float64 samples read at a time


def raw_fingerprint(raw: mne.io.BaseRaw, block_samples: int | None = None) -> str:
    """Identity of a recording's samples, blind to channel names, order and positive gain.

    Per channel, the direction (up, down or level) of every step between successive samples of
    the whole recording, and whether it holds NaN; the channels' hashes sorted, with the rate and
    length. The same recording exported to another format (other names, order or gain) has the
    same fingerprint; a recording differing in any step does not. The samples are read in blocks
    of `block_samples` (default: 32 MB of float64), the result being the same for any block size.
    """
    n_channels, n_times = len(raw.ch_names), raw.n_times
    if block_samples is None:
        block_samples = int(_FINGERPRINT_BLOCK_BYTES / (8 * max(n_channels, 1)))
    block_samples = max(8, block_samples // 8 * 8)  # packed bits fill whole bytes per block
    ups = [hashlib.sha1() for _ in range(n_channels)]
    downs = [hashlib.sha1() for _ in range(n_channels)]
    has_nan = np.zeros(n_channels, bool)
    previous = None
    for start in range(0, n_times, block_samples):
        block = raw.get_data(start=start, stop=min(n_times, start + block_samples))
        # the step into a block's first sample starts at the previous block's last (the
        # recording's first step is level)
        before = block[:, :1] if previous is None else previous
        up, down = (np.empty(block.shape, bool) for _ in range(2))
        # comparisons, not differences: NaN and Inf raise no floating-point warning here
        np.greater(block[:, 1:], block[:, :-1], out=up[:, 1:])
        np.greater(block[:, :1], before, out=up[:, :1])
        np.less(block[:, 1:], block[:, :-1], out=down[:, 1:])
        np.less(block[:, :1], before, out=down[:, :1])
        has_nan |= np.isnan(block.min(axis=1))  # a NaN step is neither up nor down
        previous = block[:, -1:].copy()
        for channel, (up_bits, down_bits) in enumerate(
            zip(np.packbits(up, axis=1), np.packbits(down, axis=1), strict=True)
        ):
            ups[channel].update(up_bits)
            downs[channel].update(down_bits)
    rows = sorted(
        f"{u.hexdigest()}{d.hexdigest()}{int(nan)}"
        for u, d, nan in zip(ups, downs, has_nan, strict=True)
    )
    text = f"{raw.info['sfreq']}|{n_times}|" + ",".join(rows)
    return f"{FINGERPRINT_VERSION}:{hashlib.sha256(text.encode()).hexdigest()[:32]}"


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


@dataclass(frozen=True)
class EdfLayout:
    """What an EDF/BDF header announces, and the data bytes the file holds."""

    header_bytes: int
    n_records: int  # -1: unknown (the recording was not closed)
    samples: tuple[int, ...]  # per data record, per signal
    sample_bytes: int  # 2 (EDF) or 3 (BDF)
    data_bytes: int  # file size minus the header

    @property
    def record_bytes(self) -> int:
        """Bytes of one data record, as the header announces it."""
        return sum(self.samples) * self.sample_bytes

    @property
    def complete_records(self) -> int:
        """Data records present in full, by the header's record size."""
        return max(0, self.data_bytes) // max(self.record_bytes, 1)


def edf_layout(path: Path) -> EdfLayout | None:
    """The record layout an EDF/BDF header announces; None if its fields do not parse."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(256)
            n_signals = _edf_int(head[252:256])
            handle.seek(256 + 216 * n_signals)
            samples = tuple(_edf_int(handle.read(8)) for _ in range(n_signals))
        header_bytes = _edf_int(head[184:192])
        layout = EdfLayout(
            header_bytes=header_bytes,
            n_records=_edf_int(head[236:244]),
            samples=samples,
            sample_bytes=3 if path.suffix.lower() == ".bdf" else 2,
            data_bytes=path.stat().st_size - header_bytes,
        )
    except (ValueError, OSError):
        return None
    return layout


def _edf_int(field: bytes) -> int:
    return int(field.decode("latin-1").strip(" \x00"))


def check_edf_header(path: Path, allow_truncated: bool = False) -> None:
    """Raise PrepError for an EDF/BDF header at odds with itself or the file, or a cut-off file.

    A header whose fields agree but announce more data records than the file holds is a
    truncated copy (unless `allow_truncated`); one whose record size does not divide the data
    while the data is a whole number of records of another size has a corrupt samples-per-record
    field, and says so instead.
    """
    layout = edf_layout(path)
    if layout is None:
        return
    corrupt = f"{path}: the {path.suffix.upper()[1:]} header is corrupt"
    n_signals = len(layout.samples)
    if n_signals < 1 or layout.header_bytes != 256 * (n_signals + 1):
        raise PrepError(
            f"{corrupt}: its header-size field says {layout.header_bytes} bytes, but its "
            f"{n_signals} signals make a header of {256 * (n_signals + 1)} bytes"
        )
    if min(layout.samples) < 1:
        raise PrepError(
            f"{corrupt}: samples per data record {list(layout.samples)} (each must be positive)"
        )
    n_records, data_bytes = layout.n_records, layout.data_bytes
    expected = n_records * layout.record_bytes
    if n_records < 1 or data_bytes == expected:
        return
    other_size = data_bytes // n_records if data_bytes > 0 and data_bytes % n_records == 0 else 0
    if n_records > 1 and other_size and other_size % layout.sample_bytes == 0:
        raise PrepError(
            f"{corrupt}: its samples per data record ({sum(layout.samples)} over {n_signals} "
            f"signals) make records of {layout.record_bytes} bytes, but the file holds exactly "
            f"{n_records} records of {other_size} bytes, as many as the header announces: a "
            "samples-per-record field is wrong"
        )
    if data_bytes < expected and not allow_truncated:
        raise PrepError(
            f"{path}: truncated: the header announces {n_records} data records, "
            f"the file holds {layout.complete_records} (incomplete copy?); set "
            "allow_truncated: true in the prep config to convert the part present"
        )


_FORMAT_NAMES = {
    ".edf": "EDF",
    ".bdf": "BDF",
    ".gdf": "GDF",
    ".vhdr": "BrainVision",
    ".ahdr": "BrainVision",
    ".set": "EEGLAB",
    ".fif": "FIF",
    ".cnt": "Neuroscan CNT",
    ".mff": "EGI MFF",
    ".eeg": "Nihon Kohden",
}


def read_recording_file(path: str | Path, config: PrepConfig) -> mne.io.BaseRaw:
    """Open one recording file lazily with MNE, applying its configured reader options."""
    import mne

    path = Path(path)
    options = reader_options_for(str(path), config)
    if path.is_file() and path.stat().st_size == 0:
        raise PrepError(f"{path}: the file is empty (0 bytes)")
    if path.suffix.lower() in (".edf", ".bdf"):
        check_edf_header(path, config.allow_truncated)
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
        if not reason:  # a reader's bare `assert` on the file's structure
            kind = _FORMAT_NAMES.get(path.suffix.lower(), f"{path.suffix} recording")
            raise PrepError(
                f"{path}: MNE cannot read it: its header is corrupt or it is not a {kind} file "
                f"({type(error).__name__}, without a message){hint}"
            ) from error
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
            "task": bids_path.task,
            "acquisition": bids_path.acquisition,
            "participant": bids_participant(Path(bids_path.root), bids_path.subject),
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
