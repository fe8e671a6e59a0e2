"""HDF5 and CDF exports read back (h5py, cdflib) equal the store."""

from __future__ import annotations

import cdflib
import h5py
import numpy as np
import pytest

from idexdask.config import load_config
from idexdask.pipeline.export import export_store, open_campaign
from idexdask.pipeline.manifest import Manifest
from idexdask.pipeline.plan import plan_inputs
from idexdask.pipeline.runner import _write_plan, config_hash
from idexdask.pipeline.store import chunk_rows, initialise_store, write_region
from idexdask.pipeline.units import process_unit
from idexdask.simulate import write_campaign


@pytest.fixture(scope="module")
def store(tmp_path_factory, l0_dir):
    """A campaign store built in-process (the same steps as the cluster tasks)."""
    root = tmp_path_factory.mktemp("export")
    write_campaign(root / "sim.pkts", 12, compress=True, seed=4)
    inputs = [root / "sim.pkts", l0_dir / "imap_idex_l0_raw_20231218_v001.pkts"]
    config = load_config({"pipeline": {"analyze": False, "batch_events": 5}})
    plan = plan_inputs(inputs, 5)
    outputs = [process_unit(u, config) for u in plan.units]
    path = root / "store.zarr"
    rows = chunk_rows(outputs[0], 4)
    chash = config_hash(config)
    initialise_store(path, outputs[0].isel(epoch=slice(0, 1)), plan.n_events, rows=rows,
                     meta={"layout": [], "n_events": plan.n_events, "config_hash": chash,
                           "rows": rows})
    _write_plan(path, plan, chash)
    manifest = Manifest(path)
    for unit, dataset in zip(plan.units, outputs, strict=True):
        write_region(path, dataset, unit.region, rows=rows, n_events=plan.n_events)
        manifest.append({"record": "unit", "uid": unit.uid, "status": "done",
                         "input_hash": unit.input_hash, "config_hash": chash,
                         "region": list(unit.region), "n_events": unit.n_events,
                         "run_id": "x", "input_index": unit.input_index})
    return path, plan


def _rows(stored, index):
    return np.flatnonzero(stored["input_index"].values == index)


def test_hdf5_roundtrip(store, tmp_path):
    path, plan = store
    files = export_store(path, ["hdf5"], tmp_path)
    assert [f.name for f in files] == ["sim.h5", "imap_idex_l0_raw_20231218_v001.h5"]
    stored = open_campaign(path).load()
    for index, file in enumerate(files):
        rows = _rows(stored, index)
        with h5py.File(file, "r") as h5:
            for name, variable in stored.variables.items():
                if "epoch" not in variable.dims:
                    continue
                assert np.array_equal(h5[name][...], variable.values[rows]), name
            assert list(h5["TOF_High"].attrs["DIMENSION_NAMES"]) == [
                "epoch", "time_high_sample_rate_index"]
            assert h5["TOF_High"].attrs["units"] == "DN"


def test_cdf_roundtrip_and_istp(store, tmp_path):
    path, plan = store
    files = export_store(path, ["cdf"], tmp_path)
    stored = open_campaign(path).load()
    for index, file in enumerate(files):
        rows = _rows(stored, index)
        cdf = cdflib.CDF(str(file))
        info = cdf.cdf_info()
        globals_ = cdf.globalattsget()
        for key in ("Project", "Source_name", "Discipline", "Data_type", "Descriptor",
                    "Data_version", "Logical_file_id", "PI_name", "PI_affiliation", "TEXT",
                    "Instrument_type", "Mission_group", "Logical_source",
                    "Logical_source_description"):
            assert key in globals_, key
        assert cdf.varinq("epoch").Data_Type_Description == "CDF_TIME_TT2000"
        assert np.array_equal(cdf.varget("epoch"), stored["epoch"].values[rows])
        for name in ("TOF_High", "Target_Low", "Ion_Grid", "quality_flags",
                     "time_high_sample_rate", "idx__txhdrevtnum"):
            assert np.array_equal(cdf.varget(name), stored[name].values[rows]), name
        attrs = cdf.varattsget("TOF_High")
        for key in ("UNITS", "FILLVAL", "VALIDMIN", "VALIDMAX", "DEPEND_0", "DEPEND_1",
                    "LABL_PTR_1", "CATDESC", "FIELDNAM", "VAR_TYPE", "FORMAT", "DISPLAY_TYPE"):
            assert key in attrs, key
        assert attrs["DEPEND_0"] == "epoch" and attrs["VAR_TYPE"] == "data"
        assert attrs["LABL_PTR_1"] in info.zVariables and attrs["DEPEND_1"] in info.zVariables
        assert np.array_equal(cdf.varget("compressed"), stored["compressed"].values[rows])


def test_string_products_survive_both_exports(tmp_path):
    """Zarr v3 hands strings back as numpy StringDType; both exports must keep them."""
    import xarray as xr

    from idexdask.io.cdf import write_cdf
    from idexdask.io.hdf5 import write_hdf5

    names = np.array(["forsterite", "", "albite"], dtype=np.dtypes.StringDType())
    ds = xr.Dataset(
        {
            "best_mineral": ("epoch", names),
            "mg_number": ("epoch", np.array([0.9, np.nan, 0.1])),
        },
        coords={"epoch": np.array([10, 20, 30], dtype=np.int64) * 10**18},
    )
    cdf_path = write_cdf(ds, tmp_path / "s.cdf")
    assert cdflib.CDF(str(cdf_path)).varget("best_mineral").tolist() == list(names)
    h5_path = write_hdf5(ds, tmp_path / "s.h5")
    with h5py.File(h5_path, "r") as f:
        assert [v.decode() for v in f["best_mineral"][()]] == list(names)
