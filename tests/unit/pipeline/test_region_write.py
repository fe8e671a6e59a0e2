"""Region writes of the campaign store (idexdask.pipeline.region_write.RegionWriter).

The writer encodes and writes chunk objects itself instead of going through
zarr-python's ``setitem``; these tests prove that what it writes is exactly what
zarr-python writes for the same values (same objects, same bytes), for every
dtype the pipeline stores, for whole, shared (read-modify-written) and edge
chunks, and that zarr and xarray read the values back unchanged.  The tests
taking ``adapter_path`` run once with that shortcut and once held to zarr's
public API (idexdask.compat.zarr_chunks).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from idexdask.errors import StoreError
from idexdask.pipeline.region_write import RegionWriter, _store_values, write_region
from idexdask.pipeline.store import chunk_rows, initialise_store

N_EVENTS = 10
ROWS = 4
# not chunk aligned: chunks 0 and 1 are shared by two units, chunk 2 is the
# store's last (short) chunk; written out of order
REGIONS = [(3, 7), (0, 3), (7, 10)]


def _campaign(seed: int = 0) -> xr.Dataset:
    """Ten events with every dtype the store holds, NaN, -0.0, inf, strings."""
    rng = np.random.default_rng(seed)
    n = N_EVENTS
    floats = rng.normal(size=n)
    floats[[1, 5]] = np.nan
    floats[2] = -0.0
    floats[7] = np.inf
    wave = rng.normal(size=(n, 5)).astype(np.float32)
    wave[4] = np.nan
    all_nan = np.full(n, np.nan)  # every chunk is fill: zarr stores none
    part_nan = np.full(n, np.nan)
    part_nan[9] = 1.5  # only the last chunk has data
    zeros = np.zeros(n, dtype=np.float64)
    zeros[6] = -0.0  # a -0.0 in a chunk otherwise +0.0 (fill 0.0): stored
    labels = np.array(["", "Mg", "Fe²⁺", "", "Na", "émission", "x" * 40, "", "Ca", "K"],
                      dtype=object)
    labels2 = np.array([["a", ""], ["", ""], ["b", "c"], ["", "d"], ["", ""],
                        ["e", "f"], ["", ""], ["", ""], ["g", ""], ["", "h"]], dtype=object)
    data = {
        "flag": ("epoch", rng.random(n) > 0.5),
        "flags2": (("epoch", "channel"), rng.random((n, 3)) > 0.5),
        "i8": ("epoch", rng.integers(-128, 127, n, dtype=np.int8)),
        "i16": ("epoch", rng.integers(-2**15, 2**15 - 1, n, dtype=np.int16)),
        "i32": ("epoch", rng.integers(-2**31, 2**31 - 1, n, dtype=np.int32)),
        "i64": ("epoch", rng.integers(-2**62, 2**62, n, dtype=np.int64)),
        "u8": ("epoch", rng.integers(0, 255, n, dtype=np.uint8)),
        "u16": (("epoch", "sample"), rng.integers(0, 1023, (n, 7), dtype=np.uint16)),
        "u32": ("epoch", rng.integers(0, 2**32 - 1, n, dtype=np.uint32)),
        "u64": ("epoch", rng.integers(0, 2**63, n, dtype=np.uint64)),
        "f32": (("epoch", "sample5"), wave),
        "f64": ("epoch", floats),
        "all_nan": ("epoch", all_nan),
        "part_nan": ("epoch", part_nan),
        "zeros": ("epoch", zeros),
        "label": ("epoch", labels),
        "label2": (("epoch", "slot"), labels2),
        "empty": (("epoch", "none"), np.zeros((n, 0))),
    }
    coords = {
        "epoch": ("epoch", np.arange(n, dtype=np.int64) * 1000 + 7, {"units": "ns"}),
        "channel": ("channel", np.array(["A", "B", "C"], dtype=object)),
    }
    ds = xr.Dataset({k: xr.Variable(*v) for k, v in data.items()}, coords=coords)
    ds["f64"].attrs = {"units": "s", "long_name": "a float"}
    return ds


def _store(path: Path, ds: xr.Dataset, compressor: str, level: int = 3) -> Path:
    initialise_store(path, ds.isel(epoch=slice(0, 1)), N_EVENTS, rows=ROWS,
                     compressor=compressor, level=level, meta={"test": 1})
    return path


def _zarr_write(path: Path, ds: xr.Dataset, region: tuple[int, int]) -> None:
    """The reference: the same values written with zarr-python's own setitem."""
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    for name, variable in ds.variables.items():
        if "epoch" not in variable.dims:
            continue
        values = np.asarray(variable.values)
        group[str(name)][region[0]:region[1]] = values


def _recreate_with_zero_fill(path: Path, name: str) -> None:
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    old = group[name]
    group.create_array(name, shape=old.shape, chunks=old.chunks, dtype=old.dtype,
                       fill_value=0.0, dimension_names=old.metadata.dimension_names,
                       compressors=old.compressors, overwrite=True,
                       chunk_key_encoding=old.metadata.chunk_key_encoding)


def _chunk_files(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and "_pipeline" not in p.parts and p.name != "zarr.json"
    }


def _assert_same_values(expected: xr.Dataset, back: xr.Dataset) -> None:
    for name, variable in expected.variables.items():
        if "epoch" not in variable.dims:
            continue
        got = back[name].values
        want = variable.values
        assert got.shape == want.shape, name
        if want.dtype.kind == "O":
            assert [str(v) for v in got.ravel()] == list(want.ravel()), name
        else:
            assert got.dtype == want.dtype, name
            # bit patterns: NaN, -0.0 and inf exactly as written
            assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes(), name


@pytest.mark.parametrize("windowed", [False, True])
@pytest.mark.parametrize("compressor", ["zstd", "zstd-bitshuffle", "lz4-bitshuffle",
                                        "lz4-bitshuffle-f32", "lz4-bitshuffle-raw-f32",
                                        "gzip", "blosc-lz4", "none"])
def test_chunk_objects_are_zarrs_byte_for_byte(tmp_path: Path, compressor: str,
                                               adapter_path: str, windowed: bool,
                                               monkeypatch) -> None:
    if windowed:  # arrays chunked along their samples too, the last chunk there partial
        import idexdask.pipeline.store as store_module

        monkeypatch.setattr(store_module, "WINDOW_CHUNK_SAMPLES", {"f32": 2, "u16": 3})
    ds = _campaign()
    ours = _store(tmp_path / "ours.zarr", ds, compressor)
    ref = _store(tmp_path / "ref.zarr", ds, compressor)
    for path in (ours, ref):  # a float array with fill 0.0 (xarray's is NaN): -0.0 differs
        _recreate_with_zero_fill(path, "zeros")
    writer = RegionWriter(ours, rows=ROWS, n_events=N_EVENTS)
    for start, stop in REGIONS:
        unit = ds.isel(epoch=slice(start, stop))
        writer.write(unit, (start, stop))
        _zarr_write(ref, unit, (start, stop))
    files = _chunk_files(ours)
    expected = _chunk_files(ref)
    if compressor == "gzip":  # zarr stamps each gzip header with the time; ours is 0
        ours_written = {k: v for k, v in files.items() if not k.startswith("channel/")}
        if adapter_path == "internals":
            assert all(v[4:8] == bytes(4) for v in ours_written.values())
        files = {k: v[:4] + bytes(4) + v[8:] for k, v in files.items()}
        expected = {k: v[:4] + bytes(4) + v[8:] for k, v in expected.items()}
    assert files == expected
    # the path asked for was used (internals: no array fell back to zarr); fill
    # chunks are absent
    assert all((spec.codec is not None) == (adapter_path == "internals")
               for spec in writer._specs.values())
    assert not any(k.startswith("all_nan/") for k in files)
    assert [k for k in files if k.startswith("part_nan/")] == ["part_nan/c.2"]
    assert "zeros/c.1" in files and "zeros/c.0" not in files
    # chunk files sit in their array's directory: no directory per chunk to create
    assert all(k.count("/") == 1 for k in files if not k.startswith("channel/")), sorted(files)
    assert "flags2/c.0.0" in files
    if windowed:  # 5 and 7 samples in chunks of 2 and 3: three chunks along samples
        assert {"f32/c.0.2", "u16/c.2.2"} <= set(files) and "f32/c.0.3" not in files
    assert not any(k.startswith("empty/") for k in files)
    assert not any(k.endswith(".partial") for k in files)


@pytest.mark.parametrize("compressor", ["zstd", "zstd-bitshuffle", "lz4-bitshuffle",
                                        "lz4-bitshuffle-f32", "lz4-bitshuffle-raw-f32",
                                        "gzip", "blosc-lz4"])
def test_values_read_back_by_zarr_and_xarray(tmp_path: Path, compressor: str,
                                             adapter_path: str) -> None:
    import zarr

    ds = _campaign(seed=3)
    path = _store(tmp_path / "s.zarr", ds, compressor)
    for start, stop in REGIONS:
        write_region(path, ds.isel(epoch=slice(start, stop)), (start, stop),
                     rows=ROWS, n_events=N_EVENTS)
    with xr.open_zarr(path, consolidated=False) as back:
        _assert_same_values(ds, back.load())
    group = zarr.open_group(str(path), mode="r")
    np.testing.assert_array_equal(group["u64"][:], ds["u64"].values)
    assert list(group["label"][:]) == list(ds["label"].values)


def test_rewrite_is_idempotent_and_keeps_the_neighbours_rows(tmp_path: Path,
                                                             adapter_path: str) -> None:
    ds = _campaign(seed=1)
    path = _store(tmp_path / "s.zarr", ds, "zstd")
    writer = RegionWriter(path, rows=ROWS, n_events=N_EVENTS)
    for start, stop in REGIONS:
        writer.write(ds.isel(epoch=slice(start, stop)), (start, stop))
    before = _chunk_files(path)
    # a unit redone (another writer, as another task would): the same bytes
    write_region(path, ds.isel(epoch=slice(3, 7)), (3, 7), rows=ROWS, n_events=N_EVENTS)
    assert _chunk_files(path) == before
    # a unit redone with other values changes only its own rows of shared chunks
    other = _campaign(seed=2).isel(epoch=slice(3, 7))
    writer.write(other, (3, 7))
    with xr.open_zarr(path, consolidated=False) as back:
        back = back.load()
    expected = xr.concat([ds.isel(epoch=slice(0, 3)), other.drop_vars("epoch").assign_coords(
        epoch=ds.epoch[3:7]), ds.isel(epoch=slice(7, 10))], "epoch", data_vars="all",
        coords="minimal", compat="override")
    for name in ("f64", "label", "u16", "flag"):
        want, got = expected[name].values, back[name].values
        if want.dtype.kind == "f":
            np.testing.assert_array_equal(got, want)
        else:
            assert list(map(str, got.ravel())) == list(map(str, want.ravel())), name


def test_mismatches_raise_store_error(tmp_path: Path, adapter_path: str) -> None:
    ds = _campaign()
    path = _store(tmp_path / "s.zarr", ds, "zstd")
    unit = ds.isel(epoch=slice(0, 3))
    kwargs = {"rows": ROWS, "n_events": N_EVENTS}
    template_only = _chunk_files(path)  # the non-epoch coordinates
    with pytest.raises(StoreError, match="not in the store"):
        write_region(path, unit.assign(extra=("epoch", np.ones(3))), (0, 3), **kwargs)
    with pytest.raises(StoreError, match="per event"):
        write_region(path, unit.assign(u16=(("epoch", "sample"), np.zeros((3, 8), np.uint16))),
                     (0, 3), **kwargs)
    with pytest.raises(StoreError, match="dims"):
        write_region(path, unit.assign(u16=(("epoch", "other"), np.zeros((3, 7), np.uint16))),
                     (0, 3), **kwargs)
    with pytest.raises(StoreError, match="do not fit"):
        write_region(path, unit.assign(i8=("epoch", np.array([1.5, 2, 3]))), (0, 3), **kwargs)
    with pytest.raises(StoreError, match="events for store rows"):
        write_region(path, unit, (0, 4), **kwargs)
    with pytest.raises(StoreError, match="expects"):
        write_region(path, unit, (0, 3), rows=ROWS + 1, n_events=N_EVENTS)
    # nothing was written by the failed writes
    assert _chunk_files(path) == template_only
    # a value that fits the store's dtype exactly is stored (int64 1, 2, 3 in int8)
    write_region(path, unit.assign(i8=("epoch", np.array([1, 2, 3]))), (0, 3), **kwargs)
    with xr.open_zarr(path, consolidated=False) as back:
        np.testing.assert_array_equal(back["i8"].values[:3], [1, 2, 3])


def test_plain_values_are_what_cf_encoding_gives(tmp_path: Path) -> None:
    """The shortcut past encode_cf_variable changes no value; CF attributes still apply."""
    from xarray.conventions import encode_cf_variable

    ds = _campaign()
    path = _store(tmp_path / "s.zarr", ds, "zstd")
    writer = RegionWriter(path, rows=ROWS, n_events=N_EVENTS)
    for name, variable in ds.variables.items():
        if "epoch" not in variable.dims or variable.dtype == object:
            continue
        spec = writer.spec(str(name))
        cf = np.asarray(encode_cf_variable(variable, name=name).values).astype(spec.dtype)
        ours = _store_values(str(name), variable, spec)
        assert ours.dtype == spec.dtype
        assert ours.tobytes() == cf.tobytes(), name
    # CF attributes and encodings still go through xarray's CF encoding
    scaled = xr.Variable("epoch", np.array([0.5, 1.0, np.nan]), encoding={"scale_factor": 0.5,
                                                                     "_FillValue": -1.0})
    np.testing.assert_array_equal(_store_values("f64", scaled, writer.spec("f64")),
                                  [1.0, 2.0, -1.0])
    for attrs in ({"_FillValue": -9.0}, {"scale_factor": 2.0}, {"add_offset": 1.0}):
        other = xr.Variable("epoch", np.array([0.5, np.nan]), attrs=attrs)
        np.testing.assert_array_equal(_store_values("f64", other, writer.spec("f64")),
                                      encode_cf_variable(other).values)


def test_unrecognised_codec_is_written_through_zarr(tmp_path: Path) -> None:
    """An array whose codec chain the writer does not know falls back to zarr-python."""
    import zarr
    from zarr.codecs import BytesCodec, Crc32cCodec

    ds = _campaign()[["f64", "u16"]]
    path = _store(tmp_path / "s.zarr", ds, "zstd")
    group = zarr.open_group(str(path), mode="r+")
    group.create_array("f64", shape=(N_EVENTS,), chunks=(ROWS,), dtype="float64",
                       fill_value=np.nan, dimension_names=("epoch",),
                       serializer=BytesCodec(), compressors=[Crc32cCodec()], overwrite=True)
    writer = RegionWriter(path, rows=ROWS, n_events=N_EVENTS)
    for start, stop in REGIONS:
        writer.write(ds.isel(epoch=slice(start, stop)), (start, stop))
    assert writer.spec("f64").codec is None and writer.spec("u16").codec is not None
    group = zarr.open_group(str(path), mode="r")
    np.testing.assert_array_equal(group["f64"][:], ds["f64"].values)
    np.testing.assert_array_equal(group["u16"][:], ds["u16"].values)


def test_chunk_rows_keeps_unit_sized_chunks_for_the_time_axis() -> None:
    ds = xr.Dataset({
        "time_high_sample_rate": (("epoch", "s"), np.zeros((1, 8192))),
        "x": ("epoch", np.zeros(1)),
    })
    assert chunk_rows(ds, 256) == 256  # 16 MiB chunks, under the 32 MiB cap
    assert chunk_rows(ds, 1024) == 512  # the cap still applies
    assert chunk_rows(ds.drop_vars("time_high_sample_rate"), 1024) == 1024
    # where the cap cuts, a divisor of chunk_events (units are planned at its multiples)
    assert chunk_rows(ds, 768) == 384
    big = xr.Dataset({"w": (("epoch", "s"), np.zeros((1, 3 * 2**20)))})  # 24 MiB per event
    assert chunk_rows(big, 256) == 1
    wide = xr.Dataset({"w": (("epoch", "s"), np.zeros((1, 10000)))})  # 419 events under the cap
    assert chunk_rows(wide, 600) == 300 and 600 % chunk_rows(wide, 600) == 0


@pytest.mark.parametrize("compressor", ["zstd", "gzip"])
def test_store_written_twice_from_scratch_is_identical(tmp_path: Path, compressor: str,
                                                       adapter_path: str) -> None:
    """Deterministic bytes: two stores written in different unit orders agree
    (through zarr's public API, gzip chunks differ in their header's time alone)."""
    import time

    ds = _campaign(seed=5)
    a = _store(tmp_path / "a.zarr", ds, compressor)
    b = _store(tmp_path / "b.zarr", ds, compressor)
    for start, stop in REGIONS:
        write_region(a, ds.isel(epoch=slice(start, stop)), (start, stop),
                     rows=ROWS, n_events=N_EVENTS)
    time.sleep(1.1)  # a gzip header time would differ now
    for start, stop in reversed(REGIONS):
        write_region(b, ds.isel(epoch=slice(start, stop)), (start, stop),
                     rows=ROWS, n_events=N_EVENTS)
    first, second = _chunk_files(a), _chunk_files(b)
    if compressor == "gzip" and adapter_path == "public":
        assert first != second  # zarr's gzip stamps the time of writing
        first, second = ({k: v[:4] + v[8:] for k, v in f.items()} for f in (first, second))
    assert first == second
    shutil.rmtree(a)


@pytest.mark.parametrize(("compressor", "cname"),
                         [("zstd-bitshuffle", "zstd"), ("lz4-bitshuffle", "lz4")])
def test_bitshuffle_compressors_compress_integers_with_blosc(tmp_path: Path, compressor: str,
                                                             cname: str) -> None:
    import zarr

    ds = _campaign()
    path = _store(tmp_path / "s.zarr", ds, compressor)
    group = zarr.open_group(str(path), mode="r")
    for name, kind in (("u16", "blosc"), ("flag", "blosc"), ("f32", "zstd"), ("label", "zstd")):
        codecs = [c.to_dict() for c in group[name].metadata.codecs]
        assert codecs[-1]["name"] == kind, (name, codecs)
        if kind == "blosc":
            assert codecs[-1]["configuration"]["cname"] == cname
            assert codecs[-1]["configuration"]["shuffle"] == "bitshuffle"
            assert codecs[-1]["configuration"]["typesize"] == group[name].dtype.itemsize


def test_f32_compressor_passes_float32_arrays_through_blosc(tmp_path: Path) -> None:
    import zarr

    ds = _campaign()
    path = _store(tmp_path / "s.zarr", ds, "lz4-bitshuffle-f32")
    group = zarr.open_group(str(path), mode="r")
    for name, kind in (("u16", "blosc"), ("flag", "blosc"), ("f32", "blosc"), ("f64", "zstd"),
                       ("label", "zstd")):
        codecs = [c.to_dict() for c in group[name].metadata.codecs]
        assert codecs[-1]["name"] == kind, (name, codecs)
        if kind == "blosc":
            assert codecs[-1]["configuration"]["cname"] == "lz4"
            assert codecs[-1]["configuration"]["shuffle"] == "bitshuffle"
            assert codecs[-1]["configuration"]["typesize"] == group[name].dtype.itemsize


def test_raw_f32_compressor_stores_float32_arrays_uncompressed(tmp_path: Path) -> None:
    """lz4-bitshuffle-raw-f32 (the lab stores'): float32 arrays as their bytes alone,
    integers and booleans through Blosc lz4 with bit shuffle, other floats zstd."""
    import zarr

    ds = _campaign()
    path = _store(tmp_path / "s.zarr", ds, "lz4-bitshuffle-raw-f32")
    group = zarr.open_group(str(path), mode="r")
    for name, kind in (("u16", "blosc"), ("flag", "blosc"), ("f32", "bytes"), ("f64", "zstd"),
                       ("label", "zstd")):
        codecs = [c.to_dict() for c in group[name].metadata.codecs]
        assert codecs[-1]["name"] == kind, (name, codecs)
        if kind == "bytes":
            assert len(codecs) == 1, codecs


@pytest.mark.parametrize("compressor", ["zstd-bitshuffle", "none"])
def test_initialised_arrays_are_those_xarray_creates_at_full_size(tmp_path, compressor,
                                                                  adapter_path):
    """initialise_store writes a one-event template and grows its arrays: the
    metadata must be what xarray writes for the full-size (lazy) dataset, and no
    chunk object may be left behind (every row reads as fill until written)."""
    import json

    import dask.array as da

    from idexdask.pipeline.store import _encoding

    ds = _campaign().drop_vars(["label", "label2"])  # strings: created by zarr directly
    path = _store(tmp_path / "ours.zarr", ds, compressor)

    lazy = xr.Dataset(
        {k: xr.Variable(v.dims, da.zeros((N_EVENTS, *v.shape[1:]), dtype=v.dtype),
                        attrs=v.attrs)
         for k, v in ds.data_vars.items()},
        coords={"epoch": ("epoch", da.zeros(N_EVENTS, dtype=np.int64), {"units": "ns"}),
                "channel": ds["channel"].variable},
    )
    reference = tmp_path / "reference.zarr"
    lazy.to_zarr(reference, mode="w", zarr_format=3, consolidated=False, compute=False,
                 safe_chunks=False, encoding=_encoding(lazy, ROWS, compressor, 3))
    for name in list(ds.data_vars) + ["epoch"]:
        ours = json.loads((path / name / "zarr.json").read_text())
        theirs = json.loads((reference / name / "zarr.json").read_text())
        assert ours == theirs, name
        assert ours["shape"][0] == N_EVENTS
        assert not [p.name for p in (path / name).iterdir() if p.name != "zarr.json"], name
    stored = xr.open_zarr(path, consolidated=False)
    assert stored.sizes["epoch"] == N_EVENTS
    assert np.isnan(stored["f64"].values).all()
    assert (stored["i16"].values == 0).all()  # the fill value, nothing of the template


def test_reinitialisation_keeps_the_journal_and_an_interrupted_creation_is_no_store(tmp_path):
    """The group's zarr.json (with the pipeline metadata) is written last: a store
    whose creation stopped half-way reads as not created (and is laid out again),
    not as a store of the inputs it was meant for; the journal always survives."""
    from idexdask.pipeline.manifest import pipeline_dir
    from idexdask.pipeline.store import read_store_meta

    ds = _campaign()
    path = _store(tmp_path / "s.zarr", ds, "zstd")
    assert read_store_meta(path) == {"test": 1}
    (pipeline_dir(path) / "manifest.jsonl").write_text('{"record": "run_start"}\n')
    write_region(path, ds.isel(epoch=slice(0, ROWS)), (0, ROWS), rows=ROWS, n_events=N_EVENTS)

    (path / "zarr.json").unlink()  # as if the process died before the last object
    assert read_store_meta(path) is None
    initialise_store(path, ds.isel(epoch=slice(0, 1)), N_EVENTS, rows=ROWS, compressor="zstd",
                     meta={"test": 2})
    assert read_store_meta(path) == {"test": 2}
    assert (pipeline_dir(path) / "manifest.jsonl").read_text() == '{"record": "run_start"}\n'
    stored = xr.open_zarr(path, consolidated=False)
    assert np.isnan(stored["f64"].values).all()  # the earlier rows are gone with the layout
    assert (stored["label"].values == "").all()

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a Zarr store"):
        read_store_meta(foreign)
