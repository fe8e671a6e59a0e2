"""`idexdask submit --gpu` end to end: a LocalCUDACluster, the fits through CuPy.

Marked ``gpu``: deselected by ``make test`` (no GPU in CI), run by ``make test-gpu``
on a machine with an NVIDIA GPU and the ``gpu`` extra.
"""

from __future__ import annotations

import numpy as np
import pytest

from idexdask.config import load_config
from idexdask.pipeline.cluster import ClusterOptions
from idexdask.pipeline.export import open_campaign
from idexdask.pipeline.ragged import peaks_to_event_major
from idexdask.pipeline.runner import run_campaign
from idexdask.simulate import simulate_events, write_campaign
from idexdask.workflow import analyze

pytestmark = pytest.mark.gpu


def test_gpu_campaign_matches_cpu_analysis(tmp_path):
    import cupy

    assert cupy.cuda.runtime.getDeviceCount() >= 1
    path = tmp_path / "sim.pkts"
    write_campaign(path, 60, compress=False, seed=9)
    config = load_config({"cluster": {"dashboard": ""}, "pipeline": {"batch_events": 20}})
    store = tmp_path / "gpu.zarr"
    summary = run_campaign(
        [path], store, config, cluster=ClusterOptions(workers=1, dashboard="", gpu=True)
    )
    assert summary.failures == [] and summary.events_done == 60
    stored = open_campaign(store).load()

    from idexdask import read_l0

    cpu = peaks_to_event_major(
        analyze(read_l0(path), config), int(config["pipeline"]["max_peaks_per_event"])
    )
    # the same lines were found (detection runs on the CPU in both)
    np.testing.assert_array_equal(stored["peak_count"].values, cpu["peak_count"].values)
    both = (stored["peak_status"].values == 0) & (cpu["peak_status"].values == 0)
    assert both.sum() > 50
    # converged fits agree far inside their uncertainties
    diff = np.abs(stored["peak_center"].values[both] - cpu["peak_center"].values[both])
    assert np.all(diff <= 1e-3 * cpu["peak_center_err"].values[both])
    ok = (stored["target_low_fit_status"].values == 0) & (cpu["target_low_fit_status"].values == 0)
    np.testing.assert_allclose(
        stored["target_low_impact_charge"].values[ok],
        cpu["target_low_impact_charge"].values[ok],
        rtol=1e-6,
    )


def test_cupy_fits_of_simulated_events_match_numpy():
    events = simulate_events(24, seed=4).events
    cpu = analyze(events)
    gpu = analyze(events, {"analysis": {"fitting": {"device": "gpu"}}})
    np.testing.assert_array_equal(gpu.peak_event.values, cpu.peak_event.values)
    both = (gpu.peak_status.values == 0) & (cpu.peak_status.values == 0)
    assert both.sum() > 20
    diff = np.abs(gpu.peak_area.values[both] - cpu.peak_area.values[both])
    assert np.all(diff <= 1e-3 * cpu.peak_area_err.values[both])
