"""locate_channels on the real recordings in ../shared/eeg, plus synthetic caps."""

from __future__ import annotations

import warnings
from pathlib import Path

import mne
import numpy as np
import pytest

from eegfm.montage import Localization, locate_channels
from eegfm.montage.layouts import builtin_positions, sphere_to_template, template_positions


def _info(path: Path) -> mne.Info:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # readers warn about annotations/units we do not use
        return mne.io.read_raw(path, preload=False).info


def _methods(loc: Localization) -> dict[str, str]:
    return {ch.name: ch.method for ch in loc.channels}


def _assert_plausible(loc: Localization) -> None:
    for ch in loc.located:
        assert np.all(np.isfinite(ch.coords)), ch.name
        assert 0.05 <= np.linalg.norm(ch.coords) <= 0.15, (ch.name, ch.coords)
    for ch in loc.channels:
        if ch.method in ("unresolved", "non_scalp"):
            assert np.all(np.isnan(ch.coords)), ch.name


@pytest.fixture(scope="module")
def eegmat(eegmat_dir: Path) -> Localization:
    return locate_channels(_info(eegmat_dir / "Subject00_1.edf"))


def test_eegmat_resolves_19_scalp_channels_by_template(eegmat: Localization) -> None:
    assert eegmat.counts == {"template": 19, "non_scalp": 2}
    methods = _methods(eegmat)
    assert methods["EEG A2-A1"] == "non_scalp" and methods["ECG ECG"] == "non_scalp"
    by_name = {ch.name: ch for ch in eegmat.channels}
    template = template_positions()
    for old, new in [("T3", "T7"), ("T4", "T8"), ("T5", "P7"), ("T6", "P8")]:
        channel = by_name[f"EEG {old}"]
        assert channel.label == new
        np.testing.assert_array_equal(channel.coords, template[new.upper()])
        assert np.all(np.isnan(channel.ref_coords))
    _assert_plausible(eegmat)


def test_template_is_in_head_frame(eegmat: Localization) -> None:
    pos = {ch.label: ch.coords for ch in eegmat.located}
    assert pos["T7"][0] < -0.06 and pos["T8"][0] > 0.06  # +x right
    assert pos["Fp1"][1] > 0.06 and pos["O1"][1] < -0.06  # +y nasion
    assert pos["Cz"][2] > 0.08  # +z up
    assert abs(pos["T7"][0] + pos["T8"][0]) < 0.01  # origin between the ears


def test_egi_keeps_its_257_digitised_positions(formats_dir: Path) -> None:
    info = _info(formats_dir / "EGI" / "test_egi_multiepoch_paused.mff")
    loc = locate_channels(info)
    assert loc.counts["digitization"] == 257
    assert loc.vendor == "GSN-HydroCel-257"
    vendor = builtin_positions("GSN-HydroCel-257")
    distances = []
    for ch, info_ch in zip(loc.channels, info["chs"], strict=True):
        if ch.method == "digitization":
            np.testing.assert_array_equal(ch.coords, info_ch["loc"][:3])
            distances.append(
                np.linalg.norm(ch.coords - vendor["Cz" if ch.name == "VREF" else ch.name])
            )
    # the file's digitisation and MNE's GSN-257 layout, both in head frame, agree to ~1 cm
    assert np.median(distances) < 0.01
    _assert_plausible(loc)


def test_letter_number_cap_is_never_matched_name_by_name(formats_dir: Path) -> None:
    loc = locate_channels(_info(formats_dir / "EDF" / "test_reduced.edf"))
    methods = _methods(loc)
    assert loc.numbering == "letter-number" and loc.vendor is None
    assert not loc.located  # its C3, F3, A1... are not the 10-20 sites
    assert methods["C3"] == methods["A1"] == "unresolved"
    assert {n for n, m in methods.items() if m == "non_scalp"} == {
        "Ergo-Left",
        "Ergo-Right",
        "Status",
    }
    assert loc.counts == {"unresolved": 136, "non_scalp": 3}


def test_numbered_brainvision_is_reported_not_guessed(formats_dir: Path) -> None:
    loc = locate_channels(_info(formats_dir / "Brainvision" / "test_NO.vhdr"))
    assert loc.counts == {"unresolved": 63, "non_scalp": 2}
    assert loc.report()["non_scalp"] == ["EMGright", "EMGleft"]
    assert len(loc.report()["unresolved"]) == 63


def test_eeglab_without_montage_is_unresolved(formats_dir: Path) -> None:
    loc = locate_channels(_info(formats_dir / "EEGLAB" / "test_raw.set"))
    assert loc.counts == {"unresolved": 32}


def test_nihon_kohden_eeg_and_edf_export_agree(formats_dir: Path) -> None:
    native = locate_channels(_info(formats_dir / "NihonKohden" / "MB0400FU.EEG"))
    export = locate_channels(_info(formats_dir / "NihonKohden" / "MB0400FU.EDF"))
    assert native.counts == export.counts == {"template": 19, "non_scalp": 6}
    native_pos = {ch.label: ch.coords for ch in native.located}
    export_pos = {ch.label: ch.coords for ch in export.located}
    assert native_pos.keys() == export_pos.keys()
    for label, pos in native_pos.items():
        np.testing.assert_array_equal(pos, export_pos[label])
    assert native.montage_id == export.montage_id
    non_scalp = {ch.label for ch in native.channels if ch.method == "non_scalp"}
    assert non_scalp == {"E", "X1", "$A1", "$A2", "A1", "A2"}
    assert {ch.label for ch in export.channels if ch.method == "non_scalp"} == non_scalp
    _assert_plausible(native)


def test_ant_cap_resolves_tenfive_names(formats_dir: Path) -> None:
    loc = locate_channels(_info(formats_dir / "antio" / "CA_208" / "test_CA_208.vhdr"))
    methods = _methods(loc)
    assert loc.counts == {"template": 61, "non_scalp": 27}
    assert all(methods[f"BIP{i}"] == "non_scalp" for i in range(1, 25))
    assert methods["M1"] == methods["M2"] == methods["EOG"] == "non_scalp"
    assert methods["FCz"] == methods["POz"] == "template"
    _assert_plausible(loc)


def test_biosemi_bdf_three_channels(formats_dir: Path) -> None:
    loc = locate_channels(_info(formats_dir / "BDF" / "test_bdf_stim_channel.bdf"))
    assert _methods(loc) == {
        "C3": "template",
        "C4": "template",
        "Cz": "template",
        "Status": "non_scalp",
    }
    _assert_plausible(loc)


def _synthetic(names: list[str]) -> mne.Info:
    return mne.create_info(names, 256.0, "eeg")


@pytest.mark.parametrize(
    ("names", "vendor", "checks"),
    [
        ([f"{b}{i}" for b in "AB" for i in range(1, 33)], "biosemi64", {"A1": "FP1", "B32": "O2"}),
        ([f"A{i}" for i in range(1, 33)], "biosemi32", {"A1": "FP1", "A32": "CZ"}),
        ([f"E{i}" for i in range(1, 129)] + ["VREF"], "GSN-HydroCel-129", {"VREF": "Cz"}),
        ([f"E{i}" for i in range(1, 130)], "GSN-HydroCel-129", {"E129": "Cz", "E5": "E5"}),
    ],
)
def test_vendor_layouts_recognised_from_names_and_count(
    names: list[str], vendor: str, checks: dict[str, str]
) -> None:
    loc = locate_channels(_synthetic([*names, "EXG1", "Status"]))
    assert loc.vendor == vendor
    assert loc.counts == {f"vendor:{vendor}": len(names), "non_scalp": 2}
    # BioSemi's 10-10 caps land where the same 10-05 names land; EGI's layout is used as is
    positions = template_positions() if vendor.startswith("biosemi") else builtin_positions(vendor)
    by_name = {ch.name: ch for ch in loc.channels}
    for name, target in checks.items():
        np.testing.assert_array_equal(by_name[name].coords, positions[target])
    _assert_plausible(loc)


def test_biosemi_128_sphere_is_registered_onto_the_template_head() -> None:
    names = [f"{b}{i}" for b in "ABCD" for i in range(1, 33)]
    loc = locate_channels(_synthetic(names))
    assert loc.counts == {"vendor:biosemi128": 128}
    _assert_plausible(loc)
    # the registration fitted on biosemi64's named sites puts them within ~1 cm of colin27
    scale, rotation, shift = sphere_to_template()
    assert 0.9 < scale < 1.1 and np.allclose(rotation @ rotation.T, np.eye(3))
    sphere, template = builtin_positions("biosemi64"), template_positions()
    residual = [
        np.linalg.norm(scale * rotation @ pos + shift - template[name.upper()])
        for name, pos in sphere.items()
    ]
    assert np.median(residual) < 0.01
    # A1 of the 128 cap is BioSemi's vertex electrode: near Cz after registration
    a1 = next(ch for ch in loc.channels if ch.name == "A1")
    assert np.linalg.norm(a1.coords - template["CZ"]) < 0.02


def _words(text: str) -> list[str]:
    return text.split()


EEGMMIDB = _words(
    "Fc5. Fc3. Fc1. Fcz. Fc2. Fc4. Fc6. C5.. C3.. C1.. Cz.. C2.. C4.. C6.. Cp5. Cp3. Cp1. Cpz. "
    "Cp2. Cp4. Cp6. Fp1. Fpz. Fp2. Af7. Af3. Afz. Af4. Af8. F7.. F5.. F3.. F1.. Fz.. F2.. F4.. "
    "F6.. F8.. Ft7. Ft8. T7.. T8.. T9.. T10. Tp7. Tp8. P7.. P5.. P3.. P1.. Pz.. P2.. P4.. P6.. "
    "P8.. Po7. Po3. Poz. Po4. Po8. O1.. Oz.. O2.. Iz.."
)
TUH = [
    *(f"EEG {n}-REF" for n in _words("FP1 FP2 F3 F4 C3 C4 P3 P4 O1 O2 F7 F8 T3 T4 T5 T6 A1 A2")),
    *(f"EEG {n}-REF" for n in _words("FZ CZ PZ T1 T2 EKG1 LOC ROC SP1 SP2 26 27 28 29 30")),
    "EEG PHOTIC-REF", "IBI", "BURSTS", "SUPPR",
]  # fmt: skip


def test_physionet_motor_imagery_names_resolve_by_template() -> None:
    loc = locate_channels(_synthetic(EEGMMIDB))
    assert loc.counts == {"template": 64}
    assert {ch.label for ch in loc.channels} >= {"FC5", "FCz", "AFz", "T10", "Iz", "POz"}


def test_clinical_tuh_names() -> None:
    loc = locate_channels(_synthetic(TUH))
    methods = _methods(loc)
    assert loc.numbering is None  # five numbered extras do not make a numbered cap
    assert loc.counts == {"template": 21, "non_scalp": 11, "unresolved": 5}
    assert methods["EEG T1-REF"] == "template" and methods["EEG A1-REF"] == "non_scalp"
    assert methods["EEG SP1-REF"] == methods["EEG EKG1-REF"] == methods["IBI"] == "non_scalp"
    assert methods["EEG 26-REF"] == "unresolved"


def test_vendor_tolerates_a_few_dropped_channels_but_not_half_a_cap() -> None:
    names = [f"{b}{i}" for b in "ABCD" for i in range(1, 33)]
    assert locate_channels(_synthetic(names[:-10])).vendor == "biosemi128"
    half = [f"{b}{i}" for b in "AB" for i in range(1, 17)]  # fits biosemi64's names, not its count
    loc = locate_channels(_synthetic(half))
    assert loc.vendor is None and loc.counts == {"unresolved": 32}


def test_bipolar_derivation_keeps_both_electrodes() -> None:
    loc = locate_channels(_synthetic(["EEG FP1-F7", "EEG F7-T3", "EEG T3-T5", "EEG FP1-ZZ"]))
    template = template_positions()
    first, second, third, odd = loc.channels
    assert (first.label, first.method) == ("Fp1-F7", "template")
    np.testing.assert_array_equal(first.coords, template["FP1"])
    np.testing.assert_array_equal(first.ref_coords, template["F7"])
    np.testing.assert_array_equal(second.ref_coords, template["T7"])
    assert third.label == "T7-P7"
    assert odd.method == "unresolved"  # 'ZZ' is no electrode: the name is not split


def _digitised_info(names: list[str]) -> mne.Info:
    info = _synthetic(names)
    info.set_montage("fsaverage_1005")  # a head that differs from colin27 by millimetres
    return info


def test_partial_digitisation_falls_back_per_channel() -> None:
    info = _digitised_info(["Fp1", "Cz", "Oz", "O1"])
    with info._unlock():
        info["chs"][1]["loc"][2] = np.nan  # Cz: z missing
        info["chs"][2]["loc"][:3] = 0.0  # Oz: reader stored zeros (no position)
    loc = locate_channels(info)
    assert [ch.method for ch in loc.channels] == [
        "digitization",
        "template",
        "template",
        "digitization",
    ]
    assert loc.warnings == ["digitised position partly NaN, ignored for Cz"]
    np.testing.assert_array_equal(loc.channels[0].coords, info["chs"][0]["loc"][:3])


def test_digitisation_in_wrong_units_is_ignored() -> None:
    info = _digitised_info(["Fp1", "Cz", "O1"])
    with info._unlock():
        for ch in info["chs"]:
            ch["loc"][:3] *= 1000.0  # a file that stored millimetres
    loc = locate_channels(info)
    assert loc.counts == {"template": 3}
    assert any("wrong units" in w for w in loc.warnings)


def test_cnt_display_layout_is_not_taken_for_positions(formats_dir: Path) -> None:
    # MNE projects the CNT header's 2-D screen layout onto a unit sphere; its numbered channels
    # then have no position at all
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = mne.io.read_raw_cnt(
            formats_dir / "CNT" / "scan41_short.cnt", data_format="int32", preload=False
        )
    loc = locate_channels(raw.info)
    assert not loc.located and loc.numbering == "numeric"
    assert any("unit sphere" in w for w in loc.warnings)


def test_non_eeg_channel_types_are_non_scalp() -> None:
    info = mne.create_info(["Cz", "Fz", "HEOG", "STI"], 256.0, ["eeg", "misc", "eog", "stim"])
    assert [ch.method for ch in locate_channels(info).channels] == [
        "template",
        "non_scalp",
        "non_scalp",
        "non_scalp",
    ]


def test_locate_rejects_what_is_not_an_info() -> None:
    with pytest.raises(TypeError, match=r"mne\.Info"):
        locate_channels(["Cz"])  # type: ignore[arg-type]


def test_cnt_display_layout_is_placed_only_when_asked(formats_dir: Path) -> None:
    # opt-in: the header layout becomes approximate positions on the template head
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = mne.io.read_raw_cnt(
            formats_dir / "CNT" / "scan41_short.cnt", data_format="int32", preload=False
        )
    loc = locate_channels(raw.info, header_layout=True)
    placed = {ch.name: ch.coords for ch in loc.located}
    assert {ch.method for ch in loc.located} == {"header_layout"}
    assert {str(n) for n in range(1, 125)} <= placed.keys()
    assert "LEFT_EAR" not in placed  # drawn beside the head: off the cap, not placed
    coords = np.array(list(placed.values()))
    assert np.all(np.isfinite(coords))
    assert np.all((np.linalg.norm(coords, axis=1) > 0.05) & (np.linalg.norm(coords, axis=1) < 0.15))
    # the layout's orientation survives: channel 2 (front row) is anterior of 119 (back row),
    # channel 68 (far left) is left of 78 (far right)
    assert placed["2"][1] > placed["119"][1] + 0.1
    assert placed["68"][0] < placed["78"][0] - 0.1
    assert any("display layout" in w for w in loc.warnings)
