"""Block-wise cleaning of one recording in bounded memory, equal to the whole-array steps.

Per output block [m0, m1) at the shard rate: read the input samples it depends on (with the
filters' margins, reflected at the ends of the recording's continuous pieces), convert to µV and
reject NaN/Inf, then resample (polyphase anti-aliasing) and apply one FIR holding the band-pass
and the line-noise notches, both as one product of spectra where that is faster
(`steps.ResampleFilter`). Resampling first is exact for a linear time-invariant chain whose
bands lie below the new Nyquist frequency, and filters 2.5-25x fewer samples. Pass 1 keeps the
band-passed signal (float32, in memory or a scratch file) and per-channel statistics; pass 2
flags flat/noisy channels and re-references to the average of the good ones while the result
is written out.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from eegfm.prep import steps
from eegfm.prep.config import PrepConfig, PrepError


@dataclass(frozen=True)
class CleaningPlan:
    """Filters and block layout for one recording (depends on its rate, length and width).

    `pieces` are the continuous stretches of the recording as (in_start, in_stop, out_start,
    out_stop); each is filtered on its own, so acquisition pauses (zero-filled by MNE and
    annotated BAD_ACQ_SKIP) stay zero instead of ringing through the filters.
    """

    n_in: int
    n_out: int
    filters: steps.ResampleFilter = field(compare=False, repr=False)  # ratio and both kernels
    block: int  # output samples per block
    block_limit: int  # most output samples a block may hold (chunk_mb)
    pieces: tuple[tuple[int, int, int, int], ...]
    level_samples: int  # input samples whose mean is subtracted from each piece

    @classmethod
    def build(
        cls,
        n_in: int,
        sfreq_in: float,
        n_channels: int,
        config: PrepConfig,
        line_freq: float | None = None,
        gaps: Sequence[tuple[int, int]] = (),
    ) -> CleaningPlan:
        """Design the filters, split at `gaps` (input sample ranges) and size the blocks."""
        filters = _filters(sfreq_in, config, line_freq)
        up, down = filters.up, filters.down
        hdf5_chunk = max(1, round(config.shard_chunk_s * config.sfreq))
        by_memory = int(config.chunk_mb * 1e6 / (8 * max(n_channels, 1)) * up / down)
        block = min(round(config.chunk_s * config.sfreq), by_memory)
        block = max(hdf5_chunk, block // hdf5_chunk * hdf5_chunk)  # whole HDF5 chunks per write
        limit = max(block, by_memory // hdf5_chunk * hdf5_chunk)
        n_out = steps.resampled_length(n_in, up, down)
        return cls(
            n_in=n_in,
            n_out=n_out,
            filters=filters,
            block=block,
            block_limit=limit,
            pieces=_pieces(n_in, n_out, up, down, gaps),
            level_samples=max(1, round(10 * sfreq_in)),
        )

    @property
    def up(self) -> int:
        """Resampling ratio numerator (output rate / input rate = up / down)."""
        return self.filters.up

    @property
    def down(self) -> int:
        """Resampling ratio denominator."""
        return self.filters.down

    def blocks(self) -> list[tuple[int, int]]:
        """Output sample ranges [m0, m1) covering the recording."""
        return self.spans(self.n_out)

    def spans(self, n: int) -> list[tuple[int, int]]:
        """Ranges [m0, m1) of `block` samples covering n samples; a short tail joins the last.

        A tail of at most a quarter block costs nearly as much as a whole one (the filters'
        margins are read and transformed with it), so it is merged while `block_limit` allows.
        """
        bounds = [*range(0, n, self.block), n]
        if (
            len(bounds) > 2
            and bounds[-1] - bounds[-2] <= self.block // 4
            and bounds[-1] - bounds[-3] <= self.block_limit
        ):
            del bounds[-2]
        return list(itertools.pairwise(bounds))


_FILTERS: dict[tuple, steps.ResampleFilter] = {}


def _filters(sfreq_in: float, config: PrepConfig, line_freq: float | None) -> steps.ResampleFilter:
    """The filters for this input rate, shared by the recordings of a process that need them.

    A folder of recordings from one device shares its rate and config, so the filters are
    designed, and the transforms `ResampleFilter` caches per block length computed, once.
    """
    key = (
        float(sfreq_in),
        line_freq,
        config.sfreq,
        config.highpass_hz,
        config.lowpass_hz,
        config.transition,
        config.notch_width_hz,
        config.line_freq_hz,
    )
    if key not in _FILTERS:
        if len(_FILTERS) >= 8:
            _FILTERS.clear()
        up, down = steps.resample_ratio(sfreq_in, config.sfreq)
        resample_kernel = steps.resample_kernel(up, down, sfreq_in, config.lowpass_hz)
        # volts -> µV folded into the (linear) FIR: one pass over the input fewer
        fir_kernel = steps.filter_kernel(config.sfreq, config, line_freq=line_freq)
        fir_kernel = fir_kernel * steps.VOLTS_TO_UV
        for kernel in (resample_kernel, fir_kernel):
            kernel.flags.writeable = False  # shared by every plan with this key
        _FILTERS[key] = steps.ResampleFilter(up, down, resample_kernel, fir_kernel)
    return _FILTERS[key]


def _pieces(n_in: int, n_out: int, up: int, down: int, gaps: Sequence[tuple[int, int]]):
    starts, position = [], 0
    for gap_start, gap_stop in sorted((max(0, a), min(n_in, b)) for a, b in gaps):
        if gap_start > position:
            starts.append((position, gap_start))
        position = max(position, gap_stop)
    if position < n_in:
        starts.append((position, n_in))
    pieces = []
    for index, (a, b) in enumerate(starts):
        out_start = -(-a * up // down)
        limit = -(-starts[index + 1][0] * up // down) if index + 1 < len(starts) else n_out
        out_stop = min(out_start + steps.resampled_length(b - a, up, down), limit)
        if b - a >= 2 and out_stop > out_start:
            pieces.append((a, b, out_start, out_stop))
    return tuple(pieces)


def filtered_blocks(
    read: Callable[[int, int], np.ndarray], plan: CleaningPlan
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (m0, band-passed µV block) from `read(a, b)` -> input samples [a, b) in volts.

    Each piece is extended by reflecting its input samples at both ends, so the filters' margins
    around the first and last blocks are the mirrored recording (as MNE pads before filtering).
    """
    filters = plan.filters
    margin = (filters.taps - 1) // 2
    for in_start, in_stop, out_start, out_stop in plan.pieces:
        n_in, n_out = in_stop - in_start, out_stop - out_start
        n_level = min(n_in, plan.level_samples)
        level = None
        for m0, m1 in plan.spans(n_out):
            lo, hi = m0 - margin, m1 + margin
            k0, k1 = filters.input_span(lo, hi)
            a, b = max(0, k0), min(n_in, k1)
            segment = read(in_start + a, in_start + b)
            if level is None:
                # Per-channel level of the piece's first seconds, removed before filtering:
                # DC-coupled amplifiers sit at up to ±300 mV, which the high-pass would leak
                # (~1e-3) and ring on at the ends.
                first = segment if a == 0 and b >= n_level else read(in_start, in_start + n_level)
                level = first[:, :n_level].mean(axis=1, keepdims=True)
                del first
            # one copy: level removed, reflected margins, and the zeros the transforms pad with
            padded = np.empty((segment.shape[0], filters.padded_length(k1 - k0)))
            padded[:, k1 - k0 :] = 0.0
            with np.errstate(invalid="ignore"):  # Inf - Inf: `clean` names the channel
                np.subtract(segment, level, out=padded[:, a - k0 : b - k0])
            del segment  # freed before the transforms allocate (peak memory per block)
            steps.reflect_fill(padded, a - k0, b - k0, k1 - k0)
            filtered = filters.block(padded, k0, lo, hi)
            del padded  # not kept alive while the next block is read
            yield out_start + m0, filtered


def _raise_non_finite(
    read: Callable[[int, int], np.ndarray], plan: CleaningPlan, ch_names: Sequence[str], source: str
) -> None:
    """Find the input's NaN/Inf (a filtered block held some) and raise a PrepError naming it."""
    step = plan.block * plan.down // plan.up + 1  # input samples of about one block
    for start in range(0, plan.n_in, step):
        steps.check_finite(read(start, min(plan.n_in, start + step)), ch_names, source, start)
    raise PrepError(f"{source}: filtering produced NaN/Inf from finite input (overflow?)")


class RunningMoments:
    """Per-channel mean and variance accumulated block by block (Chan et al. merge)."""

    def __init__(self, n_channels: int):
        self.count = 0
        self.mean = np.zeros(n_channels)
        self.m2 = np.zeros(n_channels)

    def update(self, block: np.ndarray) -> None:
        """Add a (C, t) block."""
        n = block.shape[1]
        mean = block.mean(axis=1)
        centred = block - mean[:, None]
        m2 = np.einsum("ct,ct->c", centred, centred)
        total = self.count + n
        delta = mean - self.mean
        self.m2 += m2 + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.count = total

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation per channel."""
        return np.sqrt(self.m2 / max(self.count, 1))


def clean(
    read: Callable[[int, int], np.ndarray],
    plan: CleaningPlan,
    config: PrepConfig,
    ch_names: Sequence[str],
    source: str,
    *,
    buffer: np.ndarray,
    sink: Callable[[np.ndarray], None],
    file_bads: np.ndarray | None = None,
) -> dict:
    """Clean a recording into `sink` block by block; return the channel flags.

    `read(a, b)` gives input samples [a, b) in volts (C, b - a); `buffer` is a zero-filled
    (C, n_out) float32 array (or memmap) holding the band-passed signal between the two passes.
    Raises PrepError, before `sink` sees a block, if the input holds NaN/Inf or if fewer than
    `min_channels` channels are neither flat nor in `file_bads`.
    """
    moments = RunningMoments(len(ch_names))
    for m0, block in filtered_blocks(read, plan):
        with np.errstate(invalid="ignore"):  # NaN/Inf input: named just below, not warned
            moments.update(block)
        if not np.isfinite(moments.mean).all():  # NaN/Inf in the input reach the output
            _raise_non_finite(read, plan, ch_names, source)
        buffer[:, m0 : m0 + block.shape[1]] = block
    flags = steps.flag_channels(moments.std, config)
    file_bads = np.zeros(len(ch_names), bool) if file_bads is None else file_bads
    _require_signal(flags["flat"], file_bads, ch_names, config, source)
    bad = flags["flat"] | flags["noisy"] | file_bads
    for m0, m1 in plan.blocks():
        block = np.asarray(buffer[:, m0:m1], dtype=np.float32)
        sink(steps.rereference(block, config.sfreq, config, good=~bad))
    return {"flat": flags["flat"], "noisy": flags["noisy"], "bad": bad, "std_uv": moments.std}


def _require_signal(
    flat: np.ndarray,
    file_bads: np.ndarray,
    ch_names: Sequence[str],
    config: PrepConfig,
    source: str,
) -> None:
    """Raise PrepError when fewer than `min_channels` channels are neither flat nor marked bad.

    Such a recording holds no EEG to learn from, and the average reference over one live
    channel would zero it: it fails before anything is written.
    """
    live = ~(flat | file_bads)
    if live.sum() >= config.min_channels:
        return
    n = len(ch_names)
    if flat.all():
        raise PrepError(
            f"{source}: all {n} EEG channels are flat (band-passed std below flat_std_uv="
            f"{config.flat_std_uv:g} µV): no signal to store"
        )
    flat_names = [name for name, f in zip(ch_names, flat, strict=True) if f]
    marked = [name for name, f, b in zip(ch_names, flat, file_bads, strict=True) if b and not f]
    why = [f"{len(flat_names)} flat: {short_list(flat_names)}"] if flat_names else []
    why += [f"{len(marked)} marked bad in the file: {short_list(marked)}"] if marked else []
    raise PrepError(
        f"{source}: {int(live.sum())} of {n} EEG channels carry signal ({'; '.join(why)}), "
        f"fewer than min_channels={config.min_channels}: nothing usable to store"
    )


def short_list(names: Sequence[str], limit: int = 8) -> str:
    """The first `limit` names, comma-separated, with ', ...' when there are more."""
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")
