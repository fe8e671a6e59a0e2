"""Tests of the pickup derivative formed from ADC codes (analysis/pickup/code_kernels.py)
and of the integer median and MAD it uses (analysis/pickup/order_stats.py)."""

from __future__ import annotations

import numpy as np
import pytest

from idexdask.adccodes import CODE_FILL
from idexdask.analysis.pickup import pickup_uniform
from idexdask.analysis.pickup.code_kernels import code_derivative_rows, recorded_derivative_rows
from idexdask.analysis.pickup.kernels import CHUNK, derivative_rows
from idexdask.analysis.pickup.order_stats import (
    BINS,
    COPIES,
    binned_median_and_mad_of_ints,
    int_keys,
)

GAIN = np.float64(np.float32(2.5e-6))  # V per code, a float32 as the scope header stores it
OFFSET = np.float64(np.float32(0.043))  # V


def _volts(codes: np.ndarray, gain: float = GAIN, offset: float = OFFSET) -> np.ndarray:
    """float32(gain * code - offset), as read_trc forms the volts."""
    return (gain * codes.astype(np.float64) - offset).astype(np.float32)


def _records(rows: int, n: int, seed: int) -> np.ndarray:
    """12-bit codes (multiples of 16) of noisy negative-going pulses."""
    rng = np.random.default_rng(seed)
    codes = np.round(rng.normal(size=(rows, n)) * 20 + 500).astype(np.int64) * 16
    for r in range(rows):
        start = n // 5 + 37 * r
        codes[r, start : start + n // 3] -= 16 * (400 + 50 * r)
    return codes


def _integer_derivative(codes: np.ndarray, w: int) -> np.ndarray:
    """D[w : n - w + 1] along the polarity -1, from NumPy's int64 prefix sums."""
    s = np.zeros((codes.shape[0], codes.shape[1] + 1), dtype=np.int64)
    np.cumsum(-codes, axis=1, out=s[:, 1:])
    return s[:, 2 * w :] - 2 * s[:, w:-w] + s[:, : -2 * w]


def _ints_median_and_mad(x: np.ndarray) -> tuple[float, float]:
    counts = np.zeros((COPIES, BINS), dtype=np.int32)
    int_keys(x, np.empty(x.size, dtype=np.uint16), counts)
    assert counts.sum() == x.size
    n = x.size
    return binned_median_and_mad_of_ints(x, n, counts, np.empty(n), np.empty(n), np.empty(n))


@pytest.mark.parametrize("values", [
    np.arange(-5, 6),
    np.r_[np.zeros(9000, dtype=np.int64), np.ones(9001, dtype=np.int64)],
    np.full(1000, -7),
    np.array([3]),
    np.array([2**31 - 1, -(2**31) + 9, 0, 5, -2**31]),
])
def test_median_and_mad_of_ints_equal_numpy_small(values):
    med = np.median(values)
    # integers, their half-sums and distances are exact float64 numbers: both
    # sides compute the same exact values
    assert _ints_median_and_mad(values.astype(np.int64)) == (med, np.median(np.abs(values - med)))


def test_median_and_mad_of_ints_undecided():
    """Deviations that can lie in three runs of bins (both ends and the middle):
    NaN, the caller's cue for the general selection."""
    assert np.isnan(_ints_median_and_mad(np.array([2**31 - 1, -(2**31), 0, 5]))).all()


@pytest.mark.parametrize("seed", range(4))
def test_median_and_mad_of_ints_equal_numpy(seed):
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.uniform(0, 6)
    x = (np.round(rng.standard_t(3, size=100_001 - seed) * scale) * 16).astype(np.int32)
    x[: 500 * seed] = x[0]  # ties
    med = np.median(x.astype(np.float64))
    expected = (med, np.median(np.abs(x - med)))
    assert _ints_median_and_mad(x) == expected  # exact values (see above)


def test_code_derivative_matches_the_integer_formulas():
    """The compiled pass against NumPy's integer prefix sums: the MAD, the first
    maximum, the first minimum in the exit range, the windows, scaled by gain / w."""
    rows, n, w, half, min_transit, max_transit = 3, 3 * CHUNK + 123, 40, 80, 100, 5000
    codes = _records(rows, n, 1)
    y = _volts(codes)
    gain, offset = np.full(rows, GAIN), np.full(rows, OFFSET)
    exact, mad, i_in, i_out, win_in, win_out = code_derivative_rows(
        y, True, -1.0, gain, offset, w, min_transit, max_transit, half)
    assert exact.all()
    core = _integer_derivative(codes, w)
    d = np.zeros((rows, n), dtype=np.int64)
    d[:, w : n - w + 1] = core
    med = np.median(core, axis=1)
    expected_mad = np.median(np.abs(core - med[:, None]), axis=1) * GAIN / w
    # the same exact median; one rounding each in the product and the division
    np.testing.assert_allclose(mad, expected_mad, rtol=4 * np.finfo(float).eps, atol=0)
    # integer values: the first maximum and minimum are exact on both sides
    np.testing.assert_array_equal(i_in, np.argmax(d, axis=1))
    for e in range(rows):
        lo, hi = i_in[e] + min_transit, min(i_in[e] + max_transit + 1, n)
        assert i_out[e] == lo + np.argmin(d[e, lo:hi])
        for centre, window in ((i_in[e], win_in[e]), (i_out[e], win_out[e])):
            idx = np.clip(np.arange(centre - half, centre + half + 1), 0, n - 1)
            np.testing.assert_allclose(window, d[e, idx] * GAIN / w,
                                       rtol=4 * np.finfo(float).eps, atol=0)


def test_code_derivative_agrees_with_the_float_pass():
    """The float path differentiates the float32-rounded volts with float64 sums:
    each sample within half a float32 ulp of its code's volts, so a difference of
    two means within one ulp of the largest |v| (2**-24 max|v|, ~3e-9 V here),
    the float64 sums' rounding far below that; the MAD, an order statistic of
    such values, within twice that.  The derivative's noise is ~1e-4 V."""
    rows, n, w, half = 4, 60_000, 200, 300
    codes = _records(rows, n, 2)
    y = _volts(codes)
    got = code_derivative_rows(y, True, -1.0, np.full(rows, GAIN), np.full(rows, OFFSET),
                               w, 50, 40_000, half)
    ref = derivative_rows(y, -1.0, np.zeros(rows), w, 50, 40_000, half,
                          np.empty((rows, n // CHUNK + 1)))
    assert got[0].all()
    bound = 2.0**-24 * np.abs(y).max() + 1e-12
    np.testing.assert_allclose(got[1], ref[0], rtol=0, atol=2 * bound)
    np.testing.assert_array_equal(got[2], ref[1])  # clean edges: no near-ties at the peaks
    np.testing.assert_array_equal(got[3], ref[2])
    np.testing.assert_allclose(got[4], ref[3], rtol=0, atol=bound)
    np.testing.assert_allclose(got[5], ref[4], rtol=0, atol=bound)


def test_rows_not_on_their_codes_are_left_to_the_float_pass():
    rows, n, w = 7, 20_000, 30
    codes = _records(rows, n, 3)
    y = _volts(codes)
    gain, offset = np.full(rows, GAIN), np.full(rows, OFFSET)
    y[1, 12_345] = np.nextafter(y[1, 12_345], np.float32(1))  # between codes
    y[2, 50] = np.nan  # a missing sample
    gain[3] = np.nan  # scale not known
    offset[4] = OFFSET + GAIN / 3  # another offset
    y[5] = _volts(np.full(n, 512))  # constant: MAD 0, the float pass takes its std
    y[6, -1] = _volts(np.array([40_000 * 16]))[0]  # beyond 16-bit codes
    exact = code_derivative_rows(y, True, -1.0, gain, offset, w, 10, 5000, 60)[0]
    np.testing.assert_array_equal(exact, [True, False, False, False, False, False, False])
    # float64 records of the same codes: exact where each value is the float64 volts
    wide = GAIN * codes.astype(np.float64) - OFFSET
    exact = code_derivative_rows(wide, False, -1.0, np.full(rows, GAIN), np.full(rows, OFFSET),
                                 w, 10, 5000, 60)[0]
    assert exact.all()
    exact = code_derivative_rows(wide.astype(np.float32).astype(np.float64), False, -1.0,
                                 np.full(rows, GAIN), np.full(rows, OFFSET), w, 10, 5000, 60)[0]
    assert not exact.any()  # rounded through float32: not the float64 volts


def test_pickup_from_codes_agrees_with_the_float_path():
    """Products with the ADC scale given (integer sums) and without (float sums):
    the same statuses; times and speeds at rounding level (the float path's
    sums and float32 volts), errors from the same order statistics."""
    rng = np.random.default_rng(11)
    n, dt = 200_000, 0.001
    t = np.arange(n) * dt - 50.0
    codes = np.round(rng.normal(size=(4, n)) * 30 + 800).astype(np.int64) * 16
    for e, (t_in, transit) in enumerate(((10.0, 25.0), (20.0, 21.0), (5.0, 30.0))):
        codes[e] -= 16 * 300 * ((t > t_in) & (t < t_in + transit))
    y = _volts(codes)  # the fourth record: noise only (no pulse)
    coded = pickup_uniform(t[0], dt, y, adc_gain=GAIN, adc_offset=OFFSET)
    plain = pickup_uniform(t[0], dt, y)
    np.testing.assert_array_equal(coded["status"].values, plain["status"].values)
    assert list(coded["status"].values) == [0, 0, 0, 2]
    for name in ("entry_time", "exit_time", "transit_time", "speed", "charge", "pulse_height"):
        np.testing.assert_allclose(coded[name].values, plain[name].values, rtol=1e-9)
    for name in ("transit_time_err", "speed_err", "charge_err", "snr"):
        np.testing.assert_allclose(coded[name].values, plain[name].values, rtol=1e-6)


def test_recorded_codes_give_the_recovered_codes_results():
    """The codes the reader recorded against those found from the volts: the same
    integers enter the same integer arithmetic, so the same results exactly
    (one code path, twice).  Rows the recovery leaves to the float path are left
    there with recorded codes too: a missing sample (NaN volts, the fill code)
    and an unknown scale."""
    rows, n, w, half, min_transit, max_transit = 5, 3 * CHUNK + 321, 50, 80, 100, 5000
    codes = _records(rows, n, 4)
    y = _volts(codes)
    recorded = codes.astype(np.int16)
    y[2, 777] = np.nan
    recorded[2, 777] = CODE_FILL
    gain, offset = np.full(rows, GAIN), np.full(rows, OFFSET)
    gain[3] = np.nan
    search = (w, min_transit, max_transit, half)
    found = code_derivative_rows(y, True, -1.0, gain, offset, *search)
    given = recorded_derivative_rows(y, recorded, CODE_FILL, True, -1.0, gain, offset, *search)
    np.testing.assert_array_equal(found[0], [True, True, False, False, True])
    for a, b in zip(found, given, strict=True):
        np.testing.assert_array_equal(a, b)


def test_recorded_codes_are_taken_as_they_are():
    """Recorded codes are not checked against the values (the reader decoded the
    values from them): values off their codes do not send a row to the float
    path, and the results are those of the codes."""
    rows, n, w = 2, 20_000, 30
    codes = _records(rows, n, 5)
    y = _volts(codes)
    gain, offset = np.full(rows, GAIN), np.full(rows, OFFSET)
    reference = code_derivative_rows(y, True, -1.0, gain, offset, w, 10, 5000, 60)
    y[:, 100] = np.nextafter(y[:, 100], np.float32(1))  # between codes
    assert not code_derivative_rows(y, True, -1.0, gain, offset, w, 10, 5000, 60)[0].any()
    given = recorded_derivative_rows(y, codes.astype(np.int16), CODE_FILL, True, -1.0, gain,
                                     offset, w, 10, 5000, 60)
    for a, b in zip(reference, given, strict=True):
        np.testing.assert_array_equal(a, b)
