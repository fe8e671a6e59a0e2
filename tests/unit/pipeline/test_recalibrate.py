"""The campaign calibration step's reads (pipeline.recalibrate): only what it needs."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import xarray as xr

from idexdask.composition.targeted import searched_columns
from idexdask.pipeline.recalibrate import _open, _span_events, contiguous_spans
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
    columns = searched_columns(time, low, high)
    rows = np.asarray(time.values)
    for row in rows:
        if columns.start:
            assert row[columns.start - 1] < low
        assert not row[columns.stop] <= high  # above high, or NaN
    # exact to 256 samples either side: ~2,500 samples searched, a few hundred more read
    assert columns.stop - columns.start < 2_500 + 3 * 256 + 500
    shared = xr.DataArray(rows[0], dims=("i",))
    one = searched_columns(shared, low, high)
    assert rows[0][one.start - 1] < low < high < rows[0][one.stop]
    assert searched_columns(shared, 200.0, 300.0) == slice(n, n)  # beyond the record


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

    assert _span_events(Client(1), 24, 512, 8) == 24  # one task per worker: 3 chunks
    assert _span_events(Client(2), 20, 512, 8) == 16  # 10 per task -> 2 chunks
    assert _span_events(Client(2), 300, 512, 8) == 152  # 150 -> 19 chunks
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


def test_rows_read_from_chunk_files_equal_xarray(tmp_path):
    """The step's direct chunk reads give xarray's values (floats with NaN, ints,
    bools, strings, rows never written); CF-scaled arrays are left to xarray."""
    from idexdask.pipeline.chunk_reads import read_chunks as _read_chunks
    from idexdask.pipeline.recalibrate import _rows

    path = str(tmp_path / "s.zarr")
    rng = np.random.default_rng(3)
    values = rng.normal(size=(10, 3))
    values[2, 1] = np.nan
    ds = xr.Dataset({
        "f": (("epoch", "k"), values, {"units": "us"}),
        "i": (("epoch",), np.arange(10, dtype=np.int8) - 5),
        "b": (("epoch", "k"), rng.random((10, 3)) > 0.5),
        "s": (("epoch",), np.array(["", "Mg", "Fe²⁺", "x" * 30, "a"] * 2, dtype=object)),
        "coded": (("epoch",), np.linspace(0.0, 1.0, 10)),
    }, coords={"epoch": np.arange(10)})
    encoding = {name: {"chunks": (4, 3)[:ds[name].ndim]} for name in ("f", "i", "b", "s")}
    encoding["coded"] = {"chunks": (4,), "dtype": "int16", "scale_factor": 0.01}
    ds.to_zarr(path, consolidated=False, zarr_format=3, encoding=encoding)
    # rows 8-9 never written: their chunk file is gone, they read as the fill value
    for name in ("f", "i", "b", "s"):  # xarray's chunk keys: c/<row chunk>[/<column chunk>]
        last = tmp_path / "s.zarr" / name / "c" / "2"
        shutil.rmtree(last) if last.is_dir() else last.unlink()
    opened = _open(path)
    names = ["f", "i", "b", "s", "coded"]
    regions = [(1, 3), (3, 6), (7, 10)]  # two runs: 1-6 and 7-10
    assert _read_chunks(path, "coded", [(0, 1)]) is None
    assert all(_read_chunks(path, name, [(0, 1)]) is not None for name in names[:4])
    direct = _rows(opened, names, regions, path)
    through_xarray = _rows(opened, names, regions)
    for name in names:
        a, b = direct[name].values, through_xarray[name].values
        assert direct[name].dims == through_xarray[name].dims
        if name == "s":
            assert [str(v) for v in a] == [str(v) for v in b]
        else:
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
    assert np.isnan(direct["f"].values[-2:]).all() and (direct["i"].values[-2:] == 0).all()
    assert direct["f"].attrs["units"] == "us"


@pytest.mark.parametrize("compressed", [False, True])
def test_column_windows_read_from_chunk_files_equal_xarray(tmp_path, compressed):
    """A window of columns of rows of an array chunked along both axes (the
    merged spectrum) reads as xarray reads it: float32 with NaN (its NaN
    ``_FillValue`` written as a float64), windows across chunk edges, to the
    array's end (a partial last chunk) and empty; chunks never written read as
    NaN.  Uncompressed chunks are read row by row from the file, compressed
    ones decoded whole."""
    from idexdask.pipeline.chunk_reads import read_chunks as _read_chunks

    path = str(tmp_path / "s.zarr")
    rng = np.random.default_rng(4)
    values = rng.normal(size=(10, 23)).astype(np.float32)
    values[2, 7] = np.nan
    ds = xr.Dataset({"m": (("epoch", "sample"), values, {"units": "V"})},
                    coords={"epoch": np.arange(10)})
    encoding = {"m": {"chunks": (4, 5), "_FillValue": np.nan}}
    if not compressed:
        encoding["m"]["compressors"] = None
    ds.to_zarr(path, consolidated=False, zarr_format=3, encoding=encoding)
    chunk_files = sorted((tmp_path / "s.zarr" / "m" / "c").rglob("*"))
    (tmp_path / "s.zarr" / "m" / "c" / "1" / "2").unlink()  # rows 4-7, columns 10-14
    opened = _open(path)
    for runs in ([(0, 10)], [(1, 3), (5, 9)]):
        for columns in (slice(3, 12), slice(10, 15), slice(18, 23), slice(0, 23), slice(6, 6)):
            direct = _read_chunks(path, "m", runs, columns)
            assert direct is not None and direct.dims == ("epoch", "sample")
            expected = np.concatenate(
                [opened["m"].isel(epoch=slice(a, b), sample=columns).values for a, b in runs])
            assert direct.values.dtype == expected.dtype == np.float32
            np.testing.assert_array_equal(direct.values, expected)
    whole = _read_chunks(path, "m", [(0, 10)], slice(0, 23)).values
    assert np.isnan(whole[4:8, 10:15]).all() and np.isnan(whole[2, 7])
    assert np.isfinite(np.delete(whole[4:8], np.s_[10:15], axis=1)).all()
    assert len(chunk_files) > 10  # chunked along both axes
    assert _read_chunks(path, "m", [(0, 10)], slice(0, 23, 2)) is None  # a step: xarray's
