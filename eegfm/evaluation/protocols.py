"""Evaluation protocols: leave-one-subject-out, subject-grouped k-fold and within-subject splits.

Every split carries a validation set for early stopping / model selection that is taken from
the *training* side only: whole training subjects for the cross-subject protocols, whole
training groups (recordings or time blocks) of the same subject for ``within``. Each split is
checked for leakage when it is built (:func:`check_split`) and the check raises, never warns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut, StratifiedGroupKFold

Protocol = Literal["loso", "kfold", "within", "split"]
PROTOCOLS: tuple[str, ...] = ("loso", "kfold", "within", "split")
CROSS_SUBJECT: tuple[str, ...] = ("loso", "kfold", "split")


class SplitHygieneError(ValueError):
    """A split leaks data between train / validation / test, or cannot be built honestly."""


@dataclass(frozen=True, eq=False)
class Split:
    """One train / validation / test partition of the windows (indices into the input arrays)."""

    fold: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    test_subjects: list
    protocol: str = "loso"
    seed: int = 0
    val_subjects: list = field(default_factory=list)
    test_groups: list = field(default_factory=list)
    val_groups: list = field(default_factory=list)
    splitter: str = ""

    def __post_init__(self) -> None:
        for part in ("train", "val", "test"):
            idx = np.asarray(getattr(self, part))
            if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
                raise ValueError(f"Split.{part} must be a 1-D array of integer indices, got "
                                 f"shape {idx.shape} dtype {idx.dtype}")
            object.__setattr__(self, part, idx.astype(np.int64))

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description (no index arrays) for ``results.json``."""
        return {
            "fold": self.fold,
            "protocol": self.protocol,
            "seed": self.seed,
            "splitter": self.splitter,
            "test_subjects": list(self.test_subjects),
            "val_subjects": list(self.val_subjects),
            "test_groups": list(self.test_groups),
            "val_groups": list(self.val_groups),
            "n_train": len(self.train),
            "n_val": len(self.val),
            "n_test": len(self.test),
        }


def _py(value: Any) -> Any:
    """Numpy scalar -> plain Python value, so subject ids serialise to JSON."""
    return value.item() if isinstance(value, np.generic) else value


def _as_index(values: np.ndarray) -> np.ndarray:
    return np.sort(np.asarray(values, dtype=np.int64))


def _n_held_out(spec: float, n_available: int, what: str) -> int:
    """Turn an int count or a float fraction into a number of held-out units."""
    if isinstance(spec, bool) or not isinstance(spec, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what} must be an int count or a float fraction in (0, 1), got {spec!r}")
    if isinstance(spec, (float, np.floating)):
        if not 0.0 < spec < 1.0:
            raise ValueError(f"{what} as a fraction must lie in (0, 1), got {spec}")
        return max(1, round(spec * n_available))
    if spec < 0:
        raise ValueError(f"{what} must be >= 0, got {spec}")
    return int(spec)


def _pick_validation(units: np.ndarray, unit_of: np.ndarray, y: np.ndarray, n_val: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Choose ``n_val`` of ``units`` (``unit_of``/``y`` describe the training windows only).

    Whole units (subjects or groups) are taken, covering as many classes as possible.

    Why: with one label per subject (clinical normal/abnormal), a purely random pick can leave
    the validation set with one class, which makes model selection on it meaningless.
    """
    order = units[rng.permutation(len(units))]
    classes_of = {u: set(np.unique(y[unit_of == u]).tolist()) for u in order}
    chosen: list = []
    covered: set = set()
    for cls in np.unique(y).tolist():
        if len(chosen) >= n_val or cls in covered:
            continue
        for u in order:
            if u not in chosen and cls in classes_of[u]:
                chosen.append(u)
                covered |= classes_of[u]
                break
    for u in order:
        if len(chosen) >= n_val:
            break
        if u not in chosen:
            chosen.append(u)
    return np.asarray(chosen, dtype=units.dtype)


def check_split(split: Split, subjects: np.ndarray, groups: np.ndarray | None = None) -> None:
    """Raise :class:`SplitHygieneError` if ``split`` leaks data between its parts."""
    subjects = np.asarray(subjects)
    n = len(subjects)
    parts = {"train": split.train, "val": split.val, "test": split.test}
    where = f"{split.protocol} fold {split.fold}"
    for name, idx in parts.items():
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= n)):
            raise SplitHygieneError(f"{where}: {name} indices out of range [0, {n})")
        if np.unique(idx).size != idx.size:
            raise SplitHygieneError(f"{where}: {name} indices contain duplicates")
    if split.train.size == 0 or split.test.size == 0:
        raise SplitHygieneError(f"{where}: empty train or test set")
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = np.intersect1d(parts[a], parts[b])
        if shared.size:
            raise SplitHygieneError(f"{where}: {shared.size} windows are in both {a} and {b}")
    test_subj = set(np.unique(subjects[split.test]).tolist())
    if test_subj != set(split.test_subjects):
        raise SplitHygieneError(
            f"{where}: test windows belong to subjects {sorted(test_subj)}, "
            f"but the split names {split.test_subjects}"
        )
    if split.protocol in CROSS_SUBJECT:
        train_subj = set(np.unique(subjects[split.train]).tolist())
        val_subj = set(np.unique(subjects[split.val]).tolist())
        for name, seen in (("train", train_subj), ("val", val_subj)):
            if seen & test_subj:
                raise SplitHygieneError(
                    f"{where}: test subject(s) {sorted(seen & test_subj)} also appear in {name}"
                )
        if train_subj & val_subj:
            raise SplitHygieneError(
                f"{where}: subject(s) {sorted(train_subj & val_subj)} are split across train "
                "and val; validation must hold out whole training subjects"
            )
        return
    # within-subject: one subject, and no group (recording / time block) straddles two parts
    all_subj = set(np.unique(subjects[np.concatenate(list(parts.values()))]).tolist())
    if all_subj != test_subj or len(test_subj) != 1:
        raise SplitHygieneError(f"{where}: within-subject split mixes subjects {sorted(all_subj)}")
    if groups is None:
        raise SplitHygieneError(f"{where}: within-subject check needs the groups array")
    groups = np.asarray(groups)
    seen = {name: set(np.unique(groups[idx]).tolist()) for name, idx in parts.items()}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        if seen[a] & seen[b]:
            raise SplitHygieneError(
                f"{where}: group(s) {sorted(seen[a] & seen[b])[:5]} straddle {a} and {b}"
            )


def _group_folds(y: np.ndarray, unit_of: np.ndarray, n_folds: int,
                 seed: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """Grouped k-fold, stratified when every class spans at least ``n_folds`` units."""
    classes = np.unique(y)
    units_per_class = [np.unique(unit_of[y == c]).size for c in classes]
    if classes.size >= 2 and min(units_per_class) >= n_folds:
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        name = f"StratifiedGroupKFold(n_splits={n_folds}, shuffle=True, random_state={seed})"
    else:
        splitter = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        name = f"GroupKFold(n_splits={n_folds}, shuffle=True, random_state={seed})"
    folds = list(splitter.split(np.zeros((len(y), 1)), y, groups=unit_of))
    return folds, name


def _check_trainable(split: Split, y: np.ndarray) -> None:
    """A training set with a single class cannot train a classifier: say why and what to do."""
    classes = np.unique(y[split.train])
    if classes.size < 2:
        hint = (
            "use groups that mix classes, e.g. contiguous time blocks within each recording "
            "(eegfm.evaluation.time_blocks)"
            if split.protocol == "within"
            else "check the labels: the training subjects hold a single class"
        )
        raise SplitHygieneError(
            f"{split.protocol} fold {split.fold} (test {split.test_subjects}): training windows "
            f"hold only class {classes.tolist()}; {hint}"
        )


def _validate_inputs(protocol: str, subjects: Sequence, y: Sequence,
                     groups: Sequence | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    subjects = np.asarray(subjects)
    y = np.asarray(y)
    if subjects.ndim != 1 or y.ndim != 1 or len(subjects) != len(y):
        raise ValueError(
            f"subjects and y must be 1-D arrays of equal length, got shapes "
            f"{subjects.shape} and {y.shape}"
        )
    if len(y) == 0:
        raise ValueError("no windows to split (subjects and y are empty)")
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != subjects.shape:
            raise ValueError(f"groups must have shape {subjects.shape}, got {groups.shape}")
    if protocol == "within" and groups is None:
        raise ValueError(
            "protocol 'within' needs groups= (one id per window: recording or contiguous time "
            "block, e.g. eegfm.evaluation.time_blocks(recordings, starts)) so that temporally "
            "adjacent windows never straddle train and test"
        )
    return subjects, y, groups


def make_splits(protocol: Protocol, subjects: Sequence, y: Sequence, *,
                groups: Sequence | None = None, n_folds: int = 5,
                n_val_subjects: float = 0.2, n_val_groups: float = 0.2,
                seed: int = 0) -> list[Split]:
    """Build the train / validation / test splits of an evaluation protocol.

    Parameters
    ----------
    protocol : ``'loso'`` (LeaveOneGroupOut over subjects), ``'kfold'`` (subject-grouped,
        stratified when labels allow) or ``'within'`` (per subject, grouped k-fold over ``groups``).
    subjects, y : (N,) subject id and class label of every window.
    groups : (N,) recording or time-block id per window; required for ``'within'``, ignored
        otherwise. Ids are interpreted within each subject.
    n_folds : folds for ``'kfold'`` and (at most) per subject for ``'within'``.
    n_val_subjects : validation subjects taken from each fold's training subjects (int count,
        or float fraction of them, at least 1); 0 gives an empty validation set.
    n_val_groups : same for ``'within'``, counted in training groups of the subject.
    seed : seeds the k-fold shuffle and the validation pick; recorded in every Split.
    """
    subjects, y, groups = _validate_inputs(protocol, subjects, y, groups)
    if protocol == "within":
        splits = _within_splits(subjects, y, groups, n_folds, n_val_groups, seed)
    else:
        splits = _cross_subject_splits(protocol, subjects, y, n_folds, n_val_subjects, seed)
    for split in splits:
        check_split(split, subjects, groups)
        _check_trainable(split, y)
    return splits


def _cross_subject_splits(protocol: str, subjects: np.ndarray, y: np.ndarray, n_folds: int,
                          n_val_subjects: float, seed: int) -> list[Split]:
    n_subjects = np.unique(subjects).size
    if protocol == "loso":
        if n_subjects < 2:
            raise ValueError(f"'loso' needs at least 2 subjects, got {n_subjects}")
        folds = list(LeaveOneGroupOut().split(subjects, y, groups=subjects))
        splitter = "LeaveOneGroupOut()"
    else:
        if not 2 <= n_folds <= n_subjects:
            raise ValueError(
                f"'kfold' needs 2 <= n_folds <= number of subjects ({n_subjects}), got {n_folds}"
            )
        folds, splitter = _group_folds(y, subjects, n_folds, seed)
    splits = []
    for fold, (train_val, test) in enumerate(folds):
        train_subj = np.unique(subjects[train_val])
        n_val = _n_held_out(n_val_subjects, train_subj.size, "n_val_subjects")
        if n_val >= train_subj.size:
            raise ValueError(
                f"{protocol} fold {fold}: n_val_subjects={n_val_subjects} leaves no training "
                f"subject out of {train_subj.size}; lower it"
            )
        rng = np.random.default_rng([seed, fold])
        val_subj = _pick_validation(train_subj, subjects[train_val], y[train_val], n_val, rng)
        in_val = np.isin(subjects[train_val], val_subj)
        splits.append(Split(
            fold=fold, train=_as_index(train_val[~in_val]), val=_as_index(train_val[in_val]),
            test=_as_index(test), test_subjects=[_py(s) for s in np.unique(subjects[test])],
            protocol=protocol, seed=seed, val_subjects=sorted(_py(s) for s in val_subj),
            splitter=splitter,
        ))
    return splits


def _within_splits(subjects: np.ndarray, y: np.ndarray, groups: np.ndarray, n_folds: int,
                   n_val_groups: float, seed: int) -> list[Split]:
    splits: list[Split] = []
    for subject in np.unique(subjects):
        own = np.flatnonzero(subjects == subject)
        own_groups = groups[own]
        n_groups = np.unique(own_groups).size
        if n_groups < 2:
            raise ValueError(
                f"within-subject: subject {_py(subject)!r} has {n_groups} group(s); at least 2 "
                "are needed (split its recordings into time blocks with time_blocks)"
            )
        k = min(n_folds, n_groups)
        folds, splitter = _group_folds(y[own], own_groups, k, seed)
        for train_val_local, test_local in folds:
            fold = len(splits)
            train_val, test = own[train_val_local], own[test_local]
            train_groups = np.unique(groups[train_val])
            n_val = _n_held_out(n_val_groups, train_groups.size, "n_val_groups")
            if n_val >= train_groups.size:
                raise ValueError(
                    f"within-subject: subject {_py(subject)!r} fold {fold} has "
                    f"{train_groups.size} training group(s); n_val_groups={n_val_groups} leaves "
                    "none for training (use more time blocks or n_val_groups=0)"
                )
            rng = np.random.default_rng([seed, fold])
            val_groups = _pick_validation(
                train_groups, groups[train_val], y[train_val], n_val, rng
            )
            in_val = np.isin(groups[train_val], val_groups)
            splits.append(Split(
                fold=fold, train=_as_index(train_val[~in_val]), val=_as_index(train_val[in_val]),
                test=_as_index(test), test_subjects=[_py(subject)], protocol="within",
                seed=seed, test_groups=sorted(_py(g) for g in np.unique(groups[test])),
                val_groups=sorted(_py(g) for g in val_groups), splitter=splitter,
            ))
    return splits


def fixed_split(subjects: Sequence, y: Sequence, train: Sequence, val: Sequence,
                test: Sequence, seed: int = 0) -> Split:
    """The one split of explicit train / validation / test subject lists (a published split).

    Raises :class:`SplitHygieneError` when a subject is in two lists or in none of the data;
    subjects of the data in no list are left out of every part.
    """
    subjects = np.asarray(subjects).astype(str)
    y = np.asarray(y)
    parts = {name: [str(s) for s in ids] for name, ids in
             (("train", train), ("val", val), ("test", test))}
    known = set(subjects.tolist())
    for name, ids in parts.items():
        missing = sorted(set(ids) - known)
        if missing:
            raise SplitHygieneError(f"split.{name}: subject(s) {missing} are not in the data "
                                    f"(its subjects: {sorted(known)[:12]}"
                                    f"{' ...' if len(known) > 12 else ''})")
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        both = sorted(set(parts[a]) & set(parts[b]))
        if both:
            raise SplitHygieneError(f"split: subject(s) {both} are in both {a} and {b}")
    rows = {name: np.flatnonzero(np.isin(subjects, ids)) for name, ids in parts.items()}
    split = Split(fold=0, train=rows["train"], val=rows["val"], test=rows["test"],
                  test_subjects=sorted(set(parts["test"])), protocol="split", seed=seed,
                  val_subjects=sorted(set(parts["val"])), splitter="fixed subject lists")
    check_split(split, subjects)
    _check_trainable(split, y)
    return split


def time_blocks(recordings: Sequence, starts: Sequence, n_blocks: int = 5) -> np.ndarray:
    """Group id per window: each recording cut into ``n_blocks`` contiguous runs of windows.

    ``starts`` orders the windows in time within a recording (sample or second of onset).
    Used as ``groups`` for ``'within'`` so that test windows form whole stretches of time.
    """
    recordings = np.asarray(recordings)
    starts = np.asarray(starts)
    if recordings.shape != starts.shape or recordings.ndim != 1:
        raise ValueError(
            f"recordings and starts must be 1-D of equal length, got {recordings.shape} "
            f"and {starts.shape}"
        )
    if n_blocks < 1:
        raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")
    blocks = np.empty(len(recordings), dtype=object)
    for rec in np.unique(recordings):
        own = np.flatnonzero(recordings == rec)
        ordered = own[np.argsort(starts[own], kind="stable")]
        for b, chunk in enumerate(np.array_split(ordered, min(n_blocks, own.size))):
            blocks[chunk] = f"{_py(rec)}#{b}"
    return blocks.astype(str)
