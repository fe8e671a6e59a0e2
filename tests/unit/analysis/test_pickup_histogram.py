"""Tests of the pickup derivative counted in a histogram of its values
(analysis/pickup/histogram_kernels.py) against NumPy's integer formulas."""

from __future__ import annotations

import numpy as np
import pytest

from idexdask.adccodes import CODE_FILL
from idexdask.analysis.pickup.centroid_kernels import edge_centroids
from idexdask.analysis.pickup.code_kernels import recorded_derivative_rows
from idexdask.analysis.pickup.histogram_kernels import (
    HIST_BINS,
    histogram_derivative_rows,
    histogram_median_and_mad,
    shared_low_bits,
)
from idexdask.analysis.pickup.kernels import BLOCK, CHUNK

GAIN = np.float64(np.float32(2.5e-6))  # V per code, a float32 as the scope header stores it
OFFSET = np.float64(np.float32(0.043))  # V
EPS = np.finfo(float).eps
NO_CODES = np.empty((0, 0), dtype=np.int16)


def _volts(codes: np.ndarray) -> np.ndarray:
    """float32(gain * code - offset), as read_trc forms the volts."""
    return (GAIN * codes.astype(np.float64) - OFFSET).astype(np.float32)


def _records(rows: int, n: int, seed: int, step: int = 16, noise: float = 20.0) -> np.ndarray:
    """Codes (multiples of ``step``) of noisy negative-going pulses, int16."""
    rng = np.random.default_rng(seed)
    codes = np.round(rng.normal(size=(rows, n)) * noise + 500).astype(np.int64) * step
    for r in range(rows):
        start = n // 5 + 37 * r
        codes[r, start : start + n // 3] -= step * (400 + 50 * r)
    return codes.astype(np.int16)


def _integer_derivative(codes: np.ndarray, w: int) -> np.ndarray:
    """D[w : n - w + 1] along the polarity -1, from NumPy's int64 prefix sums."""
    s = np.zeros((codes.shape[0], codes.shape[1] + 1), dtype=np.int64)
    np.cumsum(-codes.astype(np.int64), axis=1, out=s[:, 1:])
    return s[:, 2 * w :] - 2 * s[:, w:-w] + s[:, : -2 * w]


def _check_formulas(codes, got, w, half, min_transit, max_transit):
    """The results against NumPy: the MAD, the first maximum, the first minimum
    in the exit range, the windows, scaled by gain / w."""
    rows, n = codes.shape
    exact, mad, i_in, i_out, win_in, win_out = got
    assert exact.all()
    core = _integer_derivative(codes, w)
    d = np.zeros((rows, n), dtype=np.int64)
    d[:, w : n - w + 1] = core
    med = np.median(core, axis=1)
    expected_mad = np.median(np.abs(core - med[:, None]), axis=1) * GAIN / w
    # the same exact median of integers; one rounding each in the product and
    # the division (NumPy's reference multiplies in another order)
    np.testing.assert_allclose(mad, expected_mad, rtol=4 * EPS, atol=0)
    # integer values: the first maximum and minimum are exact on both sides
    np.testing.assert_array_equal(i_in, np.argmax(d, axis=1))
    for e in range(rows):
        lo, hi = i_in[e] + min_transit, min(i_in[e] + max_transit + 1, n)
        assert i_out[e] == (lo + np.argmin(d[e, lo:hi]) if hi > lo else 0)
        for centre, window, side in ((i_in[e], win_in[e], 1.0), (i_out[e], win_out[e], -1.0)):
            idx = np.clip(np.arange(centre - half, centre + half + 1), 0, n - 1)
            full = d[e, idx] * GAIN / w
            # the values formed: those of the full window (the rest 0)
            formed = window != 0
            np.testing.assert_allclose(window[formed], full[formed], rtol=4 * EPS, atol=0)
            assert window[half] == pytest.approx(full[half], rel=4 * EPS, abs=0)
            # ... at least the run above half height and the values ending it,
            # so the centroid is the full window's (the same compiled code on
            # the same values where it reads them)
            got = edge_centroids(window[None, :], np.array([centre]), n, half, side)
            ref = edge_centroids(full[None, :], np.array([centre]), n, half, side)
            np.testing.assert_allclose(got, ref, rtol=4 * EPS, atol=0)


@pytest.mark.parametrize("recorded", [True, False])
@pytest.mark.parametrize("w", [40, 400])
def test_histogram_derivative_matches_the_integer_formulas(recorded, w):
    """Recorded codes, and codes found from the volts: many blocks, both edges
    inside; with w = 400 the edges' derivative lies beyond the bins (counted in
    the end bins through the spare counters), the median and MAD inside."""
    rows, n, half, min_transit, max_transit = 3, 6 * CHUNK + 123, 80, 100, 9000
    codes = _records(rows, n, 1)
    beyond = np.abs(_integer_derivative(codes, w) >> 4).max() >= HIST_BINS // 2
    assert beyond == (w == 400)
    got = histogram_derivative_rows(
        _volts(codes), codes if recorded else NO_CODES, CODE_FILL, True, -1.0,
        np.full(rows, GAIN), np.full(rows, OFFSET), w, min_transit, max_transit, half)
    _check_formulas(codes, got, w, half, min_transit, max_transit)


def test_ties_edges_at_the_ends_and_an_empty_exit_range():
    """Equal maxima in two blocks (the first wins), an entry near the record's
    end (its window clipped, the exit range empty) and one near its start."""
    n, w, half = 5 * CHUNK, 30, 200
    codes = np.full((3, n), 8000, dtype=np.int16)
    rng = np.random.default_rng(5)
    codes += (rng.integers(-3, 4, size=codes.shape) * 16).astype(np.int16)
    codes[0, 3 * BLOCK + 100 : 3 * BLOCK + 400] -= 1600  # a pulse, then the same again
    codes[0, 9 * BLOCK + 100 : 9 * BLOCK + 400] = codes[0, 3 * BLOCK + 100 : 3 * BLOCK + 400]
    codes[0, 9 * BLOCK + 70 : 9 * BLOCK + 100] = codes[0, 3 * BLOCK + 70 : 3 * BLOCK + 100]
    codes[0, 9 * BLOCK + 400 : 9 * BLOCK + 430] = codes[0, 3 * BLOCK + 400 : 3 * BLOCK + 430]
    codes[1, n - 50 :] -= 3200  # entry 50 samples before the end
    codes[2, 10:500] -= 3200  # entry at the start
    got = histogram_derivative_rows(_volts(codes), codes, CODE_FILL, True, -1.0,
                                    np.full(3, GAIN), np.full(3, OFFSET), w, 100, 2000, half)
    _check_formulas(codes, got, w, half, 100, 2000)
    assert got[2][0] < 4 * BLOCK  # the first of the two equal maxima


def test_unverified_histograms_take_the_written_derivative():
    """Codes that share no low bits and spread the derivative beyond the
    histogram's bins (and a row whose later codes break the first chunk's
    shared bits): the results of the pass that writes the derivative out."""
    rows, n, w, half = 2, 4 * CHUNK, 400, 300
    codes = _records(rows, n, 3, step=1, noise=2000.0)
    codes[1] = _records(1, n, 4)[0]
    codes[1, CHUNK + 7] += 1  # shares the first chunk's 4 low bits no more
    args = (CODE_FILL, True, -1.0, np.full(rows, GAIN), np.full(rows, OFFSET), w, 100, 3000,
            half)
    got = histogram_derivative_rows(_volts(codes), codes, *args)
    _check_formulas(codes, got, w, half, 100, 3000)
    # the written-out pass gives the same exact integers and the same scaling
    # (full windows: the unverified rows are that pass's)
    for a, b in zip(got, recorded_derivative_rows(_volts(codes), codes, *args), strict=True):
        np.testing.assert_array_equal(a, b)


def test_fill_codes_and_unknown_scales_are_left_to_the_float_pass():
    rows, n = 3, 2 * CHUNK
    codes = _records(rows, n, 6)
    codes[0, 77] = CODE_FILL
    gain = np.array([GAIN, np.nan, GAIN])
    got = histogram_derivative_rows(_volts(codes), codes, CODE_FILL, True, -1.0, gain,
                                    np.full(rows, OFFSET), 20, 10, 500, 40)
    np.testing.assert_array_equal(got[0], [False, False, True])


@pytest.mark.parametrize("shift", [0, 4])
@pytest.mark.parametrize("size", [1, 2, 9_999, 10_000])
def test_histogram_median_and_mad_equal_numpy(shift, size):
    rng = np.random.default_rng(size + shift)
    u = np.round(rng.standard_t(2, size=size) * 3000).astype(np.int64)
    u[: size // 5] = u[0]  # ties
    hist = np.zeros(HIST_BINS, dtype=np.int32)
    np.add.at(hist, np.clip(u + HIST_BINS // 2, 0, HIST_BINS - 1), 1)
    x = u << shift
    med = np.median(x)
    # integers, their half-sums and distances are exact float64 numbers; the
    # t-distribution's far tail lands in the end bins, which the ranks do not reach
    expected = (True, med, np.median(np.abs(x - med)))
    assert histogram_median_and_mad(hist, size, shift) == expected


def test_histogram_median_and_mad_unverified_at_the_end_bins():
    """Ranks in the end bins (whose values lie anywhere beyond): not verified."""
    hist = np.zeros(HIST_BINS, dtype=np.int32)
    hist[0] = 10  # values below the bins
    hist[HIST_BINS // 2] = 5
    assert not histogram_median_and_mad(hist, 15, 0)[0]
    hist[0] = 3  # the median inside, the MAD's rank among the end bins' values
    hist[HIST_BINS // 2] = 4
    hist[HIST_BINS - 1] = 2
    assert not histogram_median_and_mad(hist, 9, 0)[0]
    hist[HIST_BINS // 2] = 6  # the MAD's rank at the median's bin: verified
    assert histogram_median_and_mad(hist, 11, 0) == (True, 0.0, 0.0)


def test_shared_low_bits():
    assert shared_low_bits(np.array([16, 48, -32], dtype=np.int16)) == 4
    assert shared_low_bits(np.array([17, 49, -31], dtype=np.int16)) == 4  # same residue
    assert shared_low_bits(np.array([16, 17], dtype=np.int16)) == 0
    assert shared_low_bits(np.array([5, 5], dtype=np.int16)) == 12  # constant: capped


def test_edge_windows_formed_over_the_run():
    """Windows wider than the first radius: a sharp edge's window formed only
    around its run (zeros beyond), a slow ramp's run past the first radius
    (the whole window formed), an exit window whose peak is not positive
    (whole); the centroids those of the full windows."""
    n, w, half = 10 * CHUNK, 40, 5000
    rng = np.random.default_rng(9)
    codes = (np.round(rng.normal(size=(3, n)) * 2 + 500) * 16).astype(np.int64)
    codes[1] = (np.round(rng.normal(size=n) * 0.6 + 500) * 16).astype(np.int64)  # quieter
    codes[0, 12_000:20_000] -= 16 * 300  # sharp edges
    ramp = np.minimum(np.arange(n - 12_000), 6000) / 6000.0
    codes[1, 12_000:] -= np.round(ramp * 300).astype(np.int64) * 16  # a 6000-sample entry
    codes[2, n - 50 :] -= 16 * 300  # an entry at the end: no exit range, exit window at 0
    codes = codes.astype(np.int16)
    got = histogram_derivative_rows(_volts(codes), codes, CODE_FILL, True, -1.0,
                                    np.full(3, GAIN), np.full(3, OFFSET), w, 100, 20_000, half)
    _check_formulas(codes, got, w, half, 100, 20_000)
    assert np.count_nonzero(got[4][0]) < half  # the sharp entry's window: its run only
    assert np.count_nonzero(got[4][1]) > 2 * 2048 + 1  # the ramp's: past the first radius
    assert got[3][2] == 0 and got[5][2][half] == 0.0  # a peak of 0: the whole window
    assert np.count_nonzero(got[5][2]) > 2 * 2048 + 1
