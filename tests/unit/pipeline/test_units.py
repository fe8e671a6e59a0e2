"""pipeline/units.py: planned units -> one storable event dataset per pack."""

from __future__ import annotations

import dataclasses
import threading

import distributed
import numpy as np
import pytest
import xarray as xr

from idexdask.analysis.tof import MergeBuffers
from idexdask.config import load_config
from idexdask.errors import IdexDaskError
from idexdask.packets.reader import read_l0
from idexdask.pipeline.plan import plan_inputs
from idexdask.pipeline.units import (
    LEVEL_ATTR,
    AnalysisBuffers,
    normalise_for_store,
    process_unit,
    process_units,
    worker_buffers,
)
from idexdask.simulate import write_campaign

CONFIG = load_config({"pipeline": {"analyze": False, "batch_events": 3}})


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """Two simulated inputs of 5 and 4 events, planned in units of 3 events."""
    root = tmp_path_factory.mktemp("units")
    write_campaign(root / "a.pkts", 5, compress=False, seed=11)
    write_campaign(root / "b.pkts", 4, compress=True, seed=12)
    plan = plan_inputs([root / "a.pkts", root / "b.pkts"], 3)
    return root, plan


def test_a_pack_of_units_is_their_events_in_order(planned):
    root, plan = planned
    assert [u.n_events for u in plan.units] == [3, 2, 3, 1]
    processed = process_units(plan.units, CONFIG)
    assert processed.failures == {}
    assert [u.uid for u in processed.done] == [u.uid for u in plan.units]
    events = processed.dataset
    expected = xr.concat([read_l0(root / "a.pkts"), read_l0(root / "b.pkts")], "epoch")
    np.testing.assert_array_equal(events["epoch"].values, expected["epoch"].values)
    np.testing.assert_array_equal(events["TOF_High"].values, expected["TOF_High"].values)
    assert events["input_index"].dtype == np.int32
    assert events["input_index"].values.tolist() == [0] * 5 + [1] * 4
    # the reader's variables are tagged l1a; without analysis nothing is l2a
    assert {v.attrs.get(LEVEL_ATTR) for v in events.data_vars.values()
            if v.name != "input_index"} == {"l1a"}
    # each decoded unit's scalar attributes, for the manifest; no overrides
    assert set(processed.attrs) == {u.uid for u in plan.units}
    assert all(isinstance(v, str | int | float) for a in processed.attrs.values()
               for v in a.values())
    assert set(processed.overrides_hash.values()) == {""}


def test_a_unit_that_fails_fails_alone(planned, tmp_path):
    root, plan = planned
    good, miscounted, *_ = plan.units
    miscounted = dataclasses.replace(miscounted, n_events=miscounted.n_events + 1)
    missing = dataclasses.replace(plan.units[2], path=str(tmp_path / "gone.pkts"))
    processed = process_units([good, miscounted, missing], CONFIG)
    assert [u.uid for u in processed.done] == [good.uid]
    assert processed.dataset.sizes["epoch"] == good.n_events
    assert "plan counted 3" in processed.failures[miscounted.uid]
    assert missing.uid in processed.failures
    with pytest.raises(IdexDaskError, match="plan counted"):
        process_unit(miscounted, CONFIG)


def test_process_unit_is_a_pack_of_one(planned):
    _, plan = planned
    one = process_unit(plan.units[1], CONFIG)
    pack = process_units(plan.units[:2], CONFIG).dataset
    assert one.sizes["epoch"] == 2
    part = pack.isel(epoch=slice(3, 5))
    # the same variables; a pack keeps only the dataset attributes its units share
    assert "packets" in one.attrs and "packets" not in part.attrs
    xr.testing.assert_identical(one.drop_attrs(deep=False), part.drop_attrs(deep=False))


def test_normalise_for_store_makes_strings_variable_length():
    events = xr.Dataset(
        {"label": ("epoch", np.array(["Mg", "Fe"], dtype="U2")),
         "code": ("epoch", np.array([b"ab", b"c"], dtype="S2")),
         "x": ("epoch", np.array([1.0, 2.0]), {LEVEL_ATTR: "l1a"}),
         "y": ("epoch", np.array([3.0, 4.0]))},
        coords={"epoch": np.array([10, 20], dtype=np.int64)})
    stored = normalise_for_store(events, np.array([4, 5]))
    assert stored["label"].dtype == object and stored["label"].values.tolist() == ["Mg", "Fe"]
    assert stored["code"].dtype == object
    assert stored["input_index"].values.tolist() == [4, 5]
    assert stored["x"].attrs[LEVEL_ATTR] == "l1a"
    assert stored["y"].attrs[LEVEL_ATTR] == "l2a"  # untagged beside tagged: the analysis's
    single = normalise_for_store(events.drop_vars("x"), 7)
    assert single["input_index"].values.tolist() == [7, 7]
    assert single["y"].attrs[LEVEL_ATTR] == "l1a"  # nothing tagged: a reader's output


def test_normalise_for_store_keeps_formula_axes_lazy(monkeypatch):
    # a uniform axis given by formula is stored as its terms: normalising never
    # materialises it (4 MB per event for a scope axis), and the terms carry it
    from idexdask.timeaxis import AxisTerms, UniformAxisArray, expand_axes, uniform_axis_variable

    terms = AxisTerms.for_axis("time_x")
    start, step, count = np.array([-1e-6, -2e-6]), np.array([1e-9, 1e-9]), np.array([5, 4])
    axis = uniform_axis_variable(("epoch", "time_x_index"), start, step, count, 5, scale=1e6,
                                 terms=terms, attrs={"units": "us"})
    expected = axis.values.copy()
    events = xr.Dataset(
        {"time_x": axis, terms.start: ("epoch", start), terms.step: ("epoch", step),
         terms.count: ("epoch", count), "w": (("epoch", "time_x_index"), np.zeros((2, 5)))},
        coords={"epoch": np.array([10, 20], dtype=np.int64)})

    def refuse(self, key):
        raise AssertionError("formula axis materialised")

    monkeypatch.setattr(UniformAxisArray, "compute", refuse)
    stored = normalise_for_store(events, 0)
    assert "time_x" not in stored.variables
    monkeypatch.undo()
    back = expand_axes(stored)
    np.testing.assert_array_equal(back["time_x"].values, expected)



def test_each_thread_of_a_worker_has_merge_buffers_of_its_own():
    kept = AnalysisBuffers()
    mine = kept.merge()
    other = []
    thread = threading.Thread(target=lambda: other.append(kept.merge()))
    thread.start()
    thread.join()
    assert kept.merge() is mine and other[0] is not mine and isinstance(mine, MergeBuffers)


def test_a_worker_keeps_the_merge_buffers_between_packs():
    assert worker_buffers() is None  # outside a worker: each analysis allocates afresh
    with distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=1,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        kept = client.submit(worker_buffers, pure=False).result()
        again = client.submit(worker_buffers, pure=False).result()
        assert isinstance(kept, MergeBuffers) and kept is again  # one in-process thread
