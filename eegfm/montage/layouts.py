"""Template and vendor positions in MNE's head frame, loaded lazily and cached per process.

`head_positions` is the one coordinate normalisation every source goes through: a montage in any
frame (colin27 is stored in 'mri' coordinates, vendor files in digitiser coordinates) is set on a
throw-away `mne.Info`, which moves it to the fiducial-based head frame (origin between the
preauricular points, +x right, +y nasion, metres). No head-size rescaling is applied; BioSemi's
idealised sphere layouts are registered onto the colin27 head (see `sphere_to_template`) so that
one electrode gets one position whichever way the file names it.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Mapping

    import mne

TEMPLATE = "colin27_1005"
# A vendor layout is recognised when every name is in it and at least this share of it is present
# (tolerates a few bad channels removed upstream, refuses a half cap).
VENDOR_MIN_FRACTION = 0.8
# Names EGI gives the vertex reference that MNE's GSN-HydroCel montages call 'Cz'.
_GSN_REFERENCE_NAMES = ("VREF", "VERTEXREFERENCE")


def head_positions(montage: mne.channels.DigMontage) -> dict[str, np.ndarray]:
    """Channel name -> (3,) position in MNE's head frame (metres) for every finite montage point."""
    import mne

    if not montage.ch_names:
        return {}
    info = mne.create_info(list(montage.ch_names), 1000.0, "eeg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MNE warns when it adds missing fiducials; expected
        info.set_montage(montage, on_missing="ignore", verbose="error")
    positions = {}
    for ch in info["chs"]:
        pos = np.array(ch["loc"][:3], dtype=np.float64)
        if np.all(np.isfinite(pos)) and np.linalg.norm(pos) > 1e-6:
            pos.setflags(write=False)
            positions[ch["ch_name"]] = pos
    return positions


@functools.cache
def builtin_positions(name: str) -> Mapping[str, np.ndarray]:
    """Head-frame positions of one of MNE's built-in montages, computed once per process."""
    import mne

    if name not in mne.channels.get_builtin_montages():
        raise ValueError(
            f"{name!r} is not an MNE built-in montage; choose one of "
            f"{', '.join(mne.channels.get_builtin_montages())}"
        )
    return MappingProxyType(head_positions(mne.channels.make_standard_montage(name)))


@functools.cache
def template_positions() -> Mapping[str, np.ndarray]:
    """Upper-case 10-05 label -> head-frame position on MNE's colin27_1005 template."""
    return MappingProxyType({k.upper(): v for k, v in builtin_positions(TEMPLATE).items()})


@dataclass(frozen=True, eq=False)  # identity hash: layouts are per-process singletons
class VendorLayout:
    """A vendor cap: its channel-name scheme mapped onto an MNE built-in montage."""

    name: str  # MNE built-in montage name, reported as 'vendor:<name>'
    size: int  # electrodes on the cap
    names: Mapping[str, str]  # upper-case file name -> MNE montage channel name
    # 'template': the montage names are 10-05 sites, placed on the colin27 template like any
    # 10-05 name; 'sphere': an idealised BioSemi sphere, registered onto the template head;
    # 'as_is': a realistic head-shaped layout (EGI), used in its own head frame.
    placement: str = "as_is"

    def positions(self) -> Mapping[str, np.ndarray]:
        """Upper-case file name -> head-frame position."""
        return _vendor_positions(self)


@functools.cache
def _vendor_positions(layout: VendorLayout) -> Mapping[str, np.ndarray]:
    if layout.placement == "template":
        template = template_positions()
        return MappingProxyType({k: template[v.upper()] for k, v in layout.names.items()})
    positions = builtin_positions(layout.name)
    if layout.placement == "sphere":
        scale, rotation, shift = sphere_to_template()
        positions = {k: _frozen(scale * rotation @ p + shift) for k, p in positions.items()}
    return MappingProxyType({k: positions[v] for k, v in layout.names.items()})


def _frozen(pos: np.ndarray) -> np.ndarray:
    pos = np.asarray(pos, dtype=np.float64)
    pos.setflags(write=False)
    return pos


@functools.cache
def sphere_to_template() -> tuple[float, np.ndarray, np.ndarray]:
    """(scale, rotation, shift) taking BioSemi's idealised sphere onto the colin27 head.

    Least-squares similarity fit (Umeyama 1991) over the 64 10-10 sites that MNE's biosemi64
    montage names; every BioSemi sphere layout shares that sphere, so the larger caps (128, 160,
    256, named A1..H32 only) land on the same head as 10-05 names do.
    """
    sphere, template = builtin_positions("biosemi64"), template_positions()
    src = np.array([sphere[name] for name in sphere])
    dst = np.array([template[name.upper()] for name in sphere])
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    u, sv, vt = np.linalg.svd((dst - dst_mean).T @ (src - src_mean))
    sign = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])  # a rotation, never a mirror
    rotation = u @ sign @ vt
    scale = float(np.sum(sv * np.diag(sign)) / np.sum((src - src_mean) ** 2))
    return scale, rotation, dst_mean - scale * rotation @ src_mean


def _biosemi_names(size: int) -> list[str]:
    # BioSemi numbers electrodes in blocks of 32 (A1..A32, B1..B32, ...).
    return [f"{chr(ord('A') + i // 32)}{i % 32 + 1}" for i in range(size)]


@functools.cache
def vendor_layouts() -> tuple[VendorLayout, ...]:
    """Vendor layouts recognised from names and count, smallest first."""
    import mne

    layouts = []
    for size in (16, 32, 64, 128, 160, 256):
        name = f"biosemi{size}"
        montage_names = mne.channels.make_standard_montage(name).ch_names
        # biosemi16/32/64 are stored with 10-20 labels listed in BioSemi's A1.. order; the larger
        # caps already use the A1.. names.
        mapping = dict(zip(_biosemi_names(size), montage_names, strict=True))
        placement = "template" if size <= 64 else "sphere"
        layouts.append(VendorLayout(name, size, MappingProxyType(mapping), placement))
    for name in (
        "GSN-HydroCel-32",
        "GSN-HydroCel-64_1.0",
        "GSN-HydroCel-65_1.0",
        "GSN-HydroCel-128",
        "GSN-HydroCel-129",
        "GSN-HydroCel-256",
        "GSN-HydroCel-257",
    ):
        montage_names = mne.channels.make_standard_montage(name).ch_names
        mapping = {n.upper(): n for n in montage_names}
        if "Cz" in montage_names:  # the vertex reference, also recorded as VREF or E<size>
            for alias in (*_GSN_REFERENCE_NAMES, f"E{len(montage_names)}"):
                mapping[alias] = "Cz"
        layouts.append(VendorLayout(name, len(montage_names), MappingProxyType(mapping)))
    return tuple(sorted(layouts, key=lambda layout: layout.size))


def recognise_vendor(labels: Sequence[str]) -> VendorLayout | None:
    """The smallest vendor layout holding every label, if enough of that layout is present."""
    keys = {"".join(label.split()).upper() for label in labels}
    if not keys or len(keys) != len(labels):
        return None
    for layout in vendor_layouts():
        if keys <= layout.names.keys():
            # One electrode per name: VREF and E257 both mean the reference, never both present.
            targets = {layout.names[key] for key in keys}
            if len(targets) == len(keys) and len(keys) >= math.ceil(
                VENDOR_MIN_FRACTION * layout.size
            ):
                return layout
            return None
    return None


# A display layout's outermost electrodes are taken to lie on the 10-20 equator (Fpz, T7, Oz, T8):
# polar angle 90 degrees from the vertex on the template's fitted sphere.
DISPLAY_LAYOUT_MAX_POLAR_RAD = math.pi / 2
# Layout points farther out than this (in units of the cap's robust half-extent) are off the cap
# (an ear or EOG input drawn beside the head) and are not placed.
DISPLAY_LAYOUT_MAX_RADIUS = 1.15


@functools.cache
def template_sphere() -> tuple[np.ndarray, float]:
    """(centre, radius) of the least-squares sphere through colin27's 10-05 positions."""
    points = np.array(list(template_positions().values()))
    # |p|^2 = 2 p.c + (r^2 - |c|^2) is linear in (c, r^2 - |c|^2)
    design = np.column_stack([2.0 * points, np.ones(len(points))])
    solution = np.linalg.lstsq(design, np.sum(points**2, axis=1), rcond=None)[0]
    centre = solution[:3]
    return centre, float(np.sqrt(solution[3] + centre @ centre))


def display_layout_to_head(xy: np.ndarray) -> np.ndarray:
    """Place a 2-D display layout (x right, y front) on the template head; NaN off the cap.

    Approximate by construction (centimetres): each axis is scaled to the cap's robust extent
    (display layouts are often stretched sideways), read as an azimuthal-equidistant projection
    from the vertex whose outer ring is the 10-20 equator, and wrapped onto colin27's sphere.
    """
    xy = np.asarray(xy, dtype=np.float64)
    low, high = np.percentile(xy, 2, axis=0), np.percentile(xy, 98, axis=0)
    half = np.maximum((high - low) / 2.0, 1e-9)
    unit = (xy - (high + low) / 2.0) / half
    radius = np.hypot(unit[:, 0], unit[:, 1])
    polar = np.minimum(radius, 1.0) * DISPLAY_LAYOUT_MAX_POLAR_RAD
    azimuth = np.arctan2(unit[:, 1], unit[:, 0])
    direction = np.column_stack(
        [np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth), np.cos(polar)]
    )
    centre, sphere_radius = template_sphere()
    positions = centre + sphere_radius * direction
    positions[radius > DISPLAY_LAYOUT_MAX_RADIUS] = np.nan
    return positions
