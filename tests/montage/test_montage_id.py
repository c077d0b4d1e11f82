"""montage_id: order-independent, 1 mm resolution, stable across runs and dtypes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from eegfm.montage import montage_id

NAMES = ["Fp1", "Cz", "O2"]
COORDS = np.array([[-0.03, 0.09, 0.01], [0.0, 0.0, 0.12], [0.03, -0.1, 0.02]])


def test_montage_id_is_sixteen_hex_chars_and_pinned() -> None:
    value = montage_id(NAMES, COORDS)
    assert len(value) == 16 and int(value, 16) >= 0
    # The documented recipe: sorted 'name<TAB>x<TAB>y<TAB>z' lines in whole millimetres.
    lines = "\n".join(["Cz\t0\t0\t120", "Fp1\t-30\t90\t10", "O2\t30\t-100\t20"])
    assert value == hashlib.sha256(lines.encode()).hexdigest()[:16]
    # pinned: a change here silently splits every existing shard directory's montage groups
    assert value == "829d46608f32c086"


def test_montage_id_ignores_channel_order() -> None:
    order = [2, 0, 1]
    assert montage_id([NAMES[i] for i in order], COORDS[order]) == montage_id(NAMES, COORDS)


def test_montage_id_resolution_is_one_millimetre() -> None:
    assert montage_id(NAMES, COORDS + 0.0003) == montage_id(NAMES, COORDS)
    moved = COORDS.copy()
    moved[1, 2] += 0.002
    assert montage_id(NAMES, moved) != montage_id(NAMES, COORDS)
    assert montage_id(["Fp2", "Cz", "O2"], COORDS) != montage_id(NAMES, COORDS)


def test_montage_id_same_for_float32_shard_coords() -> None:
    half_mm = np.array([[0.0125, -0.0335, 0.1005]] * 3)  # exactly on rounding boundaries
    assert montage_id(NAMES, half_mm.astype(np.float32)) == montage_id(NAMES, half_mm)


def test_montage_id_shape_mismatch_is_reported() -> None:
    with pytest.raises(ValueError, match=r"expected \(3, 3\)"):
        montage_id(NAMES, COORDS[:2])
