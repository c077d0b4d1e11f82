"""Locate every channel of a recording: digitisation -> user montage -> template -> vendor layout.

A channel is located only when every electrode it needs is located (a bipolar 'Fp1-F7' needs
both). `method` names the source of its first electrode; the second is looked up through the
same chain. Unresolved channels keep NaN coordinates and are reported, never guessed.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from eegfm.montage.layouts import (
    VendorLayout,
    display_layout_to_head,
    recognise_vendor,
    template_positions,
)
from eegfm.montage.names import is_non_scalp, normalize_channel_name, numbering_scheme
from eegfm.montage.user import user_positions

if TYPE_CHECKING:
    import mne

UNRESOLVED = "unresolved"
NON_SCALP = "non_scalp"
HEADER_LAYOUT = "header_layout"
# Digitised positions whose median distance to the head origin falls outside this range are in
# the wrong units or frame (a file in mm read as m); they are ignored with a warning.
PLAUSIBLE_MEDIAN_NORM_M = (0.03, 0.3)
_NAN3 = np.full(3, np.nan)
_NAN3.setflags(write=False)


@dataclass(frozen=True, eq=False)
class ChannelLocation:
    """Where one channel of a recording sits, and how that was found."""

    name: str  # as in the file
    label: str  # canonical label ('Fp1', 'E17'; 'Fp1-F7' for a bipolar derivation)
    coords: np.ndarray  # (3,) metres, MNE head frame; NaN if not located
    ref_coords: np.ndarray  # (3,) second electrode of a bipolar scalp derivation, else NaN
    method: str  # 'digitization' | 'user_montage' | 'template' | 'vendor:<name>' | ...


@dataclass
class Localization:
    """One `ChannelLocation` per channel of the input `info`, in input order."""

    channels: list[ChannelLocation]
    vendor: str | None = None  # vendor layout recognised for the whole cap
    numbering: str | None = None  # 'letter-number' / 'numeric' when the cap numbers electrodes
    warnings: list[str] = field(default_factory=list)

    @property
    def located(self) -> list[ChannelLocation]:
        """Channels with a position (method not 'unresolved' / 'non_scalp')."""
        return [ch for ch in self.channels if ch.method not in (UNRESOLVED, NON_SCALP)]

    @property
    def counts(self) -> dict[str, int]:
        """Number of channels per method."""
        return dict(Counter(ch.method for ch in self.channels))

    @property
    def montage_id(self) -> str:
        """`montage_id` of the located channels (canonical labels and coordinates)."""
        located = self.located
        coords = np.array([ch.coords for ch in located]).reshape(len(located), 3)
        return montage_id([ch.label for ch in located], coords)

    def report(self) -> dict:
        """JSON-ready summary for a prep report: counts, vendor, unresolved and non-scalp names."""
        return {
            "counts": self.counts,
            "vendor": self.vendor,
            "numbering": self.numbering,
            "unresolved": [ch.name for ch in self.channels if ch.method == UNRESOLVED],
            "non_scalp": [ch.name for ch in self.channels if ch.method == NON_SCALP],
            "warnings": list(self.warnings),
        }


def montage_id(ch_names: Sequence[str], coords: np.ndarray) -> str:
    """16 hex chars of sha256 over the sorted (name, coords rounded to 1 mm) list.

    Order-independent and platform-stable. Coordinates pass through float32 first, so an id
    computed from shard data (float32) equals the one computed at prep time (float64).
    """
    coords = np.asarray(coords)
    if coords.shape != (len(ch_names), 3):
        raise ValueError(
            f"montage_id: coords has shape {coords.shape}, expected ({len(ch_names)}, 3)"
        )
    millimetres = np.rint(coords.astype(np.float32).astype(np.float64) * 1000.0)
    entries = sorted(
        "\t".join([name, *("nan" if np.isnan(v) else str(int(v)) for v in row)])
        for name, row in zip(ch_names, millimetres, strict=True)
    )
    return hashlib.sha256("\n".join(entries).encode("utf-8")).hexdigest()[:16]


def _valid(pos: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(pos)) and np.linalg.norm(pos) > 1e-6)


def _frozen(pos: np.ndarray) -> np.ndarray:
    pos = np.array(pos, dtype=np.float64)
    pos.setflags(write=False)
    return pos


def _digitised(
    info: mne.Info, eeg: list[int], warnings: list[str], header_layout: bool = False
) -> tuple[dict[int, np.ndarray], str]:
    """(channel index -> (6,) loc of EEG channels whose own position is usable, method name)."""
    from mne.io.constants import FIFF

    if not eeg:
        return {}, "digitization"
    chs = [info["chs"][idx] for idx in eeg]
    locs = np.array([ch["loc"][:6] for ch in chs], dtype=np.float64)  # (n, 6)
    finite = np.isfinite(locs[:, :3])
    # MNE stores NaN or zeros when a reader has no position
    present = np.any(finite & (np.nan_to_num(locs[:, :3]) != 0.0), axis=1)
    complete = present & finite.all(axis=1)
    head = np.array([ch["coord_frame"] == FIFF.FIFFV_COORD_HEAD for ch in chs])
    norms = np.linalg.norm(np.nan_to_num(locs[:, :3]), axis=1)
    usable = {eeg[k]: locs[k] for k in np.flatnonzero(complete & head & (norms > 1e-6))}
    # A partial position is never completed: the channel falls through the chain instead.
    partial = [chs[k]["ch_name"] for k in np.flatnonzero(present & ~complete)]
    other_frame = [chs[k]["ch_name"] for k in np.flatnonzero(complete & ~head)]
    for names, why in ((partial, "partly NaN"), (other_frame, "not in the head frame")):
        if names:
            shown = ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
            warnings.append(f"digitised position {why}, ignored for {shown}")
    if usable:
        norms = np.linalg.norm(np.array([loc[:3] for loc in usable.values()]), axis=1)
        median, (low, high) = float(np.median(norms)), PLAUSIBLE_MEDIAN_NORM_M
        if np.all(np.abs(norms - 1.0) < 1e-3):
            # e.g. Neuroscan CNT: MNE projects the header's 2-D display layout onto a unit sphere
            if header_layout:
                return _from_display_layout(usable, warnings), HEADER_LAYOUT
            warnings.append(
                "positions in the file lie on a unit sphere (a 2-D display layout projected by "
                "the reader, not electrode positions): ignored; pass a montage to place them, "
                "or opt in to the approximate header layout (header_layout=True)"
            )
            return {}, "digitization"
        if not low <= median <= high:
            warnings.append(
                f"digitised positions ignored: median distance to the head origin is "
                f"{median:.3g} m (expected {low}-{high} m; wrong units in the file?)"
            )
            return {}, "digitization"
    return usable, "digitization"


def _from_display_layout(
    layout: dict[int, np.ndarray], warnings: list[str]
) -> dict[int, np.ndarray]:
    """Channel index -> (6,) loc placed on the template head from a 2-D display layout."""
    indices = list(layout)
    # MNE's projection keeps the header's (x, y) up to one shift and scale: x, y are the layout.
    xy = np.array([layout[idx][:2] for idx in indices])
    positions = display_layout_to_head(xy)
    placed = {}
    for idx, pos in zip(indices, positions, strict=True):
        if np.all(np.isfinite(pos)):
            placed[idx] = np.concatenate([pos, np.full(3, np.nan)])
    warnings.append(
        f"{len(placed)} positions placed from the file's 2-D display layout (approximate, "
        f"centimetre accuracy); {len(indices) - len(placed)} layout points off the cap not placed"
    )
    return placed


class _Lookup:
    """Label -> position through user montage, template and vendor layout, in that order."""

    def __init__(self, user: dict[str, np.ndarray] | None, template: bool, vendor):
        self.user_by_name = user or {}
        self.user_by_label = _by_label(self.user_by_name)
        self.template = template_positions() if template else {}
        self.vendor: VendorLayout | None = vendor
        self.vendor_positions = vendor.positions() if vendor else {}

    def find(self, name: str | None, label: str) -> tuple[np.ndarray, str] | None:
        if name is not None and name in self.user_by_name:
            return self.user_by_name[name], "user_montage"
        key = "".join(label.split()).upper()
        if key in self.user_by_label:
            return self.user_by_label[key], "user_montage"
        if key in self.template:
            return self.template[key], "template"
        if key in self.vendor_positions:
            return self.vendor_positions[key], f"vendor:{self.vendor.name}"
        return None


def _by_label(positions: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Normalised-label key -> position; a key two entries share is ambiguous and left out."""
    result: dict[str, np.ndarray] = {}
    for aliased in (False, True):  # the montage's own spelling first, its 10-05 alias second
        keys: dict[str, list[np.ndarray]] = {}
        for name, pos in positions.items():
            label = normalize_channel_name(name, apply_aliases=aliased)[0]
            keys.setdefault("".join(label.split()).upper(), []).append(pos)
        for key, found in keys.items():
            if len(found) == 1:
                result.setdefault(key, found[0])
    return result


@dataclass
class _Cap:
    """What the whole set of names says about a recording's cap."""

    parsed: dict[int, tuple[str, str | None]]  # scalp candidate index -> (label, second electrode)
    scalp: list[int]  # EEG channels that are not known non-scalp channels
    numbering: str | None  # 'letter-number' / 'numeric' for a numbered cap
    vendor: VendorLayout | None


def _read_cap(info: mne.Info) -> _Cap:
    from mne.io.constants import FIFF

    names = info["ch_names"]
    eeg = [i for i, ch in enumerate(info["chs"]) if ch["kind"] == FIFF.FIFFV_EEG_CH]
    plain = {i: normalize_channel_name(names[i], apply_aliases=False) for i in eeg}
    # Ear references stay in while deciding the scheme: in a numbered cap 'A1' is an electrode.
    candidates = [i for i in eeg if not is_non_scalp(names[i], plain[i][0], numbered_cap=True)]
    numbering = numbering_scheme(plain[i][0] for i in candidates)
    numbered = numbering is not None
    # Inside a numbered cap 'T3' is the third T electrode: no aliases there.
    parsed = {i: plain[i] if numbered else normalize_channel_name(names[i]) for i in candidates}
    scalp = [
        i for i in candidates if not is_non_scalp(names[i], parsed[i][0], numbered_cap=numbered)
    ]
    vendor = recognise_vendor([parsed[i][0] for i in scalp])
    return _Cap(parsed, scalp, numbering, vendor)


def locate_channels(
    info: mne.Info,
    montage: str | os.PathLike | mne.channels.DigMontage | None = None,
    *,
    header_layout: bool = False,
) -> Localization:
    """Locate every channel of `info` (positions in MNE's head frame, metres).

    Order: the file's own digitisation -> `montage` (a file, an MNE built-in name or a
    DigMontage) -> MNE's colin27_1005 template after name normalisation and `ALIASES` -> a vendor
    layout recognised from the whole set of names and their count -> unresolved. Channels of a
    non-EEG type and known non-scalp names (ECG, EOG, ear references, triggers...) are 'non_scalp'.
    A cap that numbers its electrodes ('A1..A32, B1..', 'E1..E256', '1..65') is never matched name
    by name against the 10-05 template. `header_layout=True` (opt-in, per source) accepts a 2-D
    display layout stored in the file header (Neuroscan CNT) as approximate positions, method
    'header_layout', in place of the file's digitisation.
    """
    import mne

    if not isinstance(info, mne.Info):
        raise TypeError(f"locate_channels needs an mne.Info (raw.info), got {type(info).__name__}")
    warnings: list[str] = []
    cap = _read_cap(info)
    user = user_positions(montage)[0] if montage is not None else None
    lookup = _Lookup(user, template=cap.numbering is None, vendor=cap.vendor)
    digitised, digitised_method = _digitised(info, cap.scalp, warnings, header_layout)
    by_label = {
        cap.parsed[i][0].upper(): loc[:3] for i, loc in digitised.items() if not cap.parsed[i][1]
    }
    scalp = set(cap.scalp)
    channels = []
    for idx, name in enumerate(info["ch_names"]):
        if idx not in scalp:
            label = normalize_channel_name(name, apply_aliases=False)[0]
            channels.append(ChannelLocation(name, label, _NAN3, _NAN3, NON_SCALP))
            continue
        label, ref_label = cap.parsed[idx]
        loc = digitised.get(idx)
        first = (loc[:3], digitised_method) if loc is not None else lookup.find(name, label)
        second = None
        if ref_label is not None:
            if loc is not None and _valid(loc[3:6]) and not np.allclose(loc[3:6], loc[:3]):
                second = (loc[3:6], "digitization")  # MNE keeps the second electrode there
            elif ref_label.upper() in by_label:
                second = (by_label[ref_label.upper()], "digitization")
            else:
                second = lookup.find(None, ref_label)
        full_label = label if ref_label is None else f"{label}-{ref_label}"
        if first is None or (ref_label is not None and second is None):
            if first is not None:
                warnings.append(f"{name}: second electrode {ref_label!r} not located")
            channels.append(ChannelLocation(name, full_label, _NAN3, _NAN3, UNRESOLVED))
            continue
        ref_coords = _NAN3 if second is None else _frozen(second[0])
        channels.append(ChannelLocation(name, full_label, _frozen(first[0]), ref_coords, first[1]))
    return Localization(
        channels=channels,
        vendor=cap.vendor.name if cap.vendor else None,
        numbering=cap.numbering,
        warnings=warnings,
    )
