"""Channel-name normalisation: prefixes, reference suffixes, case, aliases, non-scalp names.

Everything here works on names alone; which cap a name belongs to is decided in `locate.py`
from the whole set of names (see `numbering_scheme`).
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable

# Old 10-20 / alternative names -> 10-05 name, as placed by MNE's colin27 templates. Each entry is
# checked in tests against the MNE montage that uses the old name (same position within 1 mm).
ALIASES: dict[str, str] = {
    # ACNS/AEEGS modified combinatorial nomenclature (10-10): the four renamed 10-20 sites.
    "T3": "T7",
    "T4": "T8",
    "T5": "P7",
    "T6": "P8",
    # Extended 10-20 names of the inferior occipital sites (MNE colin27_1020 stores O9/O10 there).
    "O9": "I1",
    "O10": "I2",
    # Anterior temporal electrodes: FT9/FT10 in the primed and postfixed 10-05 nomenclatures
    # (Oostenveld & Praamstra 2001); the clinical T1/T2 lie within ~1.5 cm of these sites.
    "T1": "FT9",
    "T2": "FT10",
    # Cerebellar sites of the same two nomenclatures.
    "Cb1": "PO9",
    "Cb2": "PO10",
}

# Ear-lobe and mastoid references: never embedded as scalp electrodes (outside a numbered cap).
EAR_REFERENCES: frozenset[str] = frozenset({"A1", "A2", "M1", "M2"})

# Reference words after a hyphen ('Fp1-REF', 'FP1-LE'): dropped, the channel stays referential.
REFERENCE_SUFFIXES: frozenset[str] = frozenset(
    {"REF", "LE", "AR", "AVG", "AV", "CAR", "AVERAGE", "LINKED", "A1A2", "M1M2", "A12"}
)

# Upper-case label prefixes of channels that are not scalp electrodes. None of them starts a
# 10-05 name, so a prefix test cannot catch a scalp label ('E' alone is Nihon Kohden's E input).
NON_SCALP_PREFIXES: tuple[str, ...] = (
    "ECG", "EKG", "EOG", "HEOG", "VEOG", "EMG", "EXG", "BIP", "AUX", "GSR", "EDA", "RESP",
    "PULSE", "PLETH", "SPO2", "SAO2", "HR", "TEMP", "PHOTIC", "LOC", "ROC", "CHIN", "LEG",
    "SNORE", "THOR", "ABD", "CHEST", "NASAL", "FLOW", "ERGO", "ACC", "GYRO", "TRIG", "STATUS",
    "STI", "EVENT", "MARK", "DC", "IBI", "BURSTS", "SUPPR", "SP", "PG", "X", "$",
)  # fmt: skip
NON_SCALP_EXACT: frozenset[str] = frozenset({"E"})

# EDF+ signal labels are 'TYPE SENSOR'; a non-EEG type word marks a non-scalp channel.
_TYPE_PREFIX = re.compile(r"^\s*(EEG|POL)[\s_:]+(?=\S)", re.IGNORECASE)
_NON_EEG_TYPE = re.compile(
    r"^\s*(ECG|EKG|EOG|EMG|RESP|SAO2|SPO2|PLETH|TEMP|MISC|TRIG|EVENT|STIM|BIO|GSR)\s", re.I
)
_HYPHEN = re.compile(r"\s*-\s*")
_LETTER_NUMBER = re.compile(r"^[A-Z]\d{1,3}$")
_NUMERIC = re.compile(r"^\d+$")


@functools.lru_cache(maxsize=65536)
def _key(token: str) -> str:
    """Case- and space-free key used for every name comparison."""
    return re.sub(r"\s+", "", token).upper()


@functools.cache
def tenfive_spellings() -> dict[str, str]:
    """Upper-case key -> 10-05 spelling for every name MNE's colin27_1005 template knows."""
    import mne  # lazy: no work at import time

    names = mne.channels.make_standard_montage("colin27_1005").ch_names
    return {_key(name): name for name in names if name not in ALIASES}


@functools.cache
def _alias_keys() -> dict[str, str]:
    return {_key(old): new for old, new in ALIASES.items()}


def canonical_label(token: str, *, apply_aliases: bool = True) -> str:
    """Spell one electrode token the 10-05 way ('FP1' -> 'Fp1', 'T3' -> 'T7'); unknown kept."""
    key = _key(token)
    if apply_aliases and key in _alias_keys():
        return _alias_keys()[key]
    return tenfive_spellings().get(key, " ".join(token.split()))


def is_scalp_label(label: str) -> bool:
    """True for a 10-05 scalp position name (or an alias of one), False for ear refs and others."""
    key = _key(label)
    if key in _alias_keys():
        return True
    return key in tenfive_spellings() and key not in EAR_REFERENCES


def _is_electrode(token: str) -> bool:
    key = _key(token)
    return is_scalp_label(token) or key in EAR_REFERENCES


def normalize_channel_name(name: str, *, apply_aliases: bool = True) -> tuple[str, str | None]:
    """Canonical (label, bipolar second electrode or None) of a channel name as found in a file.

    'EEG Fp1-REF' -> ('Fp1', None); 'Fc5.' -> ('FC5', None); 'Fp1-A1' -> ('Fp1', None);
    'FP1-F7' -> ('Fp1', 'F7'); 'EEG T3' -> ('T7', None). Names that are not 10-05 electrodes are
    returned stripped but otherwise unchanged ('E17', 'Ergo-Left'). `apply_aliases=False` keeps
    old names (used inside numbered caps, where 'T3' is just the third T electrode).
    """
    if not isinstance(name, str):
        raise TypeError(f"channel name must be a str, got {type(name).__name__}: {name!r}")
    return _normalize(name, apply_aliases)


@functools.lru_cache(maxsize=65536)  # recordings of one dataset repeat the same names
def _normalize(name: str, apply_aliases: bool) -> tuple[str, str | None]:
    stripped = _TYPE_PREFIX.sub("", name.strip())
    # PhysioNet pads names with dots to four characters ('Fc5.', 'Cz..').
    stripped = stripped.rstrip(".").strip() or stripped
    parts = [part for part in _HYPHEN.split(stripped) if part]
    while len(parts) > 1 and (
        _key(parts[-1]) in REFERENCE_SUFFIXES or _key(parts[-1]) in EAR_REFERENCES
    ):
        parts.pop()
    if len(parts) == 1:
        return canonical_label(parts[0], apply_aliases=apply_aliases), None
    if len(parts) == 2 and all(_is_electrode(part) for part in parts):
        first, second = (canonical_label(p, apply_aliases=apply_aliases) for p in parts)
        if _key(first) in EAR_REFERENCES:  # 'A1-Cz': an ear electrode, not a scalp derivation
            return first, None
        return first, second
    return "-".join(" ".join(part.split()) for part in parts), None


@functools.lru_cache(maxsize=65536)
def is_non_scalp(name: str, label: str, *, numbered_cap: bool = False) -> bool:
    """True when a channel is known not to be a scalp electrode (ECG, EOG, ear refs, triggers...).

    `numbered_cap=True` means the recording's cap numbers its electrodes ('A1..A32, B1..'): there
    'A1'/'A2' are cap electrodes, not ear references.
    """
    if _NON_EEG_TYPE.match(name):
        return True
    key = _key(label)
    if key in NON_SCALP_EXACT or key.startswith(NON_SCALP_PREFIXES):
        return True
    return not numbered_cap and key in EAR_REFERENCES


def numbering_scheme(labels: Iterable[str]) -> str | None:
    """'letter-number' / 'numeric' when a cap numbers its electrodes, None for a 10-05 style cap.

    Decided on the whole set: numbered names that are not 10-05 names ('A7', 'B1', 'E12', '33')
    must be at least 3 and at least as many as the 10-05 names. A clinical file with a few extra
    numbered inputs ('26', '27') or sleep EOG 'E1'/'E2' beside its 10-20 names stays a 10-05 cap.
    """
    kinds = Counter(_label_kind(label) for label in labels)
    numeric, foreign, tenfive = kinds["numeric"], kinds["foreign"], kinds["tenfive"]
    numbered = numeric + foreign
    if numbered >= 3 and numbered >= tenfive:
        return "letter-number" if foreign >= numeric else "numeric"
    return None


@functools.lru_cache(maxsize=65536)
def _label_kind(label: str) -> str | None:
    key = _key(label)
    if _NUMERIC.match(key):
        return "numeric"
    if _LETTER_NUMBER.match(key) and not _is_electrode(key):
        return "foreign"
    return "tenfive" if is_scalp_label(key) else None
