"""The per-recording pipeline: pick EEG -> locate -> clean (eegfm.prep.stream) -> events -> write.

`process_raw` returns the cleaned recording in memory; `write_raw` streams it into a shard
writer block by block, so a recording of any size needs only the filters' working set plus one
float32 copy of the output (in a scratch file under `scratch_dir` when larger than `chunk_mb`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from eegfm.montage import Localization, locate_channels, montage_id
from eegfm.prep import steps
from eegfm.prep.config import PrepConfig, PrepError
from eegfm.prep.events import acquisition_gaps, annotation_events, stim_events
from eegfm.prep.readers import montage_for
from eegfm.prep.stream import CleaningPlan, clean, short_list
from eegfm.shards import Recording, ShardWriter

if TYPE_CHECKING:
    import mne

    # a montage file, an MNE montage name, 'file_layout', a DigMontage, or None (the config's)
    Montage = str | os.PathLike | mne.channels.DigMontage | None


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


def pick_eeg(raw: mne.io.BaseRaw) -> tuple[list[int], list[int]]:
    """Indices of the EEG channels and of the stim (trigger) channels."""
    types = raw.get_channel_types()
    return (
        [i for i, t in enumerate(types) if t == "eeg"],
        [i for i, t in enumerate(types) if t == "stim"],
    )


FILE_LAYOUT = "file_layout"  # montage value: place the header's 2-D display layout (opt-in)


_LOCATIONS: dict[tuple, Localization] = {}


def _location_key(info: mne.Info, picks: list[int], montage: Montage) -> tuple | None:
    """What `locate_channels` reads: names, kinds, positions and frames, and the montage."""
    if montage is not None and not isinstance(montage, str | os.PathLike):
        return None  # a DigMontage object: not cached
    if montage is not None and Path(montage).is_file():
        stat = Path(montage).stat()  # an edited montage file is read again
        montage = (str(montage), stat.st_mtime_ns, stat.st_size)
    channels = tuple(
        (ch["ch_name"], int(ch["kind"]), int(ch["coord_frame"]), ch["loc"][:6].tobytes())
        for ch in (info["chs"][i] for i in picks)
    )
    return channels, montage


def locate(
    raw: mne.io.BaseRaw, eeg_picks: list[int], montage: Montage = None, source: str = ""
) -> Localization:
    """`eegfm.montage.locate_channels` on the EEG channels of a raw.

    Recordings of one cap share their result (kept per process for the last 64 caps): locating
    costs more than cleaning a minute of EEG.
    """
    key = _location_key(raw.info, eeg_picks, montage)
    if key is not None and key in _LOCATIONS:
        return _LOCATIONS[key]
    localization = _locate(raw, eeg_picks, montage, source)
    if key is not None:
        if len(_LOCATIONS) >= 64:
            _LOCATIONS.clear()
        _LOCATIONS[key] = localization
    return localization


def _locate(raw: mne.io.BaseRaw, eeg_picks: list[int], montage: Montage, source: str):
    import mne


    # 'file_layout' accepts a header's 2-D display layout (Neuroscan CNT), which the montage
    # package places on the template head only when asked
    header_layout = isinstance(montage, str) and montage == FILE_LAYOUT
    if header_layout:
        montage = None
    try:
        return locate_channels(
            mne.pick_info(raw.info, eeg_picks), montage, header_layout=header_layout
        )
    except (OSError, ValueError, TypeError) as error:
        raise PrepError(
            f"{source}: the configured montage {montage!r} cannot be used "
            f"({error}); fix the `montages` entry of the prep config"
        ) from error


def prepare(
    raw: mne.io.BaseRaw,
    config: PrepConfig,
    *,
    recording_id: str,
    attrs: dict,
    montage: Montage = None,
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
        raise PrepError(
            _too_few_located(source, len(eeg), [ch.name for _, ch in kept], loc_report, config)
        )
    _require_duration(raw, config, source)
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


MIN_DURATION_S = 1.0  # one patch of the models (patch_len 200 at 200 Hz)


def _require_duration(raw: mne.io.BaseRaw, config: PrepConfig, source: str) -> None:
    """Raise PrepError for a recording shorter than `MIN_DURATION_S` at the output rate.

    Shorter, it cannot fill one patch of a model, and the filters' output is mostly the mirrored
    padding of its ends (the 0.5 Hz high-pass FIR spans 6.6 s), not the recording.
    """
    sfreq_in = float(raw.info["sfreq"])
    n_out = steps.resampled_length(raw.n_times, *steps.resample_ratio(sfreq_in, config.sfreq))
    minimum = int(np.ceil(MIN_DURATION_S * config.sfreq))
    if n_out < minimum:
        raise PrepError(
            f"{source}: the recording holds {raw.n_times} samples ({raw.n_times / sfreq_in:.3g} s "
            f"at {sfreq_in:g} Hz, {n_out} at the output's {config.sfreq:g} Hz), shorter than "
            f"the {MIN_DURATION_S:g} s minimum ({minimum} output samples)"
        )


def _too_few_located(
    source: str, n_eeg: int, located: list[str], loc_report: dict, config: PrepConfig
) -> str:
    """Why a recording has fewer than `min_channels` located channels, and what to do."""
    unresolved, non_scalp = loc_report["unresolved"], loc_report["non_scalp"]
    found = f" ({short_list(located)})" if located else ""
    needed = config.min_channels
    message = (
        f"{source}: {len(located)} of {n_eeg} EEG channels could be located{found}; "
        f"min_channels={needed} requires at least {needed}"
    )
    if non_scalp:
        message += f"; not scalp electrodes: {short_list(non_scalp)}"
    if unresolved:
        return (
            f"{message}; unresolved: {short_list(unresolved)}. Name the electrode positions in the "
            "prep config: montages: [{match: '<file glob>', montage: <electrodes.tsv | .elc | "
            ".sfp | ... | MNE montage name>}]"
        )
    return f"{message}. Lower min_channels in the prep config to keep recordings this small"


def _output_array(prepared: PreparedRecording) -> np.ndarray:
    """(C, n_out) float32 for the cleaned signal; zeroed only where pauses leave it unwritten."""
    shape = (len(prepared.picks), prepared.plan.n_out)
    pieces = prepared.plan.pieces
    covered = len(pieces) == 1 and pieces[0][2] == 0 and pieces[0][3] == shape[1]
    return np.empty(shape, np.float32) if covered else np.zeros(shape, np.float32)


class ScratchBuffer:
    """A (C, T) float32 array on disk, stored time-major, sliced as `buffer[:, a:b]`."""

    def __init__(self, fd: int, shape: tuple[int, int]):
        self.fd, self.shape = fd, shape
        os.ftruncate(fd, 4 * shape[0] * shape[1])  # sparse: never-written samples read as zeros

    def __setitem__(self, key: tuple[slice, slice], block: np.ndarray) -> None:
        start = key[1].start
        rows = np.ascontiguousarray(block.T, dtype="<f4")
        os.pwrite(self.fd, rows.tobytes(), 4 * self.shape[0] * start)

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        start, stop = key[1].start, min(key[1].stop, self.shape[1])
        size = 4 * self.shape[0] * (stop - start)
        raw = os.pread(self.fd, size, 4 * self.shape[0] * start)
        return np.frombuffer(raw, dtype="<f4").reshape(stop - start, self.shape[0]).T


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
    raw: mne.io.BaseRaw,
    config: PrepConfig,
    *,
    recording_id: str,
    attrs: dict,
    montage: Montage = None,
    event_id: dict[str, int] | None = None,
) -> tuple[Recording, dict]:
    """Run the whole pipeline on one raw, in memory; return the recording and its report."""
    prepared = prepare(
        raw, config, recording_id=recording_id, attrs=attrs, montage=montage, event_id=event_id
    )
    data = _output_array(prepared)

    def store(m0: int, block: np.ndarray) -> None:
        """Put one cleaned block in place."""
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
    raw: mne.io.BaseRaw,
    config: PrepConfig,
    *,
    recording_id: str,
    attrs: dict,
    montage: Montage = None,
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
    # scratch file read and written block by block (not memory-mapped, whose pages would count
    # as resident): a long dense recording then needs no more memory than a short one.
    in_memory = scratch_dir is None or 4 * shape[0] * shape[1] <= config.chunk_mb * 1e6
    with contextlib.ExitStack() as stack:
        if in_memory:
            buffer = _output_array(prepared)
        else:
            handle = stack.enter_context(tempfile.TemporaryFile(dir=scratch_dir))
            buffer = ScratchBuffer(handle.fileno(), shape)
        try:
            _clean_into(prepared, config, buffer, lambda _, block: stream.write(block))
            stream.finish(prepared.events, prepared.attrs)
        except BaseException:
            stream.abort()
            raise
    return prepared.report
