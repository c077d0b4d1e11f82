"""Where recordings come from: files, folders, BIDS roots and MOABB datasets.

`expand_sources` turns the CLI's SOURCE arguments into a sorted list of `SourceItem`s (one per
file, BIDS recording or MOABB subject); `load_item` opens one lazily and yields its recordings
with their identity (dataset, subject, session, run) and provenance.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eegfm.prep.config import PrepConfig, PrepError

# Extensions MNE reads as EEG recordings (one file = one recording). Nihon Kohden `.EEG` and
# EGI `.mff` folders are handled apart; BrainVision `.eeg`/`.vmrk` and EEGLAB `.fdt` are data
# files of a header listed here, never recordings of their own.
RECORDING_EXTENSIONS = (
    ".edf",
    ".bdf",
    ".gdf",
    ".vhdr",
    ".ahdr",
    ".set",
    ".fif",
    ".fif.gz",
    ".cnt",
    ".nxe",
    ".cdt",
    ".nedf",
    ".lay",
)
NIHON_KOHDEN_SIDECARS = (".pnt", ".log", ".21e", ".11d", ".cmt", ".cn2")
BIDS_EXTENSIONS = [".edf", ".bdf", ".vhdr", ".set", ".fif"]
_FIF_SPLIT = re.compile(r"(-\d+\.fif(\.gz)?|_split-0*([2-9]|\d{2,})_.*)$")


@dataclass(frozen=True, order=True)
class SourceItem:
    """One unit of prep work: a file, a BIDS recording, or one subject of a MOABB dataset."""

    root: str  # the SOURCE argument it came from
    relative: str  # path below root ('/'-separated), or the MOABB subject
    kind: str = field(compare=False)  # 'file' | 'bids' | 'moabb'
    location: str = field(compare=False)  # absolute path, or 'moabb:NAME:SUBJECT'
    dataset: str = field(compare=False)

    def recording_id(self, suffix: str | None = None) -> str:
        """Id of the recording(s) of this item, unique within a shard directory."""
        name = suffix or self.relative.replace("/", "__")
        return f"{self.dataset}__{name}"


@dataclass
class RawRecording:
    """A recording opened (lazily) from a source, with its identity and provenance."""

    recording_id: str
    raw: Any  # mne.io.BaseRaw
    attrs: dict  # dataset, subject, session, run, source, source_sha256
    montage: str | None = None
    event_id: dict[str, int] = field(default_factory=dict)


# ------------------------------------------------------------------------------------- discovery
def expand_sources(sources: Sequence[str], config: PrepConfig) -> list[SourceItem]:
    """Every recording below the given files / folders / BIDS roots / `moabb:` specs, sorted."""
    items: list[SourceItem] = []
    for source in sources:
        if str(source).startswith("moabb:"):
            items += _moabb_items(str(source), config)
            continue
        path = Path(source).expanduser().resolve()
        if not path.exists():
            raise PrepError(f"source {source} does not exist")
        if path.is_file() or path.suffix.lower() == ".mff":
            dataset = config.dataset or path.parent.name
            items.append(SourceItem(str(path.parent), path.name, "file", str(path), dataset))
            continue
        dataset = config.dataset or path.name
        for kind, file in discover(path):
            items.append(
                SourceItem(str(path), file.relative_to(path).as_posix(), kind, str(file), dataset)
            )
    ids: dict[str, SourceItem] = {}
    for item in sorted(items):
        if item.kind != "moabb" and (other := ids.get(item.recording_id())) is not None:
            raise PrepError(
                f"{item.location} and {other.location} would get the same recording "
                "id; give the sources distinct folder names or set `dataset`"
            )
        ids[item.recording_id()] = item
    return sorted(items)


def discover(folder: Path) -> Iterator[tuple[str, Path]]:
    """(kind, path) of every recording below a folder; BIDS roots are read through mne-bids."""
    if (folder / "dataset_description.json").is_file():
        yield from (("bids", p) for p in _bids_files(folder))
        return
    children = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    files = [p for p in children if p.is_file()]
    referenced = _brainvision_data_files(files)
    names = {p.name.lower() for p in files}
    for path in children:
        lower = path.name.lower()
        if path.is_dir():
            if lower.endswith(".mff"):
                yield "file", path
            else:
                yield from discover(path)
        elif lower.endswith(RECORDING_EXTENSIONS) and not _FIF_SPLIT.search(lower):
            yield "file", path
        elif lower.endswith(".eeg") and path.name not in referenced:
            stem = lower[: -len(".eeg")]
            if any(stem + ext in names for ext in NIHON_KOHDEN_SIDECARS):
                yield "file", path


def _brainvision_data_files(files: Sequence[Path]) -> set[str]:
    referenced = set()
    for header in (p for p in files if p.suffix.lower() in (".vhdr", ".ahdr")):
        text = header.read_text(encoding="latin-1", errors="replace")
        referenced |= set(re.findall(r"(?im)^\s*(?:DataFile|MarkerFile)\s*=\s*(.+?)\s*$", text))
        referenced |= {header.with_suffix(ext).name for ext in (".eeg", ".vmrk", ".dat")}
    return referenced


def _bids_files(root: Path) -> list[Path]:
    import mne_bids

    paths = mne_bids.find_matching_paths(
        root, datatypes="eeg", suffixes="eeg", extensions=BIDS_EXTENSIONS, ignore_json=True
    )
    return sorted({Path(p.fpath) for p in paths if "derivatives" not in Path(p.fpath).parts})


def _moabb_items(spec: str, config: PrepConfig) -> list[SourceItem]:
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[1]:
        raise PrepError(f"source {spec!r}: expected moabb:NAME or moabb:NAME:SUBJECTS (1,2,5-9)")
    dataset = _moabb_dataset(parts[1], config)
    subjects = list(dataset.subject_list)
    if len(parts) == 3:
        wanted = _parse_subjects(parts[2], spec)
        missing = sorted(set(wanted) - set(subjects))
        if missing:
            raise PrepError(
                f"source {spec!r}: subjects {missing} are not in {parts[1]} "
                f"(it has {subjects[0]}..{subjects[-1]})"
            )
        subjects = wanted
    name = config.dataset or parts[1]
    return [
        SourceItem(f"moabb:{parts[1]}", f"{int(s):05d}", "moabb", f"moabb:{parts[1]}:{s}", name)
        for s in subjects
    ]


def _parse_subjects(text: str, spec: str) -> list[int]:
    subjects = []
    for piece in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", piece)
        if not match:
            raise PrepError(f"source {spec!r}: cannot read subjects {text!r} (use 1,2,5-9)")
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        subjects += range(first, last + 1)
    return sorted(set(subjects))


def _moabb_dataset(name: str, config: PrepConfig):
    import moabb.datasets

    cls = getattr(moabb.datasets, name, None)
    if cls is None:
        raise PrepError(f"MOABB has no dataset {name!r}; see moabb.datasets for the names")
    return cls(**config.moabb_options.get(name, {}))


# ---------------------------------------------------------------------------------- provenance
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
    for path in paths:
        sha.update(path.relative_to(base).as_posix().encode() + b"\0")
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                sha.update(chunk)
    return sha.hexdigest()


def raw_fingerprint(raw, seconds: float = 10.0) -> str:
    """Identity of a recording's samples, blind to channel names, order and scaling.

    The sign pattern of successive differences of the first seconds of every channel, with the
    rate and length: the same recording exported to another format (other names, other gain)
    has the same fingerprint.
    """
    stop = min(raw.n_times, max(1, int(seconds * raw.info["sfreq"])))
    data = raw.get_data(start=0, stop=stop)
    rows = sorted(
        hashlib.sha1(np.sign(np.diff(row)).astype(np.int8).tobytes()).hexdigest() for row in data
    )
    text = f"{raw.info['sfreq']}|{raw.n_times}|" + ",".join(rows)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def entities_from_name(name: str, config: PrepConfig) -> dict[str, str | None]:
    """subject / session / run from a file name with `config.entity_regex`."""
    match = re.search(config.entity_regex, Path(name).name)
    found = match.groupdict() if match else {}
    return {key: found.get(key) for key in ("subject", "session", "run")}


# ------------------------------------------------------------------------------------- reading
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


def read_recording_file(path: str | Path, config: PrepConfig):
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
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else ""
        raise PrepError(
            f"{path}: MNE cannot read it ({type(error).__name__}: {reason}){hint}"
        ) from error


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
    dataset = _moabb_dataset(name, config)
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
