"""The store's schema: what a worker sends the client to lay a store out."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import xarray as xr

from idexdask.adccodes import code_encoding
from idexdask.pipeline.store import StoreSchema, chunk_rows, initialise_store
from idexdask.pipeline.tasks import Processed, schema_task
from idexdask.pipeline.units import ProcessedUnits

N_SAMPLES = 100_000


def _events(n: int = 3) -> xr.Dataset:
    """Events with a large per-sample waveform (kept as codes), small products, strings."""
    rng = np.random.default_rng(0)
    codes = rng.integers(-2000, 2000, (n, N_SAMPLES)).astype(np.float64)
    wave = xr.Variable(("epoch", "sample"), (codes * 0.5 - 3.0).astype(np.float32),
                       attrs={"units": "V"}, encoding=code_encoding(0.5, -3.0))
    data = {
        "TOF_High": wave,
        "tof_combined": (("epoch", "sample"), rng.normal(size=(n, N_SAMPLES)).astype(np.float32)),
        "mass": ("epoch", rng.normal(size=n), {"units": "kg"}),
        "label": ("epoch", np.array(["Mg", "", "Fe"][:n], dtype=object)),
        "gain": ("channel", np.array([1.5, 2.5])),
    }
    coords = {"epoch": ("epoch", np.arange(n, dtype=np.int64) + 11),
              "channel": ("channel", np.array([1, 2]))}
    return xr.Dataset(data, coords=coords, attrs={"source": "test"})


def test_schema_sends_no_samples_and_lays_out_the_same_store(tmp_path: Path) -> None:
    events = _events()
    schema = schema_task(Processed(ProcessedUnits(events), 0.0))
    assert isinstance(schema, StoreSchema)
    # the per-sample arrays of one event are 800 kB; the schema is their layout
    assert len(pickle.dumps(schema, protocol=pickle.HIGHEST_PROTOCOL)) < 20_000
    template = schema.template()
    first = events.isel(epoch=slice(0, 1))
    for name, variable in first.variables.items():
        got = template.variables[name]
        assert (got.dims, got.shape, got.dtype) == (variable.dims, variable.shape,
                                                     variable.dtype), name
        assert got.attrs == variable.attrs and got.encoding == variable.encoding, name
    assert set(template.coords) == set(first.coords)
    assert template.attrs == first.attrs
    # small variables keep their values (the epoch of the first event, the labels)
    assert template["epoch"].values.tolist() == [11]
    assert template["label"].values.tolist() == ["Mg"]
    np.testing.assert_array_equal(template["gain"].values, [1.5, 2.5])
    assert chunk_rows(template, 64) == chunk_rows(first, 64)
    # the same store as laid out from the whole first event
    stores = []
    for label, source in (("schema", template), ("event", first)):
        path = tmp_path / f"{label}.zarr"
        initialise_store(path, source, 5, rows=2, compressor="lz4-bitshuffle-f32", level=3,
                         meta={"test": 1})
        stores.append({str(p.relative_to(path)): p.read_bytes()
                       for p in sorted(path.rglob("*")) if p.is_file()})
    assert stores[0] == stores[1]


def test_schema_of_a_pack_that_failed_is_the_reason() -> None:
    failed = ProcessedUnits(None, failures={"u0": "bad bytes", "u1": "short file"})
    assert schema_task(Processed(failed, 0.0)) == "bad bytes; short file"
