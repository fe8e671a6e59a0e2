"""HDF5 and CDF exports read back (h5py, cdflib) equal the store."""

from __future__ import annotations

from pathlib import Path

import cdflib
import h5py
import numpy as np
import pytest

from idexdask.config import load_config
from idexdask.pipeline.export import export_store, open_campaign
from idexdask.pipeline.manifest import Manifest
from idexdask.pipeline.plan import plan_inputs
from idexdask.pipeline.region_write import write_region
from idexdask.pipeline.runner import _write_plan, config_hash
from idexdask.pipeline.store import chunk_rows, initialise_store
from idexdask.pipeline.units import process_unit
from idexdask.simulate import write_campaign


def _build_store(root, inputs, config, batch_events):
    """A campaign store built in-process (the same steps as the cluster tasks)."""
    plan = plan_inputs(inputs, batch_events)
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


@pytest.fixture(scope="module")
def store(tmp_path_factory, l0_dir):
    """Decoded L1a variables only: a simulated file and a real one."""
    root = tmp_path_factory.mktemp("export")
    write_campaign(root / "sim.pkts", 12, compress=True, seed=4)
    inputs = [root / "sim.pkts", l0_dir / "imap_idex_l0_raw_20231218_v001.pkts"]
    config = load_config({"pipeline": {"analyze": False, "batch_events": 5}})
    return _build_store(root, inputs, config, 5)


@pytest.fixture(scope="module")
def analyzed_store(tmp_path_factory):
    """With the analysis products (NaNs, string arrays, ~280 variables), two inputs."""
    root = tmp_path_factory.mktemp("export_analyzed")
    write_campaign(root / "plain.pkts", 5, compress=False, seed=7)
    write_campaign(root / "rice.pkts", 4, compress=True, seed=8)
    config = load_config({"pipeline": {"analyze": True, "batch_events": 3}})
    return _build_store(root, [root / "plain.pkts", root / "rice.pkts"], config, 3)


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
                nan_ok = variable.dtype.kind == "f"  # NaN is a stored value (fill) too
                assert np.array_equal(h5[name][...], variable.values[rows], equal_nan=nan_ok), name
            assert list(h5["TOF_High"].attrs["DIMENSION_NAMES"]) == [
                "epoch", "time_high_sample_rate_index"]
            assert h5["TOF_High"].attrs["units"] == "DN"


def _istp_problems(path) -> list[str]:
    """SpacePy's ISTP checker (ships the NASA CDF library in its wheel): an
    implementation independent of cdflib, which wrote the file."""
    from spacepy import pycdf
    from spacepy.pycdf import istp

    with pycdf.CDF(str(path)) as cdf:
        return istp.FileChecks.all(cdf, catch=False)


def _date(epoch_ns) -> str:
    parts = cdflib.cdfepoch.breakdown_tt2000(int(epoch_ns))
    return f"{int(parts[0]):04d}{int(parts[1]):02d}{int(parts[2]):02d}"


def test_cdf_roundtrip_and_istp(store, tmp_path):
    path, plan = store
    files = export_store(path, ["cdf"], tmp_path)
    stored = open_campaign(path).load()
    # decoded variables only (analyze: false): one L1a product per input, no L2a
    sim_date = _date(stored["epoch"].values[_rows(stored, 0)[0]])
    assert [f.name for f in files] == [f"imap_idex_l1a_sci_{sim_date}_v001.cdf",
                                       "imap_idex_l1a_sci_20231218_v001.cdf"]
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
        assert globals_["Logical_file_id"] == [file.stem]
        assert globals_["Logical_source"] == ["imap_idex_l1a_sci"]
        assert globals_["Data_version"] == ["001"]
        assert cdf.varinq("epoch").Data_Type_Description == "CDF_TIME_TT2000"
        assert np.array_equal(cdf.varget("epoch"), stored["epoch"].values[rows])
        for name in ("TOF_High", "Target_Low", "Ion_Grid", "quality_flags",
                     "time_high_sample_rate", "idx__txhdrevtnum"):
            assert np.array_equal(cdf.varget(name), stored[name].values[rows]), name
            assert cdf.varinq(name).Compress == 6, name  # gzip level 6, as the SDC's
        attrs = cdf.varattsget("TOF_High")
        for key in ("UNITS", "FILLVAL", "VALIDMIN", "VALIDMAX", "DEPEND_0", "DEPEND_1",
                    "LABL_PTR_1", "CATDESC", "FIELDNAM", "VAR_TYPE", "FORMAT", "DISPLAY_TYPE"):
            assert key in attrs, key
        assert attrs["DEPEND_0"] == "epoch" and attrs["VAR_TYPE"] == "data"
        assert attrs["LABL_PTR_1"] in info.zVariables and attrs["DEPEND_1"] in info.zVariables
        assert np.array_equal(cdf.varget("compressed"), stored["compressed"].values[rows])
        assert _istp_problems(file) == []


def test_same_date_inputs_get_distinct_descriptors(tmp_path):
    """Two inputs whose first events fall on one day: ``sci``, then ``sci-2``."""
    from idexdask.pipeline.export import plan_exports

    day = 756192899758080000  # 2023-12-18
    jobs = plan_exports(["a.pkts", "b.pkts", "c.pkts", "d.pkts"],
                        {0: [(0, 3)], 1: [(3, 5)], 3: [(7, 9)]},
                        {0: day, 1: day + 10**9, 3: day + 86_400 * 10**9})
    assert [j.cdf_name("l1a", "001") for j in jobs] == [
        "imap_idex_l1a_sci_20231218_v001.cdf", "imap_idex_l1a_sci-2_20231218_v001.cdf",
        "imap_idex_l1a_sci_20231219_v001.cdf"]
    assert [j.logical_source("l2a") for j in jobs] == [
        "imap_idex_l2a_sci", "imap_idex_l2a_sci-2", "imap_idex_l2a_sci"]


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


def _as_cdf_holds(values: np.ndarray) -> np.ndarray:
    """A store variable as its CDF holds it: NaN as the -1e31 fill, booleans 0/1, str."""
    if values.dtype == bool:
        return values.astype(np.uint8)
    if values.dtype.kind in "OUT":  # T: numpy StringDType (Zarr v3 strings)
        return values.astype(object).astype(str)
    if values.dtype.kind == "f":
        return np.where(np.isnan(values), values.dtype.type(-1.0e31), values)
    return values


def test_cdf_holds_every_store_variable(analyzed_store, tmp_path):
    """L1a and L2a together hold every stored variable; the lines ragged again."""
    path, _ = analyzed_store
    files = export_store(path, ["cdf"], tmp_path)
    stored = open_campaign(path).load()
    date = _date(stored["epoch"].values[0])
    # both simulated inputs start on the same day: the second is ``sci-2``
    assert [f.name for f in files] == [
        f"imap_idex_l1a_sci_{date}_v001.cdf", f"imap_idex_l2a_sci_{date}_v001.cdf",
        f"imap_idex_l1a_sci-2_{date}_v001.cdf", f"imap_idex_l2a_sci-2_{date}_v001.cdf"]
    assert any(np.isnan(v.values).any() for v in stored.data_vars.values()
               if v.dtype.kind == "f"), "the fixture should hold NaNs"
    for index in range(2):
        rows = _rows(stored, index)
        l1a, l2a = (cdflib.CDF(str(f)) for f in files[2 * index: 2 * index + 2])
        in_l1a, in_l2a = set(l1a.cdf_info().zVariables), set(l2a.cdf_info().zVariables)
        counts = stored["peak_count"].values[rows]
        line_event = l2a.varget("peak_event")
        assert np.array_equal(line_event, np.repeat(np.arange(rows.size), counts))
        assert np.array_equal(l2a.varget("peak_epoch"), stored["epoch"].values[rows][line_event])
        assert l2a.varattsget("peak_area")["DEPEND_0"] == "peak_epoch"
        used = np.arange(stored.sizes["peak_slot"])[np.newaxis, :] < counts[:, np.newaxis]
        for name, variable in stored.variables.items():
            if "epoch" not in variable.dims or name == "epoch":
                continue
            level = variable.attrs["product_level"]
            cdf = l1a if level == "l1a" else l2a
            assert name in (in_l1a if level == "l1a" else in_l2a), name
            assert name not in (in_l2a if level == "l1a" else in_l1a), name
            expected = _as_cdf_holds(variable.values[rows])
            if "peak_slot" in variable.dims:  # ragged: the used slots, event after event
                expected = expected[used]
            got = cdf.varget(name)
            assert got.shape == expected.shape, name
            assert np.array_equal(got, expected), name
            if variable.dtype.kind == "f":
                assert cdf.varattsget(name)["FILLVAL"] == -1.0e31, name
        for file in files[2 * index: 2 * index + 2]:
            assert _istp_problems(file) == [], file.name


def test_hdf5_holds_every_store_variable(analyzed_store, tmp_path):
    path, _ = analyzed_store
    files = export_store(path, ["hdf5"], tmp_path)
    stored = open_campaign(path).load()
    for index, file in enumerate(files):
        rows = _rows(stored, index)
        with h5py.File(file, "r") as h5:
            for name, variable in stored.variables.items():
                if "epoch" not in variable.dims:
                    continue
                expected, got = variable.values[rows], h5[name][...]
                if expected.dtype.kind in "OUT":
                    expected = expected.astype(object).astype(str)
                    got = np.array([v.decode() for v in got.ravel()],
                                   dtype=str).reshape(got.shape)
                assert np.array_equal(got, expected, equal_nan=expected.dtype.kind == "f"), name


def _cdf_content(path) -> dict:
    """Everything a CDF holds, by name: attribute entries with their CDF types,
    variable specifications, data (for files whose bytes may differ: cdflib's gzip
    stamps the time)."""
    cdf = cdflib.CDF(str(path))
    info = cdf.cdf_info()
    content: dict = {"variables": info.zVariables}
    for name in cdf.globalattsget():
        entries = cdf.attinq(name).max_gr_entry + 1
        content[f"global {name}"] = [(e.Data_Type, np.asarray(e.Data).tolist())
                                     for e in (cdf.attget(name, i) for i in range(entries))]
    for var in info.zVariables:
        spec = cdf.varinq(var)
        content[f"spec {var}"] = (spec.Data_Type_Description, spec.Num_Elements, spec.Rec_Vary,
                                  spec.Dim_Sizes, spec.Last_Rec)
        for att in cdf.varattsget(var):
            entry = cdf.attget(att, var)
            content[f"attr {var} {att}"] = (entry.Data_Type, np.asarray(entry.Data).tolist())
        data = cdf.varget(var)
        content[f"data {var}"] = (data.dtype.str, data.tobytes())
    return content


@pytest.mark.slow  # cdflib's own ISTP path: the slow writer the exports avoid (~10 s a file)
def test_cdf_writer_gives_cdflib_istp_checked_file(analyzed_store, tmp_path):
    """The exports' fast path writes, byte for byte, what cdflib's own ISTP path writes.

    The fast path does cdflib's NaN conversion and ISTP typing beforehand, skips its
    checker (``istp=False``) and links attribute entries in O(1); cdflib's stock
    ``xarray_to_cdf(istp=True, terminate_on_warning=True)`` also proves the dataset
    ISTP-clean (any warning raises).  Compressed, the same content.
    """
    from cdflib.xarray import xarray_to_cdf

    from idexdask.io.cdf import istp_dataset, load_cdf_attributes, write_istp

    path, _ = analyzed_store
    stored = open_campaign(path, dask=False).load()
    events = stored.isel(epoch=_rows(stored, 0))
    events.attrs = {"source": "plain.pkts"}
    istp = istp_dataset(events, load_cdf_attributes())
    files = {name: tmp_path / f"{name}.cdf" for name in ("fast", "checked", "stock", "fast6",
                                                         "stock6")}
    write_istp(istp, files["fast"])
    write_istp(istp, files["checked"], check=True)  # cdflib's checks, our attribute linking
    xarray_to_cdf(istp, str(files["stock"]), istp=True, terminate_on_warning=True)
    assert files["fast"].read_bytes() == files["stock"].read_bytes()
    assert files["checked"].read_bytes() == files["stock"].read_bytes()
    write_istp(istp, files["fast6"], compression=6)
    xarray_to_cdf(istp, str(files["stock6"]), istp=True, terminate_on_warning=True,
                  compression=6)
    assert cdflib.CDF(str(files["fast6"])).varinq("TOF_High").Compress == 6
    assert _cdf_content(files["fast6"]) == _cdf_content(files["stock6"])


def test_exports_are_reproducible(analyzed_store, tmp_path):
    """Zarr lists arrays in no fixed order; the exports sort them: same store, same bytes."""
    path, _ = analyzed_store
    first = export_store(path, ["cdf"], tmp_path / "a")
    second = export_store(path, ["cdf"], tmp_path / "b")
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()
    in_store = set(open_campaign(path).data_vars)
    names = [n for n in cdflib.CDF(str(first[0])).cdf_info().zVariables if n in in_store]
    assert names == sorted(names)


def test_campaign_exports_start_when_an_input_and_those_before_it_are_done(store, tmp_path):
    """The runner reports each journalled unit; an input's files are submitted once
    its units and those of every input before it are finished (its name depends on
    their dates), and are the files export_store writes."""
    from distributed import Client

    from idexdask.pipeline.export import CampaignExports

    path, plan = store
    first = [u for u in plan.units if u.input_index == 0]
    second = [u for u in plan.units if u.input_index == 1]
    assert len(first) > 1 and second
    with Client(processes=False, n_workers=1, threads_per_worker=1,
                dashboard_address=":0") as client:
        exports = CampaignExports.start(client, path, plan, plan.units,
                                        {"formats": ["cdf", "hdf5"], "cdf_compression": 6},
                                        tmp_path / "streamed")
        assert exports.futures == []
        for unit in second:  # the later input finishes first: it waits for the first
            exports.unit_finished(unit, "done")
        assert exports.futures == []
        for unit in first[:-1]:
            exports.unit_finished(unit, "done")
        assert exports.futures == []
        exports.unit_finished(first[-1], "done")
        # one task per file (L1a, L2a, HDF5) of each input: one writer per file
        assert [job.input_index for job, _ in exports.futures] == [0, 0, 0, 1, 1, 1]
        exports.wait()
    assert exports.failures == []
    expected = export_store(path, ["cdf", "hdf5"], tmp_path / "after")
    assert [Path(f).name for f in exports.written] == [f.name for f in expected]
    for streamed, after in zip(exports.written, expected, strict=True):
        if after.suffix == ".cdf":  # HDF5 files hold their creation times
            assert Path(streamed).read_bytes() == after.read_bytes()


def test_lab_capture_exports_are_istp_clean(tmp_path, trc_dir):
    """The real LeCroy captures (records of milliseconds, pickup products) export
    to L1a and L2a CDFs that SpacePy's checker passes too."""
    config = load_config({"pipeline": {"analyze": True, "batch_events": 10}})
    path, _ = _build_store(tmp_path, [trc_dir], config, 10)
    files = export_store(path, ["cdf"], tmp_path / "out")
    assert [f.name[:18] for f in files] == ["imap_idex_l1a_sci_", "imap_idex_l2a_sci_"]
    for file in files:
        assert _istp_problems(file) == [], file.name
