"""The ``idexdask decode`` and ``simulate`` commands, end to end, with real files."""

from __future__ import annotations

import numpy as np
import pytest

from idexdask import read_l0, read_trc
from idexdask.cli import main
from idexdask.packets.layout import CHANNELS
from idexdask.pipeline.export import open_campaign
from idexdask.pipeline.store import read_store_meta
from idexdask.simulate import write_campaign

from ..conftest import REAL_L0_FILES


def test_decode_real_files_to_zarr_and_read_back(tmp_path, l0_dir, capsys):
    store = tmp_path / "real.zarr"
    assert main(["decode", *map(str, REAL_L0_FILES), "-o", str(store), "--chunk", "4"]) == 0
    out = capsys.readouterr().out
    # 14 + 4 + 4 events: the compressed and uncompressed files hold the same 4
    # events, and each input's copy is stored (the duplicate-event policy of
    # decode and submit alike), tagged with its input_index and counted
    assert "events decoded     : 22" in out
    assert "repeated events    : 4" in out
    back = open_campaign(store, dask=False)
    assert back.sizes["epoch"] == 22
    assert back["TOF_High"].encoding["chunks"] == (4, 8192)
    assert back["TOF_High"].dtype == np.uint16
    inputs = read_store_meta(store)["inputs"]
    assert inputs == [str(p.resolve()) for p in REAL_L0_FILES]
    for number, file in enumerate(REAL_L0_FILES):
        direct = read_l0(file)
        rows = np.flatnonzero(back["input_index"].values == number)
        assert rows.size == direct.sizes["epoch"], file.name
        part = back.isel(epoch=rows)
        for spec in CHANNELS:
            np.testing.assert_array_equal(part[spec.name].values, direct[spec.name].values)
        np.testing.assert_array_equal(part["epoch"].values, direct["epoch"].values)
        np.testing.assert_array_equal(
            part["time_high_sample_rate"].values, direct["time_high_sample_rate"].values
        )
        np.testing.assert_array_equal(
            part["idx__txhdrblocks"].values, direct["idx__txhdrblocks"].values
        )
    assert list(back["channel"].values) == [c.name for c in CHANNELS]
    assert not any(name.startswith("peak_") for name in back.variables)  # no analysis


def test_decode_and_submit_write_the_same_variables(tmp_path, capsys):
    """decode is submit without the analysis: the same plan, units and store."""
    files = []
    for index, compress in enumerate((False, True)):
        files.append(tmp_path / f"sim{index}.pkts")
        write_campaign(files[-1], 9, compress=compress, seed=40 + index)
    files.append(files[0])  # an input given twice is read once
    decoded, submitted = tmp_path / "decoded.zarr", tmp_path / "submitted.zarr"
    assert main(["decode", *map(str, files), "-o", str(decoded), "--batch-events", "4"]) == 0
    assert main(["submit", *map(str, files), "-o", str(submitted), "--workers", "1",
                 "--batch-events", "4", "--set", "pipeline.analyze=false"]) == 0
    capsys.readouterr()
    a, b = open_campaign(decoded, dask=False), open_campaign(submitted, dask=False)
    assert a.sizes["epoch"] == b.sizes["epoch"] == 18
    assert sorted(a.variables) == sorted(b.variables)
    for name in a.variables:
        assert a[name].dims == b[name].dims, name
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    assert read_store_meta(decoded)["layout"] == read_store_meta(submitted)["layout"]


def test_decode_of_a_capture_directory_reads_captures(tmp_path, trc_dir, capsys):
    store = tmp_path / "lab.zarr"
    assert main(["decode", str(trc_dir), "-o", str(store)]) == 0
    out = capsys.readouterr().out
    assert "events decoded     : 3" in out
    back = open_campaign(store, dask=False)
    assert back["impact_number"].values.tolist() == [1, 3, 6]
    direct = read_trc(trc_dir)
    np.testing.assert_array_equal(back["TOF_High"].values, direct["TOF_High"].values)
    assert read_store_meta(store)["kind"] == "trc"


def test_decode_refuses_to_overwrite_and_reports_missing_input(tmp_path, capsys):
    store = tmp_path / "s.zarr"
    store.mkdir()
    assert main(["decode", str(REAL_L0_FILES[0]), "-o", str(store)]) == 2
    assert "exists" in capsys.readouterr().out
    assert main(["decode", str(tmp_path / "nope.pkts"), "-o", str(tmp_path / "t.zarr")]) == 2
    assert "not found" in capsys.readouterr().out


@pytest.mark.parametrize("compress", [False, True])
def test_simulate_command_writes_decodable_file(tmp_path, compress, capsys):
    path = tmp_path / "sim.pkts"
    args = ["simulate", "-n", "7", "-o", str(path), "--seed", "3"]
    assert main(args + (["--compress"] if compress else [])) == 0
    assert "wrote 7" in capsys.readouterr().out
    decoded = read_l0(path)
    assert decoded.sizes["epoch"] == 7
    assert bool(decoded["compressed"].values.all()) is compress
    assert not decoded["quality_flags"].values.any()
