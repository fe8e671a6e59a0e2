"""The ``idexdask decode`` and ``simulate`` commands, end to end, with real files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from idexdask import read_l0
from idexdask.cli import main
from idexdask.packets.layout import CHANNELS

from ..conftest import REAL_L0_FILES


def test_decode_real_files_to_zarr_and_read_back(tmp_path, l0_dir, capsys):
    store = tmp_path / "real.zarr"
    assert main(["decode", *map(str, REAL_L0_FILES), "-o", str(store), "--chunk", "4"]) == 0
    out = capsys.readouterr().out
    # 14 + 4 events: the compressed and uncompressed files hold the same 4 events,
    # which are kept once (from the first input)
    assert "events decoded     : 18" in out
    back = xr.open_zarr(store, consolidated=False)
    assert back.sizes["epoch"] == 18
    assert back["TOF_High"].encoding["chunks"] == (4, 8192)
    assert back["TOF_High"].dtype == np.uint16
    sources = json.loads(back.attrs["sources"])
    seen: set[int] = set()
    for file in REAL_L0_FILES:
        direct = read_l0(file)
        new = ~np.isin(direct["epoch"].values, list(seen))
        seen.update(direct["epoch"].values.tolist())
        direct = direct.isel(epoch=np.flatnonzero(new))
        rows = back["source_index"].values == sources.index(file.name)
        assert rows.sum() == direct.sizes["epoch"], file.name
        part = back.isel(epoch=np.flatnonzero(rows))
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
