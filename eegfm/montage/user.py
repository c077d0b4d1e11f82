"""User-named montages: BIDS electrodes.tsv (+ coordsystem.json), MNE's montage files, built-ins.

Every reader returns a `DigMontage` in metres; `locate.py` moves it to the head frame through
`layouts.head_positions`, like every other source.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from eegfm.montage.layouts import builtin_positions, head_positions

if TYPE_CHECKING:
    import mne

# Radius given to idealised spherical layouts (.loc, .elp, .txt, idealised .bvef): MNE's default.
HEAD_RADIUS_M = 0.095
_SPHERICAL = (".loc", ".locs", ".eloc", ".txt", ".elp", ".csd")
_UNKNOWN_UNITS = (".sfp", ".csv", ".tsv", ".xyz")
SUPPORTED_EXTENSIONS = (
    *_SPHERICAL, *_UNKNOWN_UNITS, ".elc", ".bvef", ".fif", ".bvct", ".hpts", ".xml",
)  # fmt: skip

# BIDS coordinate systems (coordsystem.json 'EEGCoordinateSystem') that need no landmarks.
_BIDS_HEAD_RAS = {"captrak", "elektaneuromag", "chietiitab"}  # already MNE's head frame
_BIDS_ALS = {"ctf", "4dbti", "kityokogawa", "eeglab", "eeglab-hj"}  # x nasion, y left
_BIDS_MNI_TEMPLATE = {  # template spaces: landmarks taken from the matching MNE template
    "mnicolin27": "colin27_1005", "mni152lin": "colin27_1005", "mni152nlin6sym": "colin27_1005",
    "mni152nlin6asym": "colin27_1005", "mni152nlin2009asym": "colin27_1005",
    "mni152nlin2009bsym": "colin27_1005", "mni152nlin2009csym": "colin27_1005",
    "mni152nlin2009aasym": "colin27_1005", "mni152nlin2009basym": "colin27_1005",
    "mni152nlin2009casym": "colin27_1005", "fsaverage": "fsaverage_1005",
    "mni305": "fsaverage_1005",
}  # fmt: skip
_UNITS = {"m": 1.0, "cm": 0.01, "mm": 0.001}
_LANDMARKS = {
    "nasion": ("NAS", "NASION", "NZ", "FIDNZ"),
    "lpa": ("LPA", "LEFTPREAURICULAR", "FIDT9", "LHJ"),
    "rpa": ("RPA", "RIGHTPREAURICULAR", "FIDT10", "RHJ"),
}


def read_user_montage(path: os.PathLike | str) -> mne.channels.DigMontage:
    """Read a montage file (electrodes.tsv, .elc, .sfp, .loc, .bvef, .fif, ...) in metres."""
    import mne

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"montage file {path} does not exist")
    ext = path.suffix.lower()
    if ext == ".tsv" and _is_bids_electrodes(path):
        return _read_bids_electrodes(path)
    if ext in _SPHERICAL:
        return mne.channels.read_custom_montage(path, head_size=HEAD_RADIUS_M)
    if ext == ".elc":  # declares its unit (UnitPosition)
        return mne.channels.read_custom_montage(path, head_size=None)
    if ext in _UNKNOWN_UNITS:
        montage = mne.channels.read_custom_montage(path, head_size=None)
        return _scaled(montage, _unit_scale(_points(montage), str(path)))
    if ext == ".bvef":
        montage = mne.channels.read_custom_montage(path, head_size=None)
        radii = np.linalg.norm(_points(montage), axis=1)
        idealised = np.allclose(radii, radii[0], rtol=1e-3)  # radius 1 = idealised sphere
        return _scaled(montage, HEAD_RADIUS_M / radii[0] if idealised else 1e-3)
    if ext == ".fif":
        return mne.channels.read_dig_fif(path)
    if ext == ".bvct":
        return mne.channels.read_dig_captrak(path)
    if ext == ".hpts":
        return mne.channels.read_dig_hpts(path, unit="mm")
    if ext == ".xml":
        return mne.channels.read_dig_egi(path)
    raise ValueError(
        f"montage file {path}: unsupported extension {ext!r}; use one of "
        f"{', '.join(SUPPORTED_EXTENSIONS)} (or a BIDS *_electrodes.tsv)"
    )


def user_positions(
    montage: str | os.PathLike | mne.channels.DigMontage,
) -> tuple[dict[str, np.ndarray], str]:
    """Head-frame positions (name -> (3,) m) of the `montage` argument, and how to name it."""
    import mne

    if isinstance(montage, mne.channels.DigMontage):
        positions, source = head_positions(montage), "DigMontage"
    elif isinstance(montage, str | os.PathLike):
        path = Path(montage)
        if path.is_file():
            stat = path.stat()
            positions = _file_positions(str(path.resolve()), stat.st_mtime_ns, stat.st_size)
            source = str(path)
        elif str(montage) in mne.channels.get_builtin_montages():
            positions, source = dict(builtin_positions(str(montage))), str(montage)
        else:
            raise FileNotFoundError(
                f"montage {str(montage)!r} is neither an existing file nor an MNE built-in "
                "montage (mne.channels.get_builtin_montages())"
            )
    else:
        raise TypeError(
            "montage must be a path, an MNE built-in montage name or an mne.channels.DigMontage, "
            f"got {type(montage).__name__}"
        )
    _check_head_size(positions, source)
    return positions, source


@functools.lru_cache(maxsize=32)
def _file_positions(path: str, mtime_ns: int, size: int) -> dict[str, np.ndarray]:
    # Keyed by modification time and size, so an edited file is read again.
    return head_positions(read_user_montage(path))


def _check_head_size(positions: dict[str, np.ndarray], source: str) -> None:
    if not positions:
        raise ValueError(f"montage {source}: no electrode has a finite position")
    median = float(np.median([np.linalg.norm(p) for p in positions.values()]))
    if not 0.03 <= median <= 0.3:
        raise ValueError(
            f"montage {source}: electrodes lie {median:.3g} m from the head origin (a head is "
            "~0.1 m); the file's units are probably wrong: give positions in metres, or state "
            "the units (BIDS coordsystem.json 'EEGCoordinateUnits', .elc 'UnitPosition')"
        )


def _points(montage: mne.channels.DigMontage) -> np.ndarray:
    return np.array(list(montage.get_positions()["ch_pos"].values()), dtype=np.float64)


def _unit_scale(points: np.ndarray, source: str) -> float:
    """Metres per file unit, from the size of the cap (FieldTrip's ft_estimate_units idea)."""
    points = points[np.all(np.isfinite(points), axis=1)]
    if len(points) < 8:
        raise ValueError(
            f"{source}: cannot infer the units from {len(points)} positions; write the montage "
            "as a BIDS electrodes.tsv with coordsystem.json 'EEGCoordinateUnits', or in metres"
        )
    radii = np.linalg.norm(points, axis=1)
    if 0.8 <= np.median(radii) <= 1.2 and np.std(radii) < 0.05:  # unit sphere
        return HEAD_RADIUS_M / float(np.median(radii))
    extent = float(np.linalg.norm(np.ptp(points, axis=0)))
    # A full cap spans ~0.2 m; choose the unit that brings the extent closest to that.
    return min((1.0, 0.01, 0.001), key=lambda scale: abs(math.log10(extent * scale / 0.2)))


def _scaled(montage: mne.channels.DigMontage, scale: float) -> mne.channels.DigMontage:
    import mne

    pos = montage.get_positions()
    fiducials = {k: None if pos[k] is None else pos[k] * scale for k in ("nasion", "lpa", "rpa")}
    return mne.channels.make_dig_montage(
        ch_pos={name: p * scale for name, p in pos["ch_pos"].items()},
        coord_frame=pos["coord_frame"],
        hsp=None if pos["hsp"] is None else pos["hsp"] * scale,
        **fiducials,
    )


def _is_bids_electrodes(path: Path) -> bool:
    with open(path, newline="") as fid:
        header = fid.readline().strip().split("\t")
    return header[:4] == ["name", "x", "y", "z"]


def _find_coordsystem(path: Path) -> Path | None:
    """The coordsystem.json of a BIDS electrodes.tsv: same prefix, else the only one beside it."""
    if path.name.endswith("electrodes.tsv"):
        sibling = path.with_name(path.name[: -len("electrodes.tsv")] + "coordsystem.json")
        if sibling.is_file():
            return sibling
    candidates = sorted(path.parent.glob("*coordsystem.json"))
    return candidates[0] if len(candidates) == 1 else None


def _read_bids_electrodes(path: Path) -> mne.channels.DigMontage:
    """BIDS electrodes.tsv -> DigMontage in metres, in a frame MNE can move to the head frame."""
    import mne

    with open(path, newline="") as fid:
        rows = list(csv.DictReader(fid, delimiter="\t"))
    ch_pos: dict[str, np.ndarray] = {}
    for row in rows:
        values = [row.get(axis, "n/a") for axis in ("x", "y", "z")]
        if any(value in ("n/a", "", None) for value in values):
            continue
        try:
            ch_pos[row["name"]] = np.array([float(v) for v in values])
        except ValueError as err:
            raise ValueError(
                f"{path}: electrode {row['name']!r} has a non-numeric position"
            ) from err
    coordsystem = _find_coordsystem(path)
    meta = json.loads(coordsystem.read_text()) if coordsystem else {}
    units = str(meta.get("EEGCoordinateUnits", "n/a"))
    scale = _UNITS.get(units) or _unit_scale(np.array(list(ch_pos.values())), str(path))
    landmarks = _landmarks(ch_pos, meta, scale)
    ch_pos = {name: pos * scale for name, pos in ch_pos.items()}
    system = str(meta.get("EEGCoordinateSystem", "n/a"))
    if all(value is not None for value in landmarks.values()):
        return mne.channels.make_dig_montage(ch_pos=ch_pos, coord_frame="unknown", **landmarks)
    if system.lower() in _BIDS_HEAD_RAS:
        return mne.channels.make_dig_montage(ch_pos=ch_pos, coord_frame="head")
    if (
        system.lower() in _BIDS_ALS
    ):  # origin between the ears, x nasion, y left -> x right, y nasion
        ch_pos = {name: np.array([-p[1], p[0], p[2]]) for name, p in ch_pos.items()}
        return mne.channels.make_dig_montage(ch_pos=ch_pos, coord_frame="head")
    if system.lower() in _BIDS_MNI_TEMPLATE:
        template = mne.channels.make_standard_montage(_BIDS_MNI_TEMPLATE[system.lower()])
        fiducials = {k: template.get_positions()[k] for k in ("nasion", "lpa", "rpa")}
        return mne.channels.make_dig_montage(ch_pos=ch_pos, coord_frame="unknown", **fiducials)
    raise ValueError(
        f"{path}: coordinate system {system!r} (from {coordsystem or 'no coordsystem.json'}) "
        "cannot be moved to the head frame without landmarks; add NAS, LPA and RPA to "
        "'AnatomicalLandmarkCoordinates' in coordsystem.json, or use CapTrak coordinates"
    )


def _landmarks(ch_pos: dict[str, np.ndarray], meta: dict, scale: float) -> dict:
    """Nasion/LPA/RPA (metres) from coordsystem.json or from electrodes.tsv rows; popped."""
    found: dict = dict.fromkeys(_LANDMARKS)
    meta_scale = _UNITS.get(str(meta.get("AnatomicalLandmarkCoordinateUnits")), scale)
    same_system = meta.get("AnatomicalLandmarkCoordinateSystem") in (
        None, meta.get("EEGCoordinateSystem"),
    )  # fmt: skip
    given = meta.get("AnatomicalLandmarkCoordinates", {}) if same_system else {}
    for fiducial, spellings in _LANDMARKS.items():
        for name, value in given.items():
            if name.upper() in spellings:
                found[fiducial] = np.asarray(value, dtype=np.float64) * meta_scale
        for name in list(ch_pos):
            if name.upper() in spellings:
                found[fiducial] = ch_pos.pop(name) * scale
    return found
