"""Events and acquisition gaps of a raw: annotations and trigger channels, at the shard rate."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

from eegfm.prep.config import PrepConfig
from eegfm.shards import empty_events, events_frame

if TYPE_CHECKING:
    import mne
    import pandas as pd


def acquisition_gaps(
    raw: mne.io.BaseRaw, picks: list[int], block: int = 1 << 18
) -> list[tuple[int, int]]:
    """Input sample ranges with no data: acquisition pauses.

    MNE marks them BAD_ACQ_SKIP and fills them with zeros, but the annotation can be off by a few
    samples from the zero-filled stretch (EGI MFF), so when pauses are announced the all-zero
    stretches of the EEG channels are found too and both are treated as gaps.
    """
    annotations = raw.annotations
    skips = [i for i, d in enumerate(annotations.description) if d.upper() == "BAD_ACQ_SKIP"]
    if not skips:
        return []
    starts = raw.time_as_index(
        annotations.onset[skips], use_rounding=True, origin=annotations.orig_time
    )
    lengths = np.round(annotations.duration[skips] * raw.info["sfreq"]).astype(int)
    gaps = [(int(a), int(a + n)) for a, n in zip(starts, lengths, strict=True)]
    run_start = None
    for start in range(0, raw.n_times, block):
        zero = ~np.any(raw.get_data(picks=picks, start=start, stop=start + block), axis=0)
        flags = np.concatenate([[run_start is not None], zero])
        for index in np.flatnonzero(flags[1:] != flags[:-1]):
            if zero[index]:
                run_start = start + int(index)
            else:
                gaps.append((run_start, start + int(index)))
                run_start = None
    if run_start is not None:
        gaps.append((run_start, raw.n_times))
    min_gap = max(2, round(0.05 * raw.info["sfreq"]))  # ignore isolated zero samples
    return sorted(g for g in gaps if g[1] - g[0] >= min_gap)


def event_code(label: str, config: PrepConfig, event_id: dict[str, int]) -> int:
    """Integer code of an annotation: configured, dataset-given, trailing number, else -1."""
    if label in config.event_codes:
        return int(config.event_codes[label])
    if label in event_id:
        return int(event_id[label])
    match = re.search(r"(?<![\d.])(\d+)\s*$", label)  # 'Stimulus/S  1' -> 1; '+182.000' no
    return int(match.group(1)) if match else -1


def annotation_events(
    raw: mne.io.BaseRaw, config: PrepConfig, n_out: int, event_id: dict[str, int]
) -> pd.DataFrame:
    """Annotations as events at the shard rate (onset/duration in output samples)."""
    annotations = raw.annotations
    if not len(annotations):
        return empty_events()
    index = raw.time_as_index(annotations.onset, use_rounding=True, origin=annotations.orig_time)
    onset = np.round(index * config.sfreq / raw.info["sfreq"]).astype(np.int64)
    duration = np.round(annotations.duration * config.sfreq).astype(np.int64)
    keep = (onset >= 0) & (onset < n_out)
    labels = [str(d) for d in annotations.description[keep]]
    codes = [event_code(label, config, event_id) for label in labels]
    return events_frame(onset[keep], duration[keep], codes, labels)


def stim_events(
    raw: mne.io.BaseRaw, stim_picks: list[int], config: PrepConfig, block: int = 1 << 20
) -> pd.DataFrame:
    """Trigger-channel events (value changes to non-zero), read block by block."""
    names = [raw.ch_names[i] for i in stim_picks]
    ratio = config.sfreq / raw.info["sfreq"]
    rows: list[tuple[int, int, int, str]] = []
    previous = np.zeros(len(stim_picks))
    open_events: list[tuple[int, int] | None] = [None] * len(stim_picks)
    for start in range(0, raw.n_times, block):
        values = np.rint(raw.get_data(picks=stim_picks, start=start, stop=start + block))
        joined = np.concatenate([previous[:, None], values], axis=1)
        for row, position in zip(*np.nonzero(np.diff(joined, axis=1)), strict=True):
            sample = start + int(position)
            if open_events[row] is not None:
                onset, code = open_events[row]
                rows.append((onset, sample - onset, code, names[row]))
            value = int(values[row, position])
            open_events[row] = (sample, value) if value != 0 else None
        previous = values[:, -1]
    for row, event in enumerate(open_events):
        if event is not None:
            rows.append((event[0], raw.n_times - event[0], event[1], names[row]))
    rows.sort()
    labels = [str(code) if len(names) == 1 else name for _, _, code, name in rows]
    return events_frame(
        [round(r[0] * ratio) for r in rows],
        [round(r[1] * ratio) for r in rows],
        [r[2] for r in rows],
        labels,
    )
