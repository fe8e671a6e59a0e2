"""Signal quality on the real IDEX L0 files and the lab scope captures.

The official pipeline's (imap-processing 1.0.40) L1a saturation flag is "any
finite sample >= 95 % of full scale" (972 DN for the 10-bit TOF channels).  Its
values on the 2023-12-18 file, taken once from a scratch run of the official L1a,
are pinned here so that this test needs no oracle environment.
"""

from __future__ import annotations

import numpy as np
import pytest

import idexdask
from idexdask.analysis.signal_quality import QualityStatus, long_runs, signal_quality
from tests.conftest import REAL_L0_FILES, TRC_DIR

CHANNELS = ("TOF_High", "TOF_Mid", "TOF_Low", "Target_High", "Target_Low", "Ion_Grid")
OFFICIAL_TOF_HIGH_20231218 = [1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0]


@pytest.fixture(scope="module")
def decoded(l0_dir):
    return {f.name: idexdask.read_l0(f) for f in REAL_L0_FILES}


@pytest.fixture(scope="module")
def quality(decoded):
    return {name: signal_quality(ds) for name, ds in decoded.items()}


def test_every_file_runs_and_statuses_ok(decoded, quality):
    for name, q in quality.items():
        assert q.sizes["epoch"] == decoded[name].sizes["epoch"]
        assert (q.quality_status.values == QualityStatus.OK).all(), name


def test_rail_runs_are_flagged_and_quiet_events_are_not(decoded, quality):
    for name, ds in decoded.items():
        q = quality[name]
        for ch in CHANNELS:
            x = ds[ch].values
            vmax = ds[ch].attrs["VALIDMAX"]
            rail_run = long_runs(x >= vmax, 3).any(axis=1)
            sat = q[f"{ch.lower()}_saturated"].values
            # a run of >= 3 samples at the rail is always flagged
            assert sat[rail_run].all(), (name, ch)
            # events far from the rails with low SNR are never flagged
            quiet = (x.max(axis=1) < 0.9 * vmax) & (q[f"{ch.lower()}_snr"].values < 10)
            assert not sat[quiet].any(), (name, ch)


def test_noise_capture_files_have_no_saturation(quality):
    for name, q in quality.items():
        if name.startswith(("compressed_", "non_compressed_")):  # noise captures (official flags)
            for ch in CHANNELS:
                assert not q[f"{ch.lower()}_saturated"].values.any(), (name, ch)
                assert np.nanmax(q[f"{ch.lower()}_snr"].values) < 20


def test_tof_high_matches_official_on_20231218(quality):
    q = quality["imap_idex_l0_raw_20231218_v001.pkts"]
    assert q.tof_high_saturated.values.astype(int).tolist() == OFFICIAL_TOF_HIGH_20231218
    # official flags no other channel; neither do we
    for ch in CHANNELS[1:]:
        assert not q[f"{ch.lower()}_saturated"].values.any(), ch
    sat = q.tof_high_saturated.values
    assert (q.tof_high_saturated_samples.values[sat] >= 3).all()
    assert (q.tof_high_saturation_start.values[sat] > -0.05).all()  # at or after the trigger
    assert (q.tof_high_snr.values[sat] > 100).all()


def test_lab_capture_flat_top(l0_dir):
    from idexdask.io.trc import read_trc

    if not TRC_DIR.is_dir():
        pytest.fail(f"no scope captures under {TRC_DIR}")
    ds = read_trc(TRC_DIR)
    q = signal_quality(ds)
    assert (q.quality_status.values == QualityStatus.OK).all()
    # impact 6 TOF_Low sits at -0.3738 V for 71 samples: a clipped flat top, which
    # the flat-top detector finds on its own and the scope's flag confirms
    impact = ds.impact_number.values.tolist()
    i6 = impact.index(6)
    assert ds.channel_clipped.sel(channel="TOF_Low").values.tolist() == [
        i == i6 for i in range(len(impact))
    ]
    q_flat_only = signal_quality(ds.drop_vars("channel_clipped"))
    assert q_flat_only.tof_low_saturated.values.tolist() == [i == i6 for i in range(len(impact))]
    assert q.tof_low_saturated.values.tolist() == [i == i6 for i in range(len(impact))]
    assert q.tof_low_saturated_samples.values[i6] >= 50
    for ch in ("tof_high", "qd_1", "qd_2"):
        assert not q[f"{ch}_saturated"].values.any()
