"""The campaign calibration step's reads (pipeline.recalibrate): only what it needs."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from idexdask.pipeline.recalibrate import _open, _sample_columns, _span_events, contiguous_spans
from idexdask.sources.unit import Unit
from idexdask.timeaxis import AxisTerms, uniform_axis_variable


def test_sample_columns_hold_every_searched_time_and_one_sample_either_side():
    """For every row (a lab axis of 1 ns steps, one short record, one row that
    starts later), the columns start after a sample below ``low`` and end before
    a sample above ``high`` (or NaN): searchsorted finds the same samples in them."""
    n = 500_002
    start = np.array([-400e-6, -400e-6, -399.5e-6])
    axis = uniform_axis_variable(
        ("epoch", "i"), start, np.full(3, 1e-9), np.array([n, 401_000, n]), n,
        scale=1e6, terms=AxisTerms.for_axis("t"))
    time = xr.DataArray(axis)
    low, high = 1.4, 3.9
    columns = _sample_columns(time, low, high)
    rows = np.asarray(time.values)
    for row in rows:
        if columns.start:
            assert row[columns.start - 1] < low
        assert not row[columns.stop] <= high  # above high, or NaN
    # exact to 256 samples either side: ~2,500 samples searched, a few hundred more read
    assert columns.stop - columns.start < 2_500 + 3 * 256 + 500
    shared = xr.DataArray(rows[0], dims=("i",))
    one = _sample_columns(shared, low, high)
    assert rows[0][one.start - 1] < low < high < rows[0][one.stop]
    assert _sample_columns(shared, 200.0, 300.0) == slice(n, n)  # beyond the record


def test_campaign_map_spans_cover_whole_chunks():
    """Spans of 1-event units (lab impacts) end on blocks of ``max_events`` rows, a
    multiple of the chunk rows; the first span of a group that starts mid-block is
    shorter.  Events per span: rounded up to whole chunks, never above the cap."""

    def unit(a, b):
        return Unit(uid=f"u{a}", kind="lecroy_trc", path="x", input_index=0,
                    n_events=b - a, input_hash="h", region=(a, b))

    spans = contiguous_spans([unit(i, i + 1) for i in range(3, 21)], max_events=8)
    assert [(s[0].region[0], s[-1].region[1]) for s in spans] == [(3, 8), (8, 16), (16, 21)]

    class Client:  # what _span_events reads of a distributed.Client
        def __init__(self, workers):
            self.workers = workers

        def scheduler_info(self):
            return {"workers": dict.fromkeys(range(self.workers))}

    assert _span_events(Client(1), 24, 512, 8) == 8  # 6 per task -> one chunk
    assert _span_events(Client(2), 300, 512, 8) == 40  # 38 -> 5 chunks
    assert _span_events(Client(2), 300, 20, 8) == 16  # the cap, in whole chunks
    assert _span_events(Client(2), 3, 512, 512) == 512


def test_open_lists_only_the_variables_kept(tmp_path):
    """A task opens only the variables it reads, with the same values and attributes."""
    path = str(tmp_path / "s.zarr")
    ds = xr.Dataset({
        "a": (("epoch", "k"), np.arange(6.0).reshape(3, 2), {"units": "V"}),
        "b": (("epoch",), np.array([1, -1, 2], np.int8)),
        "c": (("epoch",), np.array([0.5, np.nan, 2.0]), {"long_name": "c"}),
    }, coords={"epoch": np.arange(3)})
    ds.to_zarr(path, consolidated=False, zarr_format=3)
    whole = _open(path)
    some = _open(path, lambda name: name in ("a", "epoch"))
    assert set(some.variables) == {"a", "epoch"}
    assert set(whole.variables) == {"a", "b", "c", "epoch"}
    assert some["a"].identical(whole["a"])
    with pytest.raises(KeyError):
        some["b"]
