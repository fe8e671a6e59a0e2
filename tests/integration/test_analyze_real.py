"""analyze() on the real IDEX L0 files and the LeCroy lab captures."""

from __future__ import annotations

import numpy as np
import pytest

import idexdask
from idexdask.analysis import analyze
from tests.conftest import REAL_L0_FILES

CHANNELS = ("target_high", "target_low", "ion_grid")


@pytest.mark.parametrize("path", REAL_L0_FILES, ids=lambda p: p.name)
def test_real_l0_analyze(path, l0_dir):
    ds = idexdask.read_l0(path)
    out = analyze(ds)
    n = ds.sizes["epoch"]
    assert out.sizes["epoch"] == n
    for ch in CHANNELS:
        st = out[f"{ch}_fit_status"].values
        assert st.shape == (n,) and np.all((st >= 0) & (st <= 7))
        q = out[f"{ch}_impact_charge"].values
        fitted = st <= 2
        assert np.all(np.isfinite(q[fitted]) & (q[fitted] > 0))
        assert np.all(np.isnan(q[st >= 4]))
    if n:
        assert np.all((out.peak_event.values >= 0) & (out.peak_event.values < n))
        assert np.all(np.isin(out.peak_status.values, [0, 1, 2, 3, 4]))


def test_real_dust_hits_have_finite_charges(l0_dir):
    """2023-12-18: 14 dust events; Target_Low sees every one of them."""
    out = analyze(idexdask.read_l0(l0_dir / "imap_idex_l0_raw_20231218_v001.pkts"))
    st = out.target_low_fit_status.values
    assert np.all(st <= 2)
    assert np.all(np.isfinite(out.target_low_impact_charge.values))
    assert out.tof_high_saturated.values.sum() >= 5
    assert out.sizes["peak"] > 50


def test_lab_captures_analyze(trc_dir):
    ds = idexdask.read_trc(trc_dir)
    out = analyze(ds, {"calibration": {"preset": "lab"}})
    assert out.sizes["epoch"] == ds.sizes["epoch"]
    assert np.all(out.tof_line_count.values > 3)
    assert np.all(out.peak_area.values[out.peak_status.values == 0] > 0)
    assert "target_high_fit_parameters" not in out  # no such channel in the captures
    for name in ("tof_high_snr", "tof_low_snr", "qd_1_snr", "tof_gain_ratio_low"):
        assert name in out
    assert np.all(out.tof_gain_ratio_low_status.values <= 1)
