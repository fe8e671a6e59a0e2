"""The .trc reader and the charge pickup analysis on the shared peridot captures.

Data: ``$IDEXDASK_DATA/scope-trc`` (default ``<repo>/../shared/data``); their
absence fails the tests (fixture ``trc_dir`` in conftest), it never skips them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from idexdask.analysis.pickup import pickup_from_dataset
from idexdask.io.trc import read_trc, read_trc_file

REPO = Path(__file__).resolve().parents[2]
IMPACTS = (1, 3, 6)
NAMES = {1: "QD_1", 2: "TOF_Low", 3: "TOF_High", 4: "QD_2"}


@pytest.fixture(scope="module")
def ds(trc_dir):
    return read_trc(trc_dir)


def test_layout(ds):
    assert ds.attrs["source"] == "lecroy_trc"
    assert ds.attrs["instrument_name"] == "LECROYWRHRO66Zi"
    assert ds.impact_number.values.tolist() == list(IMPACTS)
    assert list(ds.channel.values) == ["QD_1", "TOF_Low", "TOF_High", "QD_2"]
    assert ds.sizes["time_high_sample_rate_index"] == 500_002
    t = ds.time_high_sample_rate.values
    np.testing.assert_allclose(t[:, 0], -400.0, atol=1e-3)
    np.testing.assert_allclose(t[:, -1], 100.0 + 0.002, atol=2e-3)
    np.testing.assert_allclose(np.diff(t[0, :1000]), 1e-3, rtol=1e-6)
    for var in NAMES.values():
        assert ds[var].dtype == np.float32
        assert ds[var].attrs["time_variable"] == "time_high_sample_rate"
        assert ds[var].attrs["units"] == "V"
    assert ds.TOF_High.attrs["signal_polarity"] == -1
    assert ds.TOF_Low.attrs["signal_polarity"] == -1
    assert ds.QD_1.attrs["signal_polarity"] == -1  # negative-going pickup pulses
    assert ds.QD_2.attrs["signal_polarity"] == -1
    assert not ds.channel_missing.any()
    # sub-sample trigger interpolation differs between channels
    assert np.all(np.abs(ds.channel_time_offset.values) < 1e-3)
    # TOF signals are negative-going at the impact (t ~ 0)
    near0 = np.abs(t[0]) < 5
    assert np.all(ds.TOF_High.values[:, near0].min(axis=1) < -0.1)
    # epochs: 2021-01-13, in order
    assert np.all(np.diff(ds.epoch.values) > 0)
    assert ds.trigger_time.values[0].startswith("2021-01-13T17:48:58")
    assert bool(ds.channel_clipped.sel(channel="TOF_Low").values[2])


@pytest.mark.parametrize("impact", IMPACTS)
@pytest.mark.parametrize("channel", [1, 2, 3, 4])
def test_matches_lecroyutils(trc_dir, ds, impact, channel):
    import lecroyutils.data as lecroy  # a dev dependency: its absence is a failure

    f = trc_dir / f"peridot_C{channel}_{impact:05d}.trc"
    with pytest.warns() if (channel, impact) == (2, 6) else _nullcontext():
        ref = lecroy.LecroyScopeData.parse_file(str(f))
    ours = read_trc_file(f)
    h = ours.header
    assert h.vertical_gain == pytest.approx(float(ref.vertical_gain), rel=0, abs=0)
    assert h.vertical_offset == float(ref.vertical_offset)
    assert h.horiz_interval == float(ref.horizontal_interval)
    assert h.horiz_offset == float(ref.horizontal_offset)
    assert h.instrument_name == ref.instrument_name
    assert h.trigger_time == ref.trigger_time
    # identical counts and scale: the float32 arithmetic of lecroyutils, redone
    # on our raw counts and header, gives bit-identical volts
    g32, o32 = np.float32(h.vertical_gain), np.float32(h.vertical_offset)
    np.testing.assert_array_equal(g32 * ours.raw.astype(np.float32) - o32, ref.y)
    # our volts are computed in float64 (gain*raw - offset cancels: the offset is
    # up to ~1e4 counts), then stored as float32: equal within float32 rounding
    e = IMPACTS.index(impact)
    tol = 2 * np.finfo(np.float32).eps * (abs(h.vertical_offset) + np.abs(ref.y).max())
    np.testing.assert_allclose(ds[NAMES[channel]].values[e], ref.y, rtol=0, atol=tol)
    np.testing.assert_allclose(ours.volts, ref.y, rtol=0, atol=tol)
    # times: first sample identical; lecroyutils spaces its samples N*dt/(N-1)
    # (numpy.linspace to N*dt), so its axis drifts to one interval at the end,
    # while the LeCroy definition is offset + i*interval.
    t = ours.time_s
    assert t[0] == ref.x[0]
    n = t.size
    np.testing.assert_allclose(ref.x - t, np.arange(n) / (n - 1) * h.horiz_interval,
                               atol=1e-15)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_pickup_on_real_captures(ds):
    res = pickup_from_dataset(ds)
    assert res.qd1_status.values.tolist() == [0, 0, 0]
    assert res.qd2_status.values.tolist() == [0, 0, 0]
    for q in ("qd1", "qd2"):
        v = res[f"{q}_speed"].values  # with the placeholder 0.20 m tube length
        assert np.all((v > 0.1) & (v < 100))
        tr = res[f"{q}_transit_time"].values
        assert np.all((tr > 15) & (tr < 30))  # µs, as seen on the traces
        assert np.all(res[f"{q}_pulse_height"].values > 0)
        # flight time to the impact over transit time = target distance / tube
        # length: geometry only, so the same for every grain
        ratio = res[f"{q}_flight_over_transit"].values
        assert np.ptp(ratio) / ratio.mean() < 0.03
    # both detectors see the same transit (same speed) within their errors
    diff = res.qd1_transit_time - res.qd2_transit_time
    err = np.hypot(res.qd1_transit_time_err, res.qd2_transit_time_err)
    assert np.all(np.abs(diff) < 3 * err)
    # and the pulses coincide: QD 2 is not downstream of QD 1 in these captures
    assert np.all(np.abs(res.delay.values) < 3 * res.delay_err.values + 0.05)
