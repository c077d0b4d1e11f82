"""Shard recordings back out as MNE Raw: samples in volts, positions, events and bad channels."""

from __future__ import annotations

import os
from collections.abc import Sequence

import mne
import numpy as np

from eegfm.shards.reader import ShardReader

UV_TO_V = 1e-6  # shards store µV, MNE expects volts


def to_raw(shard_dir: os.PathLike | Sequence[os.PathLike] | ShardReader,
           recording_id: str) -> mne.io.RawArray:
    """One shard recording as an `mne.io.RawArray` with positions, events and bad channels.

    Samples are the stored ones in volts (µV × 1e-6), at the shard's rate. Each EEG channel
    gets its head-frame position (metres) as a montage and in ``info["chs"][i]["loc"][:3]``;
    a bipolar derivation's second electrode (``ref_coords``) goes to ``loc[3:6]``, where MNE and
    `eegfm.montage` look for it. Events become `mne.Annotations` (onset and duration in
    seconds, description = label), the manifest's ``bad_channels`` ``info["bads"]``, and the
    prep filters ``info["highpass"]``/``["lowpass"]``. A `ShardReader` may be passed in place
    of the directory, to read many recordings through one reader.
    """
    if isinstance(shard_dir, ShardReader):
        return _raw_of(shard_dir, recording_id)
    reader = ShardReader(shard_dir)
    try:
        return _raw_of(reader, recording_id)
    finally:
        reader.close()


def _raw_of(reader: ShardReader, recording_id: str) -> mne.io.RawArray:
    entry = reader.entry(recording_id)  # KeyError naming the directory and the recording
    recording = reader.read_recording(recording_id)
    attrs = reader.attrs(recording_id)
    events = reader.events(recording_id)
    info = mne.create_info(list(recording.ch_names), entry.sfreq, "eeg")
    volts = np.multiply(recording.data, UV_TO_V, dtype=np.float64)
    raw = mne.io.RawArray(volts, info, verbose="error")
    positions = dict(zip(recording.ch_names, recording.coords.astype(np.float64), strict=True))
    raw.set_montage(mne.channels.make_dig_montage(positions, coord_frame="head"))
    for ch, ref in zip(raw.info["chs"], recording.ref_coords, strict=True):
        if np.isfinite(ref).all():
            ch["loc"][3:6] = ref
    # MNE has no public setter for the filter edges (mne-bids sets them the same way); they
    # tell MNE, and a second `eegfm prep`, what the shard's samples were filtered with
    with raw.info._unlock():
        raw.info["highpass"] = float(attrs.get("highpass") or 0.0)
        raw.info["lowpass"] = float(attrs.get("lowpass") or entry.sfreq / 2)
    raw.info["line_freq"] = attrs.get("line_freq")
    raw.info["bads"] = [name for name in entry.bad_channels if name in raw.ch_names]
    raw.info["description"] = f"eegfm shard recording {recording_id} (dataset {entry.dataset})"
    if entry.subject is not None:
        raw.info["subject_info"] = {"his_id": str(entry.subject)}
    raw.set_annotations(
        mne.Annotations(
            onset=events["onset"].to_numpy() / entry.sfreq,
            duration=events["duration"].to_numpy() / entry.sfreq,
            description=events["label"].astype(str).tolist(),
        )
    )
    return raw
