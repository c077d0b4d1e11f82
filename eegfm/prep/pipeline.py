"""The per-recording pipeline: pick EEG -> locate -> clean (eegfm.prep.stream) -> events -> write.

`process_raw` returns the cleaned recording in memory; `write_raw` streams it into a shard
writer block by block, so a recording of any size needs only the filters' working set plus one
float32 copy of the output (in a scratch file when `scratch_dir` is given).
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from eegfm.montage import montage_id
from eegfm.prep import steps
from eegfm.prep.config import PrepConfig, PrepError
from eegfm.prep.sources import montage_for
from eegfm.prep.stream import CleaningPlan, clean
from eegfm.shards import Recording, ShardWriter, empty_events, events_frame


@dataclass
class PreparedRecording:
    """A recording after picking and locating, with its cleaning plan and events."""

    recording_id: str
    raw: object  # mne.io.BaseRaw, read lazily
    picks: list[int]  # raw channel indices of the located EEG channels, in storage order
    ch_names: list[str]  # canonical labels (stored)
    coords: np.ndarray  # (C, 3) metres
    ref_coords: np.ndarray  # (C, 3), NaN for referential channels
    file_bads: np.ndarray  # (C,) bool, channels the file itself marks bad
    plan: CleaningPlan
    events: pd.DataFrame
    attrs: dict
    report: dict


def pick_eeg(raw) -> tuple[list[int], list[int]]:
    """Indices of the EEG channels and of the stim (trigger) channels."""
    types = raw.get_channel_types()
    return (
        [i for i, t in enumerate(types) if t == "eeg"],
        [i for i, t in enumerate(types) if t == "stim"],
    )


FILE_LAYOUT = "file_layout"  # montage value: trust the reader's own channel layout (opt-in)


def file_layout_montage(raw, source: str):
    """The reader's own channel positions scaled to a head, for `montages: ... file_layout`.

    Some readers hold only a display layout (Neuroscan CNT: 2-D positions projected on a unit
    sphere), which `locate_channels` rightly ignores; a user who accepts it as approximate
    geometry opts in per file with this montage value.
    """
    import mne

    from eegfm.montage.user import HEAD_RADIUS_M

    montage = raw.get_montage()
    positions = {} if montage is None else montage.get_positions()["ch_pos"]
    positions = {name: pos for name, pos in positions.items() if np.isfinite(pos).all()}
    if not positions:
        raise PrepError(
            f"{source}: montage '{FILE_LAYOUT}' is configured but the file holds "
            "no channel positions"
        )
    radius = float(np.median(np.linalg.norm(np.array(list(positions.values())), axis=1)))
    scale = HEAD_RADIUS_M / radius
    return mne.channels.make_dig_montage(
        {n: p * scale for n, p in positions.items()}, coord_frame="head"
    )


def locate(raw, eeg_picks: list[int], montage=None, source: str = ""):
    """`eegfm.montage.locate_channels` on the EEG channels of a raw."""
    import mne

    from eegfm.montage import locate_channels

    if isinstance(montage, str) and montage == FILE_LAYOUT:
        montage = file_layout_montage(raw, source)
    try:
        return locate_channels(mne.pick_info(raw.info, eeg_picks), montage)
    except (OSError, ValueError, TypeError) as error:
        raise PrepError(
            f"{source}: the configured montage {montage!r} cannot be used "
            f"({error}); fix the `montages` entry of the prep config"
        ) from error


def acquisition_gaps(raw, picks: list[int], block: int = 1 << 18) -> list[tuple[int, int]]:
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
    match = re.search(r"(-?\d+)\s*$", label)
    return int(match.group(1)) if match else -1


def annotation_events(raw, config: PrepConfig, n_out: int, event_id: dict[str, int]):
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


def stim_events(raw, stim_picks: list[int], config: PrepConfig, block: int = 1 << 20):
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


def prepare(
    raw,
    config: PrepConfig,
    *,
    recording_id: str,
    attrs: dict,
    montage=None,
    event_id: dict[str, int] | None = None,
) -> PreparedRecording:
    """Pick and locate the EEG channels, plan the cleaning and collect the events.

    `montage` (a file, an MNE name, a DigMontage or 'file_layout') defaults to the config's
    `montages` rule matching `attrs['source']`.
    """
    source = attrs.get("source", recording_id)
    eeg, stim = pick_eeg(raw)
    if not eeg:
        types = dict(Counter(raw.get_channel_types()))
        raise PrepError(f"{source}: no channel is typed EEG (channel types: {types})")
    if raw.n_times < 2:
        raise PrepError(f"{source}: the recording holds {raw.n_times} sample(s)")
    if montage is None:
        montage = montage_for(str(source), config)
    localization = locate(raw, eeg, montage, source)
    kept = [
        (pick, ch)
        for pick, ch in zip(eeg, localization.channels, strict=True)
        if ch.method not in ("unresolved", "non_scalp")
    ]
    loc_report = localization.report()
    if len(kept) < config.min_channels:
        unresolved = loc_report["unresolved"]
        listed = ", ".join(unresolved[:8]) + (", ..." if len(unresolved) > 8 else "")
        raise PrepError(
            f"{source}: {len(kept)} of {len(eeg)} EEG channels could be located "
            f"(min_channels={config.min_channels}); unresolved: {listed or 'none'}. Name the "
            "electrode positions in the prep config: montages: [{match: '<file glob>', "
            "montage: <electrodes.tsv | .elc | .sfp | ... | MNE montage name>}]"
        )
    picks = [pick for pick, _ in kept]
    sfreq_in = float(raw.info["sfreq"])
    line_freq = raw.info.get("line_freq") or config.line_freq_hz
    plan = CleaningPlan.build(
        raw.n_times,
        sfreq_in,
        len(picks),
        config,
        line_freq=line_freq,
        gaps=acquisition_gaps(raw, picks),
    )
    events = annotation_events(raw, config, plan.n_out, event_id or {})
    use_stim = config.stim_events == "always" or (config.stim_events == "auto" and events.empty)
    if stim and use_stim:
        events = pd.concat([events, stim_events(raw, stim, config)], ignore_index=True)
        events = events.sort_values(["onset", "label"], kind="stable", ignore_index=True)
    bads = set(raw.info["bads"])
    highpass = max(config.highpass_hz or 0.0, float(raw.info["highpass"] or 0.0))
    lowpass = min(
        config.lowpass_hz or config.sfreq / 2, float(raw.info["lowpass"] or np.inf), sfreq_in / 2
    )
    full_attrs = {
        **attrs,
        "orig_sfreq": sfreq_in,
        "orig_n_samples": int(raw.n_times),
        "montage_id": montage_id(
            [ch.label for _, ch in kept], np.array([ch.coords for _, ch in kept])
        ),
        "reference": "average" if config.reference == "average" else "original",
        "highpass": highpass,
        "lowpass": lowpass,
        "line_freq": float(line_freq) if line_freq else None,
        "notch_freqs": steps.notch_freqs(config, line_freq, config.sfreq),
        "source_ch_names": [ch.name for _, ch in kept],
        "coord_methods": [ch.method for _, ch in kept],
        "localization": loc_report,
    }
    report = {
        "recording_id": recording_id,
        "source": source,
        "n_eeg": len(eeg),
        "n_located": len(kept),
        "localization": loc_report,
    }
    return PreparedRecording(
        recording_id=recording_id,
        raw=raw,
        picks=picks,
        ch_names=[ch.label for _, ch in kept],
        coords=np.array([ch.coords for _, ch in kept], dtype=np.float32),
        ref_coords=np.array([ch.ref_coords for _, ch in kept], dtype=np.float32),
        file_bads=np.array([ch.name in bads for _, ch in kept]),
        plan=plan,
        events=events,
        attrs=full_attrs,
        report=report,
    )


def _clean_into(
    prepared: PreparedRecording,
    config: PrepConfig,
    buffer: np.ndarray,
    sink: Callable[[int, np.ndarray], None],
) -> None:
    raw, picks = prepared.raw, prepared.picks
    positions = iter(m0 for m0, _ in prepared.plan.blocks())
    flags = clean(
        lambda a, b: raw.get_data(picks=picks, start=a, stop=b),
        prepared.plan,
        config,
        [raw.ch_names[i] for i in picks],
        prepared.attrs.get("source", prepared.recording_id),
        buffer=buffer,
        sink=lambda block: sink(next(positions), block),
        file_bads=prepared.file_bads,
    )
    names = np.array(prepared.ch_names)
    bad = {
        "bad_channels": names[flags["bad"]].tolist(),
        "flat_channels": names[flags["flat"]].tolist(),
        "noisy_channels": names[flags["noisy"]].tolist(),
    }
    prepared.attrs.update(bad)
    prepared.report.update(bad, n_samples=prepared.plan.n_out, n_events=len(prepared.events))


def process_raw(
    raw,
    config: PrepConfig,
    *,
    recording_id: str,
    attrs: dict,
    montage=None,
    event_id: dict[str, int] | None = None,
) -> tuple[Recording, dict]:
    """Run the whole pipeline on one raw, in memory; return the recording and its report."""
    prepared = prepare(
        raw, config, recording_id=recording_id, attrs=attrs, montage=montage, event_id=event_id
    )
    data = np.zeros((len(prepared.picks), prepared.plan.n_out), dtype=np.float32)

    def store(m0: int, block: np.ndarray) -> None:
        data[:, m0 : m0 + block.shape[1]] = block

    _clean_into(prepared, config, data, store)
    recording = Recording(
        recording_id,
        data,
        prepared.coords,
        prepared.ref_coords,
        prepared.ch_names,
        prepared.events,
        prepared.attrs,
    )
    return recording, prepared.report


def write_raw(
    writer: ShardWriter,
    raw,
    config: PrepConfig,
    *,
    recording_id: str,
    attrs: dict,
    montage=None,
    event_id: dict[str, int] | None = None,
    scratch_dir: Path | None = None,
) -> dict:
    """Run the pipeline on one raw and stream the result into `writer`; return the report."""
    prepared = prepare(
        raw, config, recording_id=recording_id, attrs=attrs, montage=montage, event_id=event_id
    )
    shape = (len(prepared.picks), prepared.plan.n_out)
    stream = writer.open_recording(
        recording_id,
        ch_names=prepared.ch_names,
        coords=prepared.coords,
        ref_coords=prepared.ref_coords,
        n_samples=shape[1],
    )
    # The band-passed signal waits between the two passes in RAM when it is small, else in a
    # scratch file (a long dense recording then needs no more memory than a short one).
    in_memory = scratch_dir is None or 4 * shape[0] * shape[1] <= config.chunk_mb * 1e6
    scratch = (
        contextlib.nullcontext() if in_memory else tempfile.TemporaryDirectory(dir=scratch_dir)
    )
    with scratch as folder:
        buffer = (
            np.zeros(shape, np.float32)
            if in_memory
            else np.lib.format.open_memmap(
                Path(folder) / "buffer.npy", mode="w+", dtype=np.float32, shape=shape
            )
        )
        try:
            _clean_into(prepared, config, buffer, lambda _, block: stream.write(block))
            stream.finish(prepared.events, prepared.attrs)
        except BaseException:
            stream.abort()
            raise
        finally:
            del buffer
    return prepared.report
