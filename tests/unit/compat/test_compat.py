"""The dependency adapters (idexdask.compat): both paths, the same values."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from idexdask.compat import ADAPTERS, PUBLIC_API_ENV, public_api_forced
from idexdask.compat.lazy import internals_available, lazy_variable
from idexdask.errors import ConfigError
from idexdask.packets.timing import sample_times, sample_times_variable


def test_public_api_forced_reads_the_environment(monkeypatch):
    monkeypatch.delenv(PUBLIC_API_ENV, raising=False)
    assert not any(public_api_forced(name) for name in ADAPTERS)
    monkeypatch.setenv(PUBLIC_API_ENV, " zarr_chunks ,erfcx")
    assert [public_api_forced(name) for name in ADAPTERS] == [False, True, False, True]
    monkeypatch.setenv(PUBLIC_API_ENV, "all")
    assert all(public_api_forced(name) for name in ADAPTERS)


def test_public_api_forced_refuses_unknown_names(monkeypatch):
    monkeypatch.setenv(PUBLIC_API_ENV, "zarr")  # a typo must not leave the shortcut on
    with pytest.raises(ConfigError, match="zarr"):
        public_api_forced("zarr_chunks")
    monkeypatch.delenv(PUBLIC_API_ENV)
    with pytest.raises(ConfigError):
        public_api_forced("numpy")


class _Counting:
    """A source that records the selections it computes."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        self.shape = values.shape
        self.dtype = values.dtype
        self.keys: list[tuple] = []

    def compute(self, key: tuple) -> np.ndarray:
        self.keys.append(key)
        return self.values[np.ix_(*[np.arange(n)[k] if not isinstance(k, int) else [k]
                                    for k, n in zip(key, self.shape, strict=True)])].reshape(
            [len(np.arange(n)[k]) for k, n in zip(key, self.shape, strict=True)
             if not isinstance(k, int)])


SELECTIONS = [
    (slice(None), slice(None)),
    (1, slice(2, 9, 3)),
    ([0, 2], slice(None, None, -1)),
    (slice(1, None), 4),
    (np.array([2, 0]), np.array([5, 1, 1])),
]


@pytest.mark.parametrize("selection", SELECTIONS)
def test_lazy_variable_indexes_like_the_array(adapter_path, selection):
    values = np.arange(30, dtype=np.float64).reshape(3, 10) * 0.1
    source = _Counting(values)
    variable = lazy_variable(("epoch", "sample"), source, attrs={"units": "µs"},
                             encoding={"dtype": "float64"})
    assert variable.attrs == {"units": "µs"} and variable.encoding == {"dtype": "float64"}
    expected = xr.Variable(("epoch", "sample"), values)[selection]
    got = variable[selection]
    assert got.dims == expected.dims
    np.testing.assert_array_equal(got.values, expected.values, strict=True)


def test_lazy_variable_computes_only_what_is_indexed(adapter_path):
    source = _Counting(np.arange(12.0).reshape(3, 4))
    variable = lazy_variable(("epoch", "sample"), source)
    if adapter_path == "public":
        assert not internals_available()
        assert source.keys == [(slice(None), slice(None))]  # computed in full, once
        assert variable[2, 1:3].values.tolist() == [9.0, 10.0]
        assert len(source.keys) == 1
        return
    assert internals_available()  # the installed xarray keeps the shortcut usable
    assert source.keys == []  # nothing computed until indexed
    assert variable[2, 1:3].values.tolist() == [9.0, 10.0]
    assert len(source.keys) == 1 and source.keys[0][0] == 2


def test_sample_time_axis_on_both_paths(adapter_path):
    pretrigger = np.array([10.5, 3.25, 0.0])
    variable = sample_times_variable(pretrigger, 8189, 260.0, ("epoch", "time_high"),
                                     {"units": "µs"})
    full = sample_times(pretrigger, 8189, 260.0)
    np.testing.assert_array_equal(variable.values, full, strict=True)  # the same function
    np.testing.assert_array_equal(variable[1, ::7].values, full[1, ::7], strict=True)


# ----------------------------------------------------------------------------- erfcx


def test_scipy_erfcx_address_per_path(adapter_path):
    from idexdask.compat.erfcx import scipy_erfcx_address

    if adapter_path == "public":
        assert scipy_erfcx_address() == 0
    else:
        assert scipy_erfcx_address() != 0  # the installed SciPy exports it


@pytest.mark.numerics
def test_line_heights_on_both_paths(adapter_path):
    """line_heights is emg() on its grids on both paths: compiled with SciPy's C
    erfcx (internals), or that array code itself (public).  8 ulp relative: libm's
    and NumPy's SIMD exp/erfcx round an ulp or two apart (observed ~2)."""
    from idexdask.analysis.line_fits import _HEIGHT_GRID, line_heights
    from idexdask.analysis.lineshapes import emg

    rng = np.random.default_rng(3)
    n = 200
    area = rng.lognormal(0.0, 2.0, n)
    center = rng.uniform(0.5, 9.0, n)
    sigma = rng.uniform(4e-4, 0.02, n)
    gamma = np.exp(rng.uniform(np.log(2.0), np.log(1e4), n))
    area[0] = np.nan
    got = line_heights(area, center, sigma, gamma)
    grid = np.linspace(-1.0, 4.0, _HEIGHT_GRID)
    a, c, s, g = (v[:, None] for v in (area, center, sigma, gamma))
    with np.errstate(all="ignore"):
        t = np.concatenate([c + grid * s, c + (grid + 1.0) / (3.3 * g)], axis=1)
        expected = np.max(np.where(np.isfinite(p := emg(t, a, c, s, g)), p, -np.inf), axis=1)
    assert np.isnan(got[0]) and np.isfinite(got[1:]).all()
    np.testing.assert_allclose(got[1:], expected[1:], rtol=8 * np.finfo(float).eps, atol=0)


@pytest.mark.numerics
def test_auto_fit_engine_on_both_paths(adapter_path):
    """engine auto: the compiled EMG kernel (internals) or the array code (public);
    both reach the array engine's fits (tests/numerics.assert_same_fits: the same
    iteration, an ulp or two apart in exp/erfcx)."""
    from idexdask.analysis.fitting import batch_model, fit_batch
    from idexdask.analysis.lineshapes import emg
    from tests.numerics import assert_same_fits

    rng = np.random.default_rng(31)
    n, m, dt = 30, 60, 1.0 / 260.0
    x = np.arange(m) * dt + rng.uniform(2.0, 20.0, (n, 1))
    center = x[:, m // 4] + rng.uniform(0.0, dt, n)
    sigma, gamma = rng.uniform(0.005, 0.02, n), rng.uniform(50.0, 150.0, n)
    shape = emg(x, 1.0, center[:, None], sigma[:, None], gamma[:, None])
    amplitude = np.exp(rng.uniform(np.log(20.0), np.log(1000.0), n)) * 2.0 / shape.max(axis=1)
    y = amplitude[:, None] * shape + 512.0 + rng.normal(0.0, 2.0, (n, m))
    p0 = np.stack([amplitude, center, sigma, gamma, np.full(n, 512.0)], axis=1)
    p0 *= rng.uniform(0.9, 1.1, p0.shape)
    p0[:, 1] = center + rng.uniform(-0.5, 0.5, n) * dt
    bounds = {"lower": np.array([0.0, -np.inf, 1e-4, 0.0, -np.inf]),
              "upper": np.array([np.inf, np.inf, 0.1, 1e4, np.inf])}
    ref = fit_batch(x, y, batch_model(), p0, engine="xp", **bounds)
    got = fit_batch(x, y, batch_model(), p0, engine="auto", **bounds)
    assert_same_fits(got, ref, m)


# ----------------------------------------------------------------------------- CDF writer


@pytest.fixture(scope="module")
def istp_events(tmp_path_factory):
    """A small decoded L1a dataset, ISTP-ready, with NaNs in a float variable."""
    from idexdask.io.cdf import istp_dataset, load_cdf_attributes
    from idexdask.packets.reader import read_l0
    from idexdask.simulate import write_campaign

    root = tmp_path_factory.mktemp("compat_cdf")
    write_campaign(root / "sim.pkts", 4, compress=False, seed=3)
    events = read_l0(root / "sim.pkts").load()
    events["peak_time"] = ("epoch", np.array([1.5, np.nan, 2.25, np.nan]),
                           {"units": "µs", "long_name": "a product with gaps"})
    events.attrs = {"source": "sim.pkts"}
    return istp_dataset(events, load_cdf_attributes(), level="l2a")


@pytest.mark.parametrize("compression", [0, 6])
def test_cdf_writer_on_both_paths_writes_cdflibs_file(adapter_path, istp_events, tmp_path,
                                                      compression):
    """Both paths write, byte for byte, the file of cdflib's own public
    ``xarray_to_cdf(istp=True)`` (the same serialisation: no arithmetic differs)."""
    import cdflib
    from cdflib.xarray import xarray_to_cdf

    from idexdask.compat.cdf_writer import shortcut_available
    from idexdask.io.cdf import write_istp

    assert shortcut_available() == (adapter_path == "internals")
    ours, stock = tmp_path / "ours.cdf", tmp_path / "stock.cdf"
    write_istp(istp_events, ours, compression=compression)
    xarray_to_cdf(istp_events, str(stock), istp=True, compression=compression)
    assert ours.read_bytes() == stock.read_bytes()
    cdf = cdflib.CDF(str(ours))
    gaps = cdf.varget("peak_time")
    assert gaps[0] == 1.5 and gaps[1] == -1.0e31  # NaN written as the ISTP fill
    assert cdf.varinq("TOF_High").Compress == compression


# ----------------------------------------------------------------------------- zarr chunks


def test_chunk_codec_checks_itself_against_zarr(adapter_path, monkeypatch):
    """A chain the writer runs, checked by a round trip through zarr: a codec that
    encodes other bytes than zarr (as a zarr release changing a default would) is
    not used, nor a chain it does not know."""
    from idexdask.compat import zarr_chunks

    zstd = [{"name": "bytes", "configuration": {"endian": "little"}},
            {"name": "zstd", "configuration": {"level": 3, "checksum": False}}]
    codec = zarr_chunks.chunk_codec(np.dtype(np.int16), zstd, (7,))
    assert (codec is not None) == (adapter_path == "internals")
    crc = [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}]
    assert zarr_chunks.chunk_codec(np.dtype(np.int16), crc, (7,)) is None
    if adapter_path == "internals":
        real = zarr_chunks.ChunkCodec.encode
        monkeypatch.setattr(zarr_chunks.ChunkCodec, "encode",
                            lambda self, chunk: bytes(real(self, chunk)) + b"\0")
        zarr_chunks.forget_zarr_checks()  # the round trip above is remembered
        try:
            assert zarr_chunks.chunk_codec(np.dtype(np.int16), zstd, (7,)) is None
        finally:
            zarr_chunks.forget_zarr_checks()  # not this patched answer


def test_chunk_codec_checks_a_chain_once(monkeypatch):
    """The round trip through zarr runs once per data type, chain and sample
    shape in a process (a writer per task asked again each time); another data
    type, chain or shape is checked for itself, and every answer's codec
    encodes as zarr does."""
    from idexdask.compat import zarr_chunks

    monkeypatch.delenv(PUBLIC_API_ENV, raising=False)
    zarr_chunks.forget_zarr_checks()
    calls = []
    real = zarr_chunks.agrees_with_zarr

    def counted(*args, **kwargs):
        calls.append(args[1:])
        return real(*args, **kwargs)

    monkeypatch.setattr(zarr_chunks, "agrees_with_zarr", counted)
    zstd = [{"name": "bytes", "configuration": {"endian": "little"}},
            {"name": "zstd", "configuration": {"level": 3, "checksum": False}}]
    try:
        first = zarr_chunks.chunk_codec(np.dtype(np.int16), zstd, (7,))
        again = zarr_chunks.chunk_codec(np.dtype(np.int16), zstd, (7,))
        wider = zarr_chunks.chunk_codec(np.dtype(np.int16), zstd, (500,))
        same_sample = zarr_chunks.chunk_codec(np.dtype(np.int16), zstd, (600,))
        other = zarr_chunks.chunk_codec(np.dtype(np.float32), zstd, (7,))
    finally:
        zarr_chunks.forget_zarr_checks()
    assert all(c is not None for c in (first, again, wider, same_sample, other))
    # (7,), (500,) capped to the sample's 64, float32: three checks, not five
    assert [(np.dtype(d).str, tuple(s)) for d, _, s in calls] == [
        ("<i2", (7,)), ("<i2", (64,)), ("<f4", (7,))]
    values = np.arange(14, dtype=np.int16).reshape(2, 7)
    assert bytes(again.encode(values)) == bytes(first.encode(values))


def test_real_l0_file_decodes_the_same_on_both_paths(l0_dir, monkeypatch):
    """A real flight file: the lazy time axes (internals) and the computed ones
    (public path) hold the same values, as does every other variable."""
    from idexdask.packets.reader import read_l0

    path = l0_dir / "imap_idex_l0_raw_20231218_v001.pkts"
    monkeypatch.delenv(PUBLIC_API_ENV, raising=False)
    lazy = read_l0(path)
    monkeypatch.setenv(PUBLIC_API_ENV, "lazy")
    computed = read_l0(path)
    assert lazy.sizes["epoch"] > 0
    xr.testing.assert_identical(lazy.load(), computed)
