"""Name-level rules: normalisation, aliases, non-scalp names, numbered caps."""

from __future__ import annotations

import mne
import numpy as np
import pytest

from eegfm.montage import (
    ALIASES,
    is_non_scalp,
    normalize_channel_name,
    numbering_scheme,
)
from eegfm.montage.names import is_scalp_label, tenfive_spellings


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("EEG Fp1-REF", ("Fp1", None)),
        ("EEG Fp1-Ref", ("Fp1", None)),
        ("EEG FP1-LE", ("Fp1", None)),
        ("EEG FP1-AR", ("Fp1", None)),
        ("Fp1-AVG", ("Fp1", None)),
        ("Fp1-CAR", ("Fp1", None)),
        ("FP1.", ("Fp1", None)),
        ("Fc5.", ("FC5", None)),
        ("Cz..", ("Cz", None)),
        ("  Fp1 ", ("Fp1", None)),
        ("Fp1-A1", ("Fp1", None)),
        ("Fp1-M2", ("Fp1", None)),
        ("FP1-F7", ("Fp1", "F7")),
        ("Fp1 - F7", ("Fp1", "F7")),
        ("EEG F7-T3", ("F7", "T7")),
        ("T6-O2", ("P8", "O2")),
        ("EEG T3", ("T7", None)),
        ("EEG T4", ("T8", None)),
        ("T5", ("P7", None)),  # MNE's match_alias would say T9
        ("T6", ("P8", None)),
        ("EEG T1-REF", ("FT9", None)),
        ("O9", ("I1", None)),
        ("FPZ", ("Fpz", None)),
        ("CZ", ("Cz", None)),
        ("AFZ", ("AFz", None)),
        ("aff1h", ("AFF1h", None)),
        ("POL E", ("E", None)),
        ("POL $A1", ("$A1", None)),
        ("EEG A2-A1", ("A2", None)),
        ("A1-Cz", ("A1", None)),
        ("ECG ECG", ("ECG ECG", None)),
        ("E17", ("E17", None)),
        ("Ergo-Left", ("Ergo-Left", None)),
        ("EEG 000", ("000", None)),
        ("Fp1'", ("Fp1'", None)),  # primed names are ambiguous: left for a user montage
    ],
)
def test_normalize_channel_name(name: str, expected: tuple[str, str | None]) -> None:
    assert normalize_channel_name(name) == expected


def test_aliases_can_be_switched_off_for_numbered_caps() -> None:
    assert normalize_channel_name("T3", apply_aliases=False) == ("T3", None)
    assert normalize_channel_name("c3", apply_aliases=False) == ("C3", None)


def test_normalize_rejects_non_strings() -> None:
    with pytest.raises(TypeError, match="channel name"):
        normalize_channel_name(3)  # type: ignore[arg-type]


def test_spellings_are_unique_once_case_is_folded() -> None:
    names = mne.channels.make_standard_montage("colin27_1005").ch_names
    assert len({n.upper() for n in names}) == len(names)
    assert len(tenfive_spellings()) == len(names) - 4  # T3..T6 are aliases


def _colin27_positions(name: str) -> dict[str, np.ndarray]:
    return mne.channels.make_standard_montage(name).get_positions()["ch_pos"]


def test_every_alias_matches_the_mne_template_that_uses_the_old_name() -> None:
    """Each alias target is where some MNE colin27 montage puts the old name (same frame)."""
    reference = _colin27_positions("colin27_1005")
    others = {name: _colin27_positions(name) for name in ("colin27_1020", "colin27_primed")}
    others["colin27_1005"] = reference
    for old, new in ALIASES.items():
        assert new in reference, new
        sources = [pos[old] for pos in others.values() if old in pos]
        assert sources, f"no MNE colin27 montage names {old}"
        for pos in sources:
            assert np.linalg.norm(pos - reference[new]) < 1e-3, (old, new)


@pytest.mark.parametrize(
    ("name", "numbered_cap"),
    [
        ("ECG ECG", False),
        ("EEG A2-A1", False),
        ("A1", False),
        ("M2", False),
        ("EMGright", False),
        ("EOG", False),
        ("BIP12", False),
        ("Status", False),
        ("X1", False),
        ("POL $A2", False),
        ("E", False),
        ("Ergo-Left", False),
        ("EXG3", True),
        ("STI 014", True),
    ],
)
def test_non_scalp_names(name: str, numbered_cap: bool) -> None:
    label = normalize_channel_name(name)[0]
    assert is_non_scalp(name, label, numbered_cap=numbered_cap)


def test_no_scalp_label_looks_non_scalp() -> None:
    scalp = [n for n in tenfive_spellings().values() if is_scalp_label(n)]
    assert len(scalp) > 330
    assert not [n for n in scalp if is_non_scalp(n, n)]
    # inside a numbered cap A1/A2 are electrodes, and EGI's E-numbers are never non-scalp
    assert not is_non_scalp("A1", "A1", numbered_cap=True)
    assert not is_non_scalp("E17", "E17")


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ([f"{b}{i}" for b in "AB" for i in range(1, 33)], "letter-number"),
        ([f"E{i}" for i in range(1, 257)] + ["VREF"], "letter-number"),
        (
            [f"{b}{i}" for b in "ABCDEFGHI" for i in range(1, 17 if b in "AB" else 9)],
            "letter-number",
        ),
        ([str(i) for i in range(1, 66)], "numeric"),
        (["Fp1", "Fp2", "C3", "C4", "O1", "O2", "E1", "E2"], None),  # sleep EOG E1/E2
        (["Fp1", "F7", "T3", "C3", "Cz", "P3", "O1", "26", "27", "28"], None),  # TUH extras
        (["C3", "C4", "Cz"], None),
    ],
)
def test_numbering_scheme(labels: list[str], expected: str | None) -> None:
    assert numbering_scheme(labels) == expected
