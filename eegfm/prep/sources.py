"""Where recordings come from: files, folders, BIDS roots and MOABB datasets.

`expand_sources` turns the CLI's SOURCE arguments into a sorted list of `SourceItem`s (one per
file, BIDS recording or MOABB subject); `eegfm.prep.readers.load_item` opens one lazily.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    dataset = moabb_dataset(parts[1], config)
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


def moabb_dataset(name: str, config: PrepConfig) -> Any:
    """An instance of the MOABB dataset class NAME, with its configured constructor options."""
    import moabb.datasets

    cls = getattr(moabb.datasets, name, None)
    if cls is None:
        raise PrepError(f"MOABB has no dataset {name!r}; see moabb.datasets for the names")
    return cls(**config.moabb_options.get(name, {}))


def entities_from_name(name: str, config: PrepConfig) -> dict[str, str | None]:
    """subject / session / run from a file name with `config.entity_regex`."""
    match = re.search(config.entity_regex, Path(name).name)
    found = match.groupdict() if match else {}
    return {key: found.get(key) for key in ("subject", "session", "run")}


def bids_participant(bids_root: Path, subject: str | None) -> dict[str, Any]:
    """The subject's row of `participants.tsv` (all columns but participant_id); {} if none.

    Values stay as written, except 'n/a' (None) and numbers: integers written without leading
    zeros become int, other finite numbers float, so `age` sorts and averages as a number
    while a code like '01' keeps its zero.
    """
    table = bids_root / "participants.tsv"
    if subject is None or not table.is_file():
        return {}
    with open(table, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if row.get("participant_id") == f"sub-{subject}":
                return {
                    key: _tsv_value(value) for key, value in row.items()
                    if key and key != "participant_id"
                }
    return {}


def _tsv_value(text: str | None) -> Any:
    text = (text or "").strip()
    if text in ("", "n/a"):
        return None
    if re.fullmatch(r"-?(0|[1-9][0-9]*)", text):
        return int(text)
    if re.fullmatch(r"-?0[0-9]+", text):
        return text  # a code such as '01', not a number
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text
