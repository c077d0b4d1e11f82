"""User montages: files written here in tmp_path resolve the EEGLAB recording's 'EEG 000..031'."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import mne
import numpy as np
import pytest

from eegfm.montage import locate_channels, read_user_montage
from eegfm.montage.layouts import template_positions

# 32 10-20/10-10 sites given to the EEGLAB file's 'EEG 000'..'EEG 031', in channel order.
LABELS = [
    "Fp1", "Fpz", "Fp2", "F7", "F3", "Fz", "F4", "F8", "FC5", "FC1", "FC2", "FC6", "T7", "C3",
    "Cz", "C4", "T8", "CP5", "CP1", "CP2", "CP6", "P7", "P3", "Pz", "P4", "P8", "PO3", "PO4",
    "O1", "Oz", "O2", "Iz",
]  # fmt: skip


@pytest.fixture(scope="module")
def eeglab_info(formats_dir: Path) -> mne.Info:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mne.io.read_raw(formats_dir / "EEGLAB" / "test_raw.set", preload=False).info


def _expected() -> np.ndarray:
    template = template_positions()
    return np.array([template[label.upper()] for label in LABELS])


def _assert_resolved(loc, expected: np.ndarray, atol: float = 1e-6) -> None:
    assert loc.counts == {"user_montage": 32}
    np.testing.assert_allclose([ch.coords for ch in loc.channels], expected, atol=atol)


def test_bids_electrodes_tsv_in_mni_millimetres(eeglab_info: mne.Info, tmp_path: Path) -> None:
    mri = mne.channels.make_standard_montage("colin27_1005").get_positions()["ch_pos"]
    rows = ["name\tx\ty\tz\ttype"]
    for i, label in enumerate(LABELS):
        x, y, z = mri[label] * 1000.0
        rows.append(f"EEG {i:03d}\t{x:.4f}\t{y:.4f}\t{z:.4f}\tEEG")
    tsv = tmp_path / "sub-01_electrodes.tsv"
    tsv.write_text("\n".join(rows) + "\n")
    (tmp_path / "sub-01_coordsystem.json").write_text(
        json.dumps({"EEGCoordinateSystem": "MNIColin27", "EEGCoordinateUnits": "mm"})
    )
    _assert_resolved(locate_channels(eeglab_info, montage=tsv), _expected())


def _rigid(points: np.ndarray) -> np.ndarray:
    """A digitiser frame: rotated, shifted, in millimetres."""
    angle = np.deg2rad(30.0)
    rot = np.array(
        [[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0, 0, 1.0]]
    )
    return (points @ rot.T + np.array([0.2, -0.1, 0.05])) * 1000.0


def _head_fiducials() -> dict[str, np.ndarray]:
    pos = mne.channels.make_standard_montage("colin27_1005")
    info = mne.create_info(pos.ch_names, 100.0, "eeg")
    info.set_montage(pos)
    fid = {d["ident"]: d["r"] for d in info["dig"] if d["kind"] == 1}  # 1 lpa, 2 nasion, 3 rpa
    return {"Nz": fid[2], "LPA": fid[1], "RPA": fid[3]}


def test_elc_in_a_rotated_digitiser_frame(eeglab_info: mne.Info, tmp_path: Path) -> None:
    fiducials = _head_fiducials()
    names = [f"EEG {i:03d}" for i in range(32)] + list(fiducials)
    points = _rigid(np.vstack([_expected(), *fiducials.values()]))
    lines = ["# ASA electrode file", "ReferenceLabel\tavg", "UnitPosition\tmm"]
    lines += [f"NumberPositions=\t{len(names)}", "Positions"]
    lines += [" ".join(f"{v:.6f}" for v in p) for p in points]
    lines += ["Labels", *names, ""]
    elc = tmp_path / "cap.elc"
    elc.write_text("\n".join(lines))
    _assert_resolved(locate_channels(eeglab_info, montage=elc), _expected())


def test_sfp_in_centimetres_units_inferred(eeglab_info: mne.Info, tmp_path: Path) -> None:
    sfp = tmp_path / "cap.sfp"
    rows = [f"{i:03d} {x:.5f} {y:.5f} {z:.5f}" for i, (x, y, z) in enumerate(_expected() * 100)]
    sfp.write_text("\n".join(rows) + "\n")
    # .sfp names have no spaces: the montage says '000', the file 'EEG 000' (normalised label)
    _assert_resolved(locate_channels(eeglab_info, montage=sfp), _expected())


def test_dig_montage_and_builtin_name() -> None:
    names = [str(i) for i in range(1, 62)]
    info = mne.create_info(names, 256.0, "eeg")
    assert locate_channels(info).counts == {"unresolved": 61}  # numbers are never guessed
    loc = locate_channels(info, montage="easycap-M10")
    assert loc.counts == {"user_montage": 61}
    montage = mne.channels.make_standard_montage("easycap-M10")
    loc_obj = locate_channels(info, montage=montage)
    np.testing.assert_array_equal(
        [c.coords for c in loc.channels], [c.coords for c in loc_obj.channels]
    )


def test_user_montage_wins_over_template() -> None:
    info = mne.create_info(["Cz", "Fz", "Pz"], 256.0, "eeg")
    loc = locate_channels(info, montage="biosemi64")
    assert loc.counts == {"user_montage": 3}
    assert not np.allclose(loc.channels[0].coords, template_positions()["CZ"])


def test_montage_in_wrong_units_is_refused(tmp_path: Path) -> None:
    tsv = tmp_path / "electrodes.tsv"
    rows = ["name\tx\ty\tz"] + [f"E{i}\t{i * 50}.0\t3000.0\t9000.0" for i in range(10)]
    tsv.write_text("\n".join(rows) + "\n")
    (tmp_path / "coordsystem.json").write_text(
        json.dumps({"EEGCoordinateSystem": "CapTrak", "EEGCoordinateUnits": "m"})
    )
    info = mne.create_info(["E1"], 256.0, "eeg")
    with pytest.raises(ValueError, match="units are probably wrong"):
        locate_channels(info, montage=tsv)


def test_bad_montage_arguments_are_named(tmp_path: Path) -> None:
    info = mne.create_info(["Cz"], 256.0, "eeg")
    with pytest.raises(FileNotFoundError, match="no_such_cap"):
        locate_channels(info, montage="no_such_cap")
    with pytest.raises(TypeError, match="DigMontage"):
        locate_channels(info, montage=42)  # type: ignore[arg-type]
    odd = tmp_path / "cap.abc"
    odd.write_text("x")
    with pytest.raises(ValueError, match="unsupported extension"):
        read_user_montage(odd)
    tsv = tmp_path / "sub-01_electrodes.tsv"
    tsv.write_text("name\tx\ty\tz\nCz\t0\t0\t0.1\n")
    (tmp_path / "sub-01_coordsystem.json").write_text(
        json.dumps({"EEGCoordinateSystem": "ACPC", "EEGCoordinateUnits": "m"})
    )
    with pytest.raises(ValueError, match="ACPC"):
        read_user_montage(tsv)


# EEGLAB .loc: index, theta (degrees from the nose, clockwise), radius (0.5 = ear level), label
LOC = "".join(
    f"{i}\t{theta}\t{radius}\t{name}\n"
    for i, (theta, radius, name) in enumerate(
        [(-18, 0.511, "Fp1"), (0, 0.256, "Fz"), (0, 0, "Cz"), (-90, 0.511, "T7"),
         (90, 0.511, "T8"), (180, 0.511, "Oz")], start=1,
    )
)  # fmt: skip
BVEF = """<?xml version="1.0" encoding="UTF-8"?>
<BrainVisionElectrodes Version="1">
{}
</BrainVisionElectrodes>
"""


def _bvef(tmp_path: Path) -> Path:
    sites = {"Fpz": (90, 90), "Fz": (45, 90), "Cz": (0, 0), "T7": (-90, 0), "T8": (90, 0)}
    sites["Oz"] = (90, -90)
    body = "\n".join(
        f"<Electrode><Name>{n}</Name><Theta>{t}</Theta><Phi>{p}</Phi><Radius>1</Radius></Electrode>"
        for n, (t, p) in sites.items()
    )
    path = tmp_path / "cap.bvef"
    path.write_text(BVEF.format(body))
    return path


@pytest.mark.parametrize("kind", ["loc", "bvef"])
def test_spherical_files_are_oriented_like_the_head_frame(kind: str, tmp_path: Path) -> None:
    if kind == "loc":
        path = tmp_path / "cap.loc"
        path.write_text(LOC)
    else:
        path = _bvef(tmp_path)
    names = ["Fp1" if kind == "loc" else "Fpz", "Fz", "Cz", "T7", "T8", "Oz"]
    loc = locate_channels(mne.create_info(names, 256.0, "eeg"), montage=path)
    assert loc.counts == {"user_montage": 6}
    pos = {ch.name: ch.coords for ch in loc.channels}
    assert pos["T7"][0] < -0.08 and pos["T8"][0] > 0.08  # +x right
    assert pos[names[0]][1] > 0.08 and pos["Oz"][1] < -0.08  # +y nasion
    assert pos["Cz"][2] == max(p[2] for p in pos.values())  # +z up
    np.testing.assert_allclose(np.linalg.norm(pos["Cz"]), 0.095, rtol=1e-3)


def test_csv_in_millimetres_units_inferred(tmp_path: Path) -> None:
    template = template_positions()
    labels = LABELS[:19]
    rows = ["name,x,y,z"] + [
        f"{label},{','.join(f'{v * 1000:.4f}' for v in template[label.upper()])}"
        for label in labels
    ]
    path = tmp_path / "cap.csv"
    path.write_text("\n".join(rows) + "\n")
    loc = locate_channels(mne.create_info(labels, 256.0, "eeg"), montage=path)
    assert loc.counts == {"user_montage": 19}
    expected = [template[label.upper()] for label in labels]
    np.testing.assert_allclose([ch.coords for ch in loc.channels], expected, atol=1e-6)
