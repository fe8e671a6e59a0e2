"""The decoder on the real IDEX L0 files, against the official pipeline and the IDEX team."""

from __future__ import annotations

import json

import numpy as np
import pytest

from idexdask import read_l0
from idexdask.packets.layout import CHANNELS

from ..conftest import REAL_L0_FILES

OFFICIAL_HIGH_SAMPLES = 8189  # the official pipeline drops the last 3 real samples


@pytest.fixture(scope="module")
def decoded(l0_dir):
    return {f.name: read_l0(f) for f in REAL_L0_FILES}


@pytest.mark.oracle
@pytest.mark.parametrize("file", REAL_L0_FILES, ids=lambda f: f.name)
def test_same_events_and_samples_as_official(file, decoded, official_l1a):
    ours = decoded[file.name]
    with np.load(official_l1a[file.name]) as npz:
        theirs = dict(npz)
    n_official = theirs["epoch"].size if "epoch" in theirs else 0
    assert ours.sizes["epoch"] == n_official
    if n_official == 0:
        return
    np.testing.assert_allclose(ours["epoch"].values, theirs["epoch"], rtol=0, atol=1_000)
    for spec in CHANNELS:
        mine = ours[spec.name].values
        if spec.high_rate:
            assert mine.shape[1] == 8192
            mine = mine[:, :OFFICIAL_HIGH_SAMPLES]
        np.testing.assert_array_equal(mine, theirs[spec.name], err_msg=spec.name)
    for name in ("time_high_sample_rate", "time_low_sample_rate"):
        mine = ours[name].values[:, : theirs[name].shape[1]]
        np.testing.assert_allclose(mine, theirs[name], rtol=0, atol=1e-6, err_msg=name)
    shared = [k for k in theirs if k in ours.data_vars and ours[k].dims == ("epoch",)]
    assert len(shared) > 90  # every header field of the official product is ours too
    for name in shared:
        np.testing.assert_array_equal(ours[name].values, theirs[name], err_msg=name)
    assert not ours["quality_flags"].values.any()


def test_event_14_matches_the_idex_team_waveform(l0_dir, decoded):
    reference = np.loadtxt(l0_dir / "impact_14_tof_high_data.txt", dtype=np.int64)
    assert reference.size == OFFICIAL_HIGH_SAMPLES
    tof_high = decoded["imap_idex_l0_raw_20231218_v001.pkts"]["TOF_High"].values
    np.testing.assert_array_equal(tof_high[13, :OFFICIAL_HIGH_SAMPLES], reference)


def test_compressed_and_uncompressed_files_decode_identically(decoded):
    plain = decoded["non_compressed_2023_102_14_22_26.pkts"]
    rice = decoded["compressed_2023_102_14_24_55.pkts"]
    assert plain.sizes["epoch"] == rice.sizes["epoch"] == 4
    assert rice["compressed"].values.all() and not plain["compressed"].values.any()
    for spec in CHANNELS:  # all 8192 high-rate samples, the last three included
        np.testing.assert_array_equal(plain[spec.name].values, rice[spec.name].values)
    for name in ("time_high_sample_rate", "time_low_sample_rate"):
        np.testing.assert_array_equal(plain[name].values, rice[name].values)


def test_last_high_rate_samples_continue_the_baseline(decoded):
    """The 3 samples the official pipeline drops are real: they sit on the baseline."""
    for ds in decoded.values():
        for spec in CHANNELS[:3]:
            values = ds[spec.name].values.astype(float)
            if values.size == 0:
                continue
            tail = values[:, -3:]
            baseline = np.median(values[:, 7000:8189], axis=1, keepdims=True)
            assert np.all(np.abs(tail - baseline) < 40), spec.name


def test_non_science_apids_are_counted(decoded):
    counts = json.loads(decoded["imap_idex_l0_raw_20231218_v001.pkts"].attrs["apid_counts"])
    assert counts == {"1376": 262, "1377": 10, "1413": 12, "1414": 25, "1418": 3, "1424": 182}
    msg = decoded["imap_idex_l0_raw_20250108_v001.pkts"]
    assert msg.sizes["epoch"] == 0 and json.loads(msg.attrs["apid_counts"]) == {"1418": 28}
