"""Split hygiene for every protocol, on synthetic tables and on eegmat's real recording layout."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from eegfm.evaluation import (
    Split,
    SplitHygieneError,
    check_split,
    make_splits,
    time_blocks,
)

WINDOW_S = 4


def _assert_hygiene(splits: list[Split], subjects: np.ndarray, y: np.ndarray,
                    groups: np.ndarray | None = None) -> None:
    """Independent re-check (not via check_split): no test data leaks into train/val."""
    assert splits
    tested = []
    for split in splits:
        train, val, test = split.train, split.val, split.test
        assert len(train) and len(test)
        assert not set(train) & set(val)
        assert not set(train) & set(test)
        assert not set(val) & set(test)
        test_subj = set(subjects[test].tolist())
        assert test_subj == set(split.test_subjects)
        if split.protocol in ("loso", "kfold"):
            assert not test_subj & set(subjects[train].tolist())
            assert not test_subj & set(subjects[val].tolist())
            # validation = whole training subjects, never windows shared with train
            assert not set(subjects[val].tolist()) & set(subjects[train].tolist())
            assert set(subjects[val].tolist()) == set(split.val_subjects)
        else:
            (subject,) = test_subj
            assert set(subjects[np.concatenate([train, val])].tolist()) <= {subject}
            assert not set(groups[test].tolist()) & set(groups[train].tolist())
            assert not set(groups[test].tolist()) & set(groups[val].tolist())
            assert not set(groups[val].tolist()) & set(groups[train].tolist())
        assert len(np.unique(y[train])) >= 2
        tested.append(test)
    # every window is tested exactly once over the folds
    all_tested = np.concatenate(tested)
    assert np.array_equal(np.sort(all_tested), np.arange(len(subjects)))


def _synthetic(kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(subjects, y, groups): 'eegmat' = 24 subjects rest/task, 'unbalanced' = ragged subjects."""
    rng = np.random.default_rng(7)
    subjects, y, groups = [], [], []
    n_subjects = 24 if kind == "eegmat" else 11
    for s in range(n_subjects):
        for label in (0, 1):
            n = (45 if label == 0 else 15) if kind == "eegmat" else int(rng.integers(10, 80))
            if kind == "unbalanced" and s in (3, 4) and label == 1:
                continue  # single-class subjects
            subjects += [f"sub-{s:02d}"] * n
            y += [label] * n
            groups += list(time_blocks([f"sub-{s:02d}_{label}"] * n, np.arange(n), 4))
    return np.array(subjects), np.array(y), np.array(groups)


@pytest.mark.parametrize("kind", ["eegmat", "unbalanced"])
@pytest.mark.parametrize("protocol", ["loso", "kfold", "within"])
def test_hygiene_synthetic(protocol: str, kind: str) -> None:
    subjects, y, groups = _synthetic(kind)
    if protocol == "within" and kind == "unbalanced":
        keep = ~np.isin(subjects, ["sub-03", "sub-04"])  # within needs both classes to train
        subjects, y, groups = subjects[keep], y[keep], groups[keep]
    splits = make_splits(protocol, subjects, y, groups=groups, seed=3)
    _assert_hygiene(splits, subjects, y, groups)
    n_subjects = len(np.unique(subjects))
    if protocol == "loso":
        assert len(splits) == n_subjects
        assert all(len(s.test_subjects) == 1 for s in splits)
    if protocol == "kfold":
        assert len(splits) == 5
    assert all(s.seed == 3 and s.protocol == protocol and s.splitter for s in splits)


def test_within_single_class_subject_raises_clearly() -> None:
    subjects, y, groups = _synthetic("unbalanced")
    with pytest.raises(SplitHygieneError, match="only class"):
        make_splits("within", subjects, y, groups=groups)


def test_validation_fraction_and_count() -> None:
    subjects, y, _ = _synthetic("eegmat")
    loso = make_splits("loso", subjects, y)
    assert all(len(s.val_subjects) == round(0.2 * 23) for s in loso)
    assert all(len(s.val_subjects) == 2 for s in make_splits("loso", subjects, y,
                                                             n_val_subjects=2))
    no_val = make_splits("kfold", subjects, y, n_val_subjects=0)
    assert all(s.val.size == 0 for s in no_val)
    with pytest.raises(ValueError, match="n_val_subjects"):
        make_splits("loso", subjects, y, n_val_subjects=23)
    with pytest.raises(ValueError, match="n_folds"):
        make_splits("kfold", subjects, y, n_folds=25)
    with pytest.raises(ValueError, match="protocol"):
        make_splits("leave-one-out", subjects, y)


def test_determinism_for_a_seed() -> None:
    subjects, y, groups = _synthetic("eegmat")
    for protocol in ("loso", "kfold", "within"):
        first = make_splits(protocol, subjects, y, groups=groups, seed=11)
        again = make_splits(protocol, subjects, y, groups=groups, seed=11)
        for a, b in zip(first, again, strict=True):
            for part in ("train", "val", "test"):
                assert np.array_equal(getattr(a, part), getattr(b, part))
        other = make_splits(protocol, subjects, y, groups=groups, seed=12)
        assert any(not np.array_equal(a.val, b.val) for a, b in zip(first, other, strict=True))


def test_within_requires_groups() -> None:
    subjects, y, _ = _synthetic("eegmat")
    with pytest.raises(ValueError, match="groups"):
        make_splits("within", subjects, y)


def test_check_split_catches_leaks() -> None:
    subjects = np.array(["a"] * 4 + ["b"] * 4 + ["c"] * 4)
    ok = Split(0, np.arange(4), np.arange(4, 8), np.arange(8, 12), ["c"])
    check_split(ok, subjects)
    leaks = [
        Split(0, np.arange(4), np.arange(4, 9), np.arange(8, 12), ["c"]),  # window in val+test
        Split(0, np.arange(0, 6), np.arange(6, 8), np.arange(8, 12), ["c"]),  # b in train+val
        Split(0, np.r_[0:4, 8], np.arange(4, 8), np.arange(9, 12), ["c"]),  # c in train
        Split(0, np.arange(4), np.arange(4, 8), np.arange(8, 12), ["b"]),  # wrong test subject
    ]
    for split in leaks:
        with pytest.raises(SplitHygieneError):
            check_split(split, subjects)
    groups = np.array(["g0", "g0", "g1", "g1"] * 3)
    within = Split(0, np.array([0, 1]), np.array([]), np.array([2, 3]), ["a"], protocol="within")
    check_split(within, subjects, groups)
    straddle = Split(0, np.array([0, 2]), np.array([]), np.array([1, 3]), ["a"],
                     protocol="within")
    with pytest.raises(SplitHygieneError, match="straddle"):
        check_split(straddle, subjects, groups)


def test_time_blocks_are_contiguous() -> None:
    recordings = np.array(["r1"] * 10 + ["r2"] * 7)
    starts = np.r_[np.arange(10)[::-1], np.arange(7)] * 800  # r1 listed out of order
    blocks = time_blocks(recordings, starts, n_blocks=3)
    for block in np.unique(blocks):
        own = np.sort(starts[blocks == block]) // 800
        assert np.array_equal(own, np.arange(own[0], own[0] + own.size))
    assert len(np.unique(blocks)) == 6


def _eegmat_windows(eegmat_dir: Path) -> dict[str, np.ndarray]:
    """4 s windows of the real eegmat files: durations from the EDF headers, labels from names."""
    quality = {}
    with (eegmat_dir / "subject-info.csv").open() as f:
        for row in csv.DictReader(f):
            quality[row["Subject"]] = int(row["Count quality"])
    table: dict[str, list] = {"subject": [], "task": [], "quality": [], "recording": [],
                              "start_s": []}
    for path in sorted(eegmat_dir.glob("Subject*_*.edf")):
        header = path.open("rb").read(256)
        duration_s = int(header[236:244]) * float(header[244:252])
        subject, run = path.stem.split("_")
        for start in range(0, int(duration_s) - WINDOW_S + 1, WINDOW_S):
            table["subject"].append(subject)
            table["task"].append(int(run == "2"))
            table["quality"].append(quality[subject])
            table["recording"].append(path.stem)
            table["start_s"].append(start)
    return {k: np.array(v) for k, v in table.items()}


@pytest.mark.parametrize("protocol", ["loso", "kfold", "within"])
def test_hygiene_on_eegmat_layout(eegmat_dir: Path, protocol: str) -> None:
    w = _eegmat_windows(eegmat_dir)
    assert len(np.unique(w["subject"])) == 24
    groups = time_blocks(w["recording"], w["start_s"], n_blocks=5)
    splits = make_splits(protocol, w["subject"], w["task"], groups=groups, seed=0)
    _assert_hygiene(splits, w["subject"], w["task"], groups)


def test_subject_level_labels_eegmat_count_quality(eegmat_dir: Path) -> None:
    """Good vs bad counters: one label per subject, so every LOSO test subject has one class."""
    w = _eegmat_windows(eegmat_dir)
    splits = make_splits("loso", w["subject"], w["quality"], n_val_subjects=4, seed=0)
    _assert_hygiene(splits, w["subject"], w["quality"])
    for split in splits:
        assert len(np.unique(w["quality"][split.test])) == 1
        # the validation pick covers both classes, so model selection is not one-class
        assert len(np.unique(w["quality"][split.val])) == 2
