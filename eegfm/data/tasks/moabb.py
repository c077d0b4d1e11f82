"""``moabb:NAME[:subjects]`` tasks: our prep pipeline into a cache, MOABB's events and interval.

The MOABB dataset is converted by :func:`eegfm.prep.run_prep` (so every channel carries its
coordinates, like any other shard), into a cache directory keyed by the dataset and the prep
config hash; a second run finds the recordings there and skips them. The events to cut and the
window come from MOABB: ``dataset.event_id`` and ``dataset.interval``, or a paradigm's
``used_events`` and ``tmin``/``tmax`` when ``task.moabb_paradigm`` names one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from eegfm.data.tasks.windows import TaskDataError
from eegfm.prep import config_hash, expand_sources, load_prep_config, run_prep


@dataclass(frozen=True)
class MoabbTask:
    """A MOABB dataset made ready for :func:`eegfm.data.tasks.build_task_set`."""

    shard_dir: Path
    dataset: str  # dataset name as stored in the shards' manifest
    subjects: list[str]  # subjects requested (as stored in the shards)
    event_id: dict[str, int]  # event label -> code, the events to cut
    tmin_s: float  # window relative to the event onset
    tmax_s: float


def default_cache_dir() -> Path:
    """``$EEGFM_CACHE`` or ``~/.cache/eegfm``: where converted MOABB datasets are kept."""
    return Path(os.environ.get("EEGFM_CACHE", Path.home() / ".cache" / "eegfm"))


def is_moabb(data: object) -> bool:
    """True for a ``moabb:NAME[:subjects]`` data spec."""
    return isinstance(data, str) and data.startswith("moabb:")


def prepare_moabb(spec: str, prep_config=None, *, cache_dir: str | Path | None = None,
                  paradigm: str | None = None, progress: bool = True) -> MoabbTask:
    """Convert ``moabb:NAME[:subjects]`` with our prep pipeline (cached) and read its events."""
    prep_config = prep_config if prep_config is not None else load_prep_config(None)
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[1]:
        raise TaskDataError(f"--data {spec!r}: expected moabb:NAME or moabb:NAME:SUBJECTS "
                            "(e.g. moabb:BNCI2014_001:1-3)")
    name = parts[1]
    items = expand_sources([spec], prep_config)
    subjects = [item.location.rsplit(":", 1)[1] for item in items]
    dataset = _dataset(name, prep_config)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "moabb"
    shard_dir = root / f"{name}-{config_hash(prep_config)}"
    summary = run_prep([spec], shard_dir, prep_config, progress=progress)
    if summary.failures and not (summary.converted or summary.skipped):
        reasons = "; ".join(f"{f.get('source')}: {f.get('reason')}" for f in summary.failures[:3])
        raise TaskDataError(f"{spec}: prep converted no recording ({reasons})")
    event_id, tmin_s, tmax_s = moabb_events(dataset, paradigm)
    return MoabbTask(shard_dir, prep_config.dataset or name, subjects, event_id, tmin_s, tmax_s)


def moabb_events(dataset, paradigm: str | None = None) -> tuple[dict[str, int], float, float]:
    """Events and window of a MOABB dataset (or of ``paradigm`` applied to it).

    As MOABB does: the window is ``interval[0] + tmin`` to ``interval[0] + tmax`` (or
    ``interval[1]`` when the paradigm sets no ``tmax``), relative to the event onset.
    """
    interval = [float(v) for v in dataset.interval]
    if paradigm is None:
        return dict(dataset.event_id), interval[0], interval[1]
    import moabb.paradigms

    cls = getattr(moabb.paradigms, paradigm, None)
    if cls is None:
        raise TaskDataError(f"task.moabb_paradigm: MOABB has no paradigm {paradigm!r} "
                            "(see moabb.paradigms, e.g. LeftRightImagery, MotorImagery, P300)")
    instance = cls()
    if not instance.is_valid(dataset):
        raise TaskDataError(f"task.moabb_paradigm: {paradigm} does not apply to "
                            f"{type(dataset).__name__} (its paradigm is {dataset.paradigm!r})")
    tmin = interval[0] + float(getattr(instance, "tmin", 0.0) or 0.0)
    tmax_p = getattr(instance, "tmax", None)
    tmax = interval[1] if tmax_p is None else interval[0] + float(tmax_p)
    return dict(instance.used_events(dataset)), tmin, tmax


def _dataset(name: str, prep_config):
    import moabb.datasets

    cls = getattr(moabb.datasets, name, None)
    if cls is None:
        raise TaskDataError(f"MOABB has no dataset {name!r}; see moabb.datasets for the names")
    return cls(**prep_config.moabb_options.get(name, {}))
