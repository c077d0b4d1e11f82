"""Block-wise cleaning of one recording in bounded memory, equal to the whole-array steps.

Per output block [m0, m1) at the shard rate: read the input samples it depends on (with the
filters' margins, reflected at the recording's ends), convert to µV and reject NaN/Inf, resample
(polyphase anti-aliasing), then apply one FIR holding the band-pass and the line-noise notches.
Resampling first is exact for a linear time-invariant chain whose bands lie below the new Nyquist
frequency, and filters 2.5-25x fewer samples. Pass 1 keeps the band-passed signal (float32, in
memory or a scratch file) and per-channel statistics; pass 2 flags flat/noisy channels and
re-references to the average of the good ones while the result is written out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from eegfm.prep import steps
from eegfm.prep.config import PrepConfig


@dataclass(frozen=True)
class CleaningPlan:
    """Filters and block layout for one recording (depends on its rate, length and width).

    `pieces` are the continuous stretches of the recording as (in_start, in_stop, out_start,
    out_stop); each is filtered on its own, so acquisition pauses (zero-filled by MNE and
    annotated BAD_ACQ_SKIP) stay zero instead of ringing through the filters.
    """

    n_in: int
    n_out: int
    up: int
    down: int
    resample_kernel: np.ndarray
    fir_kernel: np.ndarray
    block: int  # output samples per block
    pieces: tuple[tuple[int, int, int, int], ...]
    level_samples: int  # input samples whose mean is subtracted from each piece
    fir_spectra: dict[int, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

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
        up, down = steps.resample_ratio(sfreq_in, config.sfreq)
        hdf5_chunk = max(1, round(config.shard_chunk_s * config.sfreq))
        by_memory = int(config.chunk_mb * 1e6 / (8 * max(n_channels, 1)) * up / down)
        block = min(round(config.chunk_s * config.sfreq), by_memory)
        block = max(hdf5_chunk, block // hdf5_chunk * hdf5_chunk)  # whole HDF5 chunks per write
        n_out = steps.resampled_length(n_in, up, down)
        return cls(
            n_in=n_in,
            n_out=n_out,
            up=up,
            down=down,
            resample_kernel=steps.resample_kernel(up, down, sfreq_in, config.lowpass_hz),
            # volts -> µV folded into the (linear) FIR: one pass over the input fewer
            fir_kernel=steps.filter_kernel(config.sfreq, config, line_freq=line_freq)
            * steps.VOLTS_TO_UV,
            block=block,
            pieces=_pieces(n_in, n_out, up, down, gaps),
            level_samples=max(1, round(10 * sfreq_in)),
        )

    def blocks(self) -> Iterator[tuple[int, int]]:
        """Output sample ranges [m0, m1) covering the recording."""
        for m0 in range(0, self.n_out, self.block):
            yield m0, min(self.n_out, m0 + self.block)


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
    """Yield (m0, band-passed µV block) from `read(a, b)` -> input samples [a, b) in volts."""
    margin = (len(plan.fir_kernel) - 1) // 2
    for in_start, in_stop, out_start, out_stop in plan.pieces:
        n_in, n_out = in_stop - in_start, out_stop - out_start
        n_level = min(n_in, plan.level_samples)
        level = None
        for m0 in range(0, n_out, plan.block):
            m1 = min(n_out, m0 + plan.block)
            lo, hi = max(0, m0 - margin), min(n_out, m1 + margin)
            k0, k1 = steps.resample_span(lo, hi, plan.up, plan.down, plan.resample_kernel)
            a, b = max(0, k0), min(n_in, k1)
            segment = read(in_start + a, in_start + b)
            if level is None:
                # Per-channel level of the piece's first seconds, removed before filtering:
                # DC-coupled amplifiers sit at up to ±300 mV, which the high-pass would leak
                # (~1e-3) and ring on at the ends.
                first = segment if a == 0 and b >= n_level else read(in_start, in_start + n_level)
                level = first[:, :n_level].mean(axis=1, keepdims=True)
            if segment.flags.owndata and segment.flags.writeable:  # fresh array: in place
                segment = np.subtract(segment, level, out=segment)
            else:
                segment = segment - level
            segment = steps.reflect_pad(segment, a - k0, k1 - b)
            resampled = steps.resample_block(
                segment, k0, lo, hi, plan.up, plan.down, plan.resample_kernel
            )
            if len(plan.fir_kernel) == 1:
                yield out_start + m0, resampled * plan.fir_kernel[0]
                continue
            resampled = steps.reflect_pad(resampled, lo - (m0 - margin), m1 + margin - hi)
            yield out_start + m0, steps.fir_valid(resampled, plan.fir_kernel, plan.fir_spectra)


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
        m2 = ((block - mean[:, None]) ** 2).sum(axis=1)
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
    """
    moments = RunningMoments(len(ch_names))

    def read_checked(start: int, stop: int) -> np.ndarray:
        block = read(start, stop)
        steps.check_finite(block, ch_names, source, offset=start)
        return block

    for m0, block in filtered_blocks(read_checked, plan):
        moments.update(block)
        buffer[:, m0 : m0 + block.shape[1]] = block
    flags = steps.flag_channels(moments.std, config)
    bad = flags["flat"] | flags["noisy"]
    if file_bads is not None:
        bad = bad | file_bads
    for m0, m1 in plan.blocks():
        block = np.asarray(buffer[:, m0:m1], dtype=np.float64)
        sink(steps.rereference(block, config.sfreq, config, good=~bad).astype(np.float32))
    return {"flat": flags["flat"], "noisy": flags["noisy"], "bad": bad, "std_uv": moments.std}
