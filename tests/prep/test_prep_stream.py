"""Block-wise cleaning equals whole-signal cleaning; pauses stay zero; statistics are exact."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from eegfm.prep import steps
from eegfm.prep.config import load_prep_config
from eegfm.prep.stream import CleaningPlan, RunningMoments, clean, filtered_blocks


def _run(raw, config, gaps=()):
    picks = list(range(19))
    plan = CleaningPlan.build(raw.n_times, raw.info["sfreq"], len(picks), config, gaps=gaps)
    buffer = np.zeros((len(picks), plan.n_out), np.float32)
    out = []
    flags = clean(
        lambda a, b: raw.get_data(picks=picks, start=a, stop=b),
        plan,
        config,
        raw.ch_names[:19],
        "test",
        buffer=buffer,
        sink=out.append,
    )
    return plan, np.concatenate(out, axis=1), flags


def test_blocks_equal_whole_recording(real_raw):
    whole_config = load_prep_config(None, chunk_s=10_000.0)
    block_config = load_prep_config(None, chunk_s=4.0)  # 4-s blocks, much shorter than margins
    whole_plan, whole, _ = _run(real_raw, whole_config)
    block_plan, blocks, _ = _run(real_raw, block_config)
    assert whole_plan.block > whole_plan.n_out and block_plan.block == 800
    assert blocks.shape == whole.shape == (19, 12400) and blocks.dtype == np.float32
    # float64 FFT round-off (~1e-13 µV) vanishes in the float32 output: identical here, and
    # never more than one float32 step at the peak (docs/prep.md)
    one_step = np.spacing(np.abs(whole).max())  # 7.6e-6 µV
    np.testing.assert_allclose(blocks, whole, rtol=0, atol=one_step)


def test_memory_cap_shrinks_blocks_not_output(real_raw):
    tiny = load_prep_config(None, chunk_mb=0.5)
    plan, capped, _ = _run(real_raw, tiny)
    assert plan.block == 1200  # 0.5 MB of 19-channel float64 input at 500 Hz, whole HDF5 chunks
    _, default, _ = _run(real_raw, load_prep_config(None))
    np.testing.assert_allclose(capped, default, rtol=0, atol=np.spacing(np.abs(default).max()))


def test_fused_chain_equals_the_pure_steps(real_raw, config):
    x = steps.to_microvolts(real_raw.get_data(picks=list(range(19))))
    reference = steps.bandpass(
        steps.notch(steps.resample(x, 500.0, config), 200.0, config), 200.0, config
    )
    plan = CleaningPlan.build(real_raw.n_times, 500.0, 19, config)
    fused = np.concatenate(
        [b for _, b in filtered_blocks(lambda a, b: x[:, a:b] / 1e6, plan)], axis=1
    )
    # one FIR holding band-pass and notch vs the two in sequence: equal up to the window design
    # (2.7e-5 of the peak measured; docs/prep.md). The notch itself: test_notch.py.
    error = np.abs(fused - reference)[:, 1000:-1000].max()
    assert error < 1e-4 * np.abs(reference).max()


def test_pauses_stay_zero_and_pieces_are_filtered_alone(real_raw, config):
    gap = (10_000, 12_500)  # input samples 20-25 s
    plan, out, _ = _run(real_raw, config, gaps=[gap])
    assert [p[:2] for p in plan.pieces] == [(0, 10_000), (12_500, 31_000)]
    assert np.all(out[:, 4000:5000] == 0)
    assert np.abs(out[:, :3990]).max() > 1
    # the piece after the gap equals that piece cleaned on its own
    tail = real_raw.copy().crop(tmin=25.0)
    _, alone, _ = _run(tail, config)
    np.testing.assert_allclose(out[:, 5000:], alone[:, : out.shape[1] - 5000], atol=1e-3)


def test_running_moments_and_flags(real_raw, config):
    data = np.random.default_rng(0).normal(3, 2, size=(2, 5000))
    moments = RunningMoments(2)
    for start in range(0, 5000, 777):
        moments.update(data[:, start : start + 777])
    np.testing.assert_allclose(moments.std, data.std(axis=1))
    _, out, flags = _run(real_raw, config)
    assert not flags["bad"].any()
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-3)  # average reference


@pytest.mark.parametrize("sfreq", [128.0, 1000.0])
def test_other_rates_give_the_common_rate(sfreq):
    config = load_prep_config(None)
    n_in = int(30 * sfreq)
    x = np.random.default_rng(2).normal(size=(3, n_in)) * 1e-5
    plan = CleaningPlan.build(n_in, sfreq, 3, config)
    blocks = [b for _, b in filtered_blocks(lambda a, b: x[:, a:b], plan)]
    assert sum(b.shape[1] for b in blocks) == plan.n_out == 6000


def test_a_short_tail_joins_the_last_block_within_the_memory_cap():
    config = load_prep_config(None)  # 60-s blocks at 200 Hz
    plan = CleaningPlan.build(182 * 500, 500.0, 19, config)
    assert plan.blocks() == [(0, 12_000), (12_000, 24_000), (24_000, 36_400)]
    assert plan.spans(12_000 + 3_001) == [(0, 12_000), (12_000, 15_001)]  # over a quarter
    capped = CleaningPlan.build(182 * 500, 500.0, 19, load_prep_config(None, chunk_mb=0.5))
    assert capped.block == capped.block_limit == 1200
    assert capped.blocks()[-1] == (36_000, 36_400)  # merging would pass the cap


@pytest.mark.parametrize("sfreq", [500.0, 100.0, 300.0])
@pytest.mark.parametrize("n_in", [2, 7, 333, 5000])
def test_fused_and_polyphase_paths_agree_on_short_pieces_and_gaps(sfreq, n_in):
    config = load_prep_config(None, chunk_s=4.0)
    x = np.random.default_rng(n_in).normal(size=(3, n_in)).cumsum(axis=1) * 1e-6
    gaps = [(n_in // 3, n_in // 3 + max(2, n_in // 10))] if n_in > 100 else []
    plan = CleaningPlan.build(n_in, sfreq, 3, config, gaps=gaps)
    outputs = []
    for fused in (True, False):
        filters = steps.ResampleFilter(
            plan.up, plan.down, plan.filters.resample_kernel, plan.filters.fir_kernel
        )
        filters.fused = fused
        out = np.zeros((3, plan.n_out))
        for m0, block in filtered_blocks(lambda a, b: x[:, a:b], replace(plan, filters=filters)):
            out[:, m0 : m0 + block.shape[1]] = block
        outputs.append(out)
    assert np.isfinite(outputs[0]).all()
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=0, atol=1e-8 * np.abs(outputs[1]).max())
