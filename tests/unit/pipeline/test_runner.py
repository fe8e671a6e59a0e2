"""pipeline/runner.py: what a run reports, resumes and journals (a real embedded cluster)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from idexdask.config import load_config
from idexdask.errors import StoreError
from idexdask.packets.reader import read_l0
from idexdask.pipeline.cluster import ClusterOptions
from idexdask.pipeline.export import open_campaign
from idexdask.pipeline.manifest import Manifest
from idexdask.pipeline.runner import (
    Progress,
    RunSummary,
    config_hash,
    done_units,
    run_campaign,
    store_status,
)
from idexdask.simulate import write_campaign

CONFIG = load_config({"pipeline": {"analyze": False, "batch_events": 3, "chunk_events": 3},
                      "export": {"formats": []}})
ONE_WORKER = ClusterOptions(workers=1, threads_per_worker=1, memory_limit="0", dashboard=":0")


def test_config_hash_follows_the_product_sections_only():
    base = config_hash(CONFIG)
    assert base == config_hash(load_config({"pipeline": {"analyze": False, "batch_events": 3,
                                                         "chunk_events": 3},
                                            "export": {"formats": []}}))
    # where and how the work runs: no new products
    assert config_hash({**CONFIG, "cluster": {**CONFIG["cluster"], "workers": 7}}) == base
    assert config_hash({**CONFIG, "export": {"formats": ["cdf"]}}) == base
    fitting = {**CONFIG["analysis"], "fitting": {**CONFIG["analysis"]["fitting"],
                                                 "device": "gpu"}}
    assert config_hash({**CONFIG, "analysis": fitting}) == base
    # whether the analysis runs, and what it computes: new products
    analyzing = {**CONFIG, "pipeline": {**CONFIG["pipeline"], "analyze": True}}
    assert config_hash(analyzing) != base
    other = {**CONFIG, "analysis": {**CONFIG["analysis"], "some_new_key": 1}}
    assert config_hash(other) != base


def test_progress_and_summary_arithmetic():
    progress = Progress(events_done=30, events_total=100, events_this_run=20, units_done=2,
                        units_todo=8, units_failed=0, elapsed_s=4.0)
    assert progress.rate == 5.0 and progress.eta_s == 14.0
    idle = Progress(0, 100, 0, 0, 8, 0, 0.0)
    assert idle.rate == 0.0 and idle.eta_s is None
    assert RunSummary(store="s").exit_code == 0
    failed = RunSummary(store="s", failures=[{"uid": "u", "input": "i", "reason": "r",
                                              "n_events": 1}])
    assert failed.exit_code == 3


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    root = tmp_path_factory.mktemp("runner")
    inputs = [root / "a.pkts", root / "b.pkts"]
    write_campaign(inputs[0], 4, compress=False, seed=21)
    write_campaign(inputs[1], 3, compress=True, seed=22)
    store = root / "store.zarr"
    summary = run_campaign(inputs, store, CONFIG, cluster=ONE_WORKER)
    return inputs, store, summary


def test_a_run_stores_every_event_and_reports_it(campaign):
    inputs, store, summary = campaign
    assert (summary.events_total, summary.events_done, summary.events_this_run) == (7, 7, 7)
    # units of 3 events, cut at the store's chunks of 3 rows: a: 0-3, 3-4; b: 4-6, 6-7
    assert summary.units_total == summary.units_done == 4
    assert (summary.state, summary.exit_code, summary.failures) == ("finished", 0, [])
    stored = open_campaign(store, dask=False)
    expected = np.concatenate([read_l0(p)["epoch"].values for p in inputs])
    np.testing.assert_array_equal(stored["epoch"].values, expected)
    assert stored["input_index"].values.tolist() == [0] * 4 + [1] * 3
    status = store_status(store)
    assert (status.state, status.events_done, status.units_done) == ("finished", 7, 4)
    listed, units = done_units(store)
    assert listed == [str(p) for p in inputs]
    assert sorted(tuple(u["region"]) for u in units) == [(0, 3), (3, 4), (4, 6), (6, 7)]


def test_a_second_run_resumes_and_redoes_nothing(campaign):
    inputs, store, _ = campaign
    again = run_campaign(inputs, store, CONFIG, cluster=ONE_WORKER)
    assert (again.events_this_run, again.units_skipped, again.events_done) == (0, 4, 7)
    assert again.state == "finished"


def test_a_run_that_died_reads_as_interrupted(campaign, tmp_path):
    """The journal of a run whose process is gone, without its run_end record."""
    _, store, _ = campaign
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    Manifest(store).append({"record": "run_start", "run_id": "ghost", "pid": int(dead.stdout),
                            "host": socket.gethostname(), "time": "2026-01-01T00:00:00+00:00"})
    status = store_status(store)
    assert status.state == "interrupted"
    assert status.events_done == 7 and status.events_this_run == 0
    Manifest(store).append({"record": "run_start", "run_id": "live", "pid": os.getpid(),
                            "host": socket.gethostname(), "time": "2026-01-01T00:00:00+00:00"})
    assert store_status(store).state == "running"


def test_status_of_what_is_not_a_store_is_an_error(tmp_path):
    with pytest.raises(StoreError, match="not a campaign store"):
        store_status(tmp_path)
    with pytest.raises(StoreError, match="not a campaign store"):
        done_units(tmp_path)


def test_the_store_records_its_inputs_and_configuration(campaign):
    import zarr

    inputs, store, _ = campaign
    meta = json.loads(zarr.open_group(str(store), mode="r").attrs["idexdask_pipeline"])
    assert meta["n_events"] == 7
    assert meta["config_hash"] == config_hash(CONFIG)
