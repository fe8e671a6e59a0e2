"""Official IDEX L1a science CDFs as input: ``read_cdf`` against ``read_l0``, bad files,
campaigns over the official CDFs against campaigns over the L0 they were made from.

The official CDFs are written from the real L0 files by imap-processing 1.0.40
(``.venv-oracle``, offline; tests/oracle/official_l1a_cdf.py).
"""

from __future__ import annotations

import shutil

import cdflib
import numpy as np
import pytest
import xarray as xr

from idexdask import read_cdf, read_l0
from idexdask.errors import CdfInputError
from idexdask.packets.quality import QualityFlag

from ..conftest import L0_DIR

SHARED_HIGH = 8189  # high-rate samples the official product keeps (of 8192)
HIGH_RATE = ("TOF_High", "TOF_Mid", "TOF_Low")


@pytest.fixture(scope="module")
def pairs(official_l1a_cdfs) -> list[tuple[str, object]]:
    """(L0 file name, official CDF) of every real file holding science events."""
    assert len(official_l1a_cdfs) >= 3, official_l1a_cdfs  # 20231218 and the two 2023-102 files
    return sorted(official_l1a_cdfs.items())


@pytest.mark.oracle
def test_read_cdf_is_read_l0_on_the_shared_samples(pairs):
    for l0_name, cdf_path in pairs:
        ours, theirs = read_l0(L0_DIR / l0_name), read_cdf(cdf_path)
        assert list(theirs.variables) == list(ours.variables), l0_name
        assert theirs.sizes == ours.sizes, l0_name
        # epochs: from the same header fields by the same integer formula
        assert np.array_equal(theirs["epoch"].values, ours["epoch"].values), l0_name
        official = cdflib.CDF(str(cdf_path))
        # the product's own TT2000 goes through floating point (SPICE): ~0.2 µs
        np.testing.assert_allclose(official.varget("epoch"), ours["epoch"].values,
                                   rtol=0, atol=1_000)
        for name in ("time_high_sample_rate", "time_low_sample_rate"):
            assert np.array_equal(theirs[name].values, ours[name].values), name
            stated = official.varget(name)
            # the product's float64 times of the same formula: within 1e-12 µs
            # (a few ulp of ~30 µs), on the samples it holds
            np.testing.assert_allclose(stated, ours[name].values[:, : stated.shape[1]],
                                       rtol=0, atol=1e-12)
        for name in HIGH_RATE:
            assert np.array_equal(theirs[name].values[:, :SHARED_HIGH],
                                  ours[name].values[:, :SHARED_HIGH]), name
            assert (theirs[name].values[:, SHARED_HIGH:] == 65535).all(), name
            assert theirs[name].dtype == ours[name].dtype == np.uint16
        for name in ("Target_High", "Target_Low", "Ion_Grid"):
            assert np.array_equal(theirs[name].values, ours[name].values), name
        for name, variable in ours.data_vars.items():
            if variable.dims == ("epoch",) and name not in ("quality_flags", "idx__sci0aid"):
                assert theirs[name].dtype == variable.dtype, name
                assert np.array_equal(theirs[name].values, variable.values), name
        assert np.array_equal(theirs["compressed"].values, ours["compressed"].values)
        # the flag says which channels lack samples; the rest of the flags are L0's
        truncated = np.array([c in HIGH_RATE for c in theirs["channel"].values])
        status = theirs["channel_status"].values
        assert (status[:, truncated] == QualityFlag.SOURCE_TRUNCATED).all()
        assert (status[:, ~truncated] == 0).all()
        assert (theirs["quality_flags"].values
                == ours["quality_flags"].values | QualityFlag.SOURCE_TRUNCATED).all()
        assert (theirs["idx__sci0aid"].values == np.iinfo(np.uint32).max).all()
    one = pairs[0][1]
    part = read_cdf(one, records=(1, 3))
    whole = read_cdf(one)
    xr.testing.assert_identical(part.drop_attrs(), whole.isel(epoch=slice(1, 3)).drop_attrs())


@pytest.mark.oracle
def test_our_l1a_export_is_smaller_and_reads_back(pairs, tmp_path):
    """Our L1a product of the real 20231218 file beside the official one of the same
    events: its waveforms and times agree, it is no larger, and read_cdf reads it too
    (all 8192 samples: no SOURCE_TRUNCATED flag)."""
    from idexdask.io.cdf import write_cdf
    from idexdask.pipeline.plan import plan_inputs
    from idexdask.pipeline.units import decode_unit

    l0 = L0_DIR / "imap_idex_l0_raw_20231218_v001.pkts"
    official = dict(pairs)[l0.name]
    (unit,) = plan_inputs([l0], 1000).units
    events = decode_unit(unit)
    events.attrs = {"Logical_source": "imap_idex_l1a_sci", "Data_version": "001"}
    ours = write_cdf(events, tmp_path / "imap_idex_l1a_sci_20231218_v001.cdf",
                     compression=6, level="l1a")
    theirs_cdf, ours_cdf = cdflib.CDF(str(official)), cdflib.CDF(str(ours))
    for name in HIGH_RATE:
        assert np.array_equal(ours_cdf.varget(name)[:, :SHARED_HIGH], theirs_cdf.varget(name))
    assert np.array_equal(ours_cdf.varget("epoch"), events["epoch"].values)
    assert ours.stat().st_size <= official.stat().st_size, (ours.stat().st_size,
                                                             official.stat().st_size)
    again = read_cdf(ours)
    for name in ("TOF_High", "Ion_Grid", "time_high_sample_rate", "idx__txhdrevtnum"):
        assert np.array_equal(again[name].values, events[name].values), name
    assert (again["quality_flags"].values == 0).all()


def _truncations(path, tmp_path):
    data = path.read_bytes()
    for fraction in (0.0005, 0.05, 0.5, 0.95):
        cut = tmp_path / f"cut{fraction}.cdf"
        cut.write_bytes(data[: int(len(data) * fraction)])
        yield cut


@pytest.mark.oracle
def test_bad_cdf_inputs_name_the_file_and_the_problem(pairs, tmp_path):
    from idexdask.io.cdf import write_cdf

    good = pairs[0][1]
    junk = tmp_path / "junk.cdf"
    junk.write_text("not a CDF\n")
    with pytest.raises(CdfInputError, match=r"junk\.cdf: not a readable CDF"):
        read_cdf(junk)
    for cut in _truncations(good, tmp_path):
        with pytest.raises(CdfInputError, match=cut.name.replace(".", r"\.")):
            read_cdf(cut)
    events = read_cdf(good)
    other = tmp_path / "imap_swe_l1a_sci_20231218_v001.cdf"
    events.attrs = {"Logical_source": "imap_swe_l1a_sci", "Data_version": "001"}
    write_cdf(events, other)
    with pytest.raises(CdfInputError, match=r"imap_swe_l1a_sci_20231218_v001\.cdf: not an IDEX "
                                            r"L1a science product"):
        read_cdf(other)
    lacking = tmp_path / "imap_idex_l1a_sci_20231218_v001.cdf"
    events.attrs = {"Logical_source": "imap_idex_l1a_sci", "Data_version": "001"}
    write_cdf(events.drop_vars("TOF_Mid"), lacking)
    with pytest.raises(CdfInputError, match=r"imap_idex_l1a_sci_20231218_v001\.cdf: missing "
                                            r"variable\(s\) TOF_Mid"):
        read_cdf(lacking)


@pytest.mark.oracle
@pytest.mark.slow  # two campaigns with the analysis, ~1-2 min on 2 cores
def test_campaign_over_official_cdfs_equals_campaign_over_l0(pairs, tmp_path):
    """submit over a directory of official CDFs (with a junk and a truncated one):
    the bad inputs fail alone (exit 3, named in the summary); every product that
    does not depend on the 3 missing TOF samples equals the L0 campaign's."""
    from idexdask.cli import main
    from idexdask.pipeline.export import open_campaign

    directory = tmp_path / "official"
    directory.mkdir()
    for number, (_, cdf_path) in enumerate(pairs):
        shutil.copy(cdf_path, directory / f"{number}_{cdf_path.name}")  # same-day names differ
    (directory / "x_junk.cdf").write_text("not a CDF\n")
    data = pairs[0][1].read_bytes()
    (directory / "x_truncated.cdf").write_bytes(data[: len(data) // 2])
    common = ["--set", "cluster.workers=1", "--set", "cluster.threads_per_worker=2"]
    code = main(["submit", str(directory), "-o", str(tmp_path / "cdf.zarr"), *common])
    assert code == 3
    code_l0 = main(["submit", *(str(L0_DIR / name) for name, _ in pairs),
                    "-o", str(tmp_path / "l0.zarr"), *common])
    assert code_l0 == 0
    from idexdask.pipeline.runner import store_status

    summary = store_status(tmp_path / "cdf.zarr")
    assert sorted(f["input"].rsplit("/", 1)[-1] for f in summary.failures) == [
        "x_junk.cdf", "x_truncated.cdf"]
    assert summary.events_done == store_status(tmp_path / "l0.zarr").events_done > 0

    cdf_store = open_campaign(tmp_path / "cdf.zarr", dask=False).load()
    l0_store = open_campaign(tmp_path / "l0.zarr", dask=False).load()
    # what depends on the 3 samples the official product lacks (or on what it does
    # not carry): the TOF waveforms themselves, the combined TOF trace, the flags
    # saying so, the per-channel quality status (MISSING_SAMPLES), idx__sci0aid
    depends = {*HIGH_RATE, "tof_combined", "channel_status", "quality_flags", "quality_status",
               "tof_high_quality_status", "tof_mid_quality_status", "tof_low_quality_status",
               "idx__sci0aid"}
    assert set(cdf_store.variables) == set(l0_store.variables)
    compared = 0
    for name, variable in l0_store.variables.items():
        if name in depends:
            continue
        got = cdf_store[name].values
        assert np.array_equal(got, variable.values,
                              equal_nan=variable.dtype.kind == "f"), name
        compared += 1
    assert compared > 200
    for name in (*HIGH_RATE, "tof_combined"):
        assert np.array_equal(cdf_store[name].values[:, :SHARED_HIGH],
                              l0_store[name].values[:, :SHARED_HIGH],
                              equal_nan=True), name
    for name in ("tof_high_quality_status", "tof_mid_quality_status", "tof_low_quality_status"):
        # the fill samples add MISSING_SAMPLES (2) where nothing worse was found
        assert np.array_equal(cdf_store[name].values,
                              np.maximum(l0_store[name].values, 2)), name
