"""Issue 19 on the real files: honest noise floors, line fits, lab calibration."""

from __future__ import annotations

import numpy as np
import pytest

import idexdask
from idexdask.analysis import analyze
from idexdask.analysis.impact import ImpactStatus

GROUND_TEST = ("non_compressed_2023_102_14_22_26.pkts", "compressed_2023_102_14_24_55.pkts")


@pytest.mark.parametrize("name", GROUND_TEST)
def test_quiet_ground_test_channels_are_no_signal(name, l0_dir):
    """The 2023-04-12 target and ion-grid channels are pure noise (3 DN peak to
    peak, quantised): a positive noise and `no_signal`, never `invalid_input`."""
    out = analyze(idexdask.read_l0(l0_dir / name))
    for ch in ("target_high", "target_low", "ion_grid"):
        assert np.all(out[f"{ch}_noise"].values > 0), ch
        assert np.all(out[f"{ch}_fit_status"].values == ImpactStatus.NO_SIGNAL), ch
