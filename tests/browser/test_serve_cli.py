"""`idexdask serve` refuses bad stores and unsafe options before serving (exit 2)."""

from __future__ import annotations

import pytest

from idexdask.dashboard.data import StoreData
from idexdask.errors import StoreError
from tests.browser.conftest import run_cli


def test_not_a_store_exits_2(tmp_path):
    missing = run_cli("serve", str(tmp_path / "nothing.zarr"), check=False, timeout=120)
    assert missing.returncode == 2 and "does not exist" in missing.stdout
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    other = run_cli("serve", str(folder), check=False, timeout=120)
    assert other.returncode == 2 and "not a Zarr store" in other.stdout
    assert "Traceback" not in other.stdout + other.stderr


def test_foreign_zarr_store_exits_2(tmp_path):
    import zarr

    zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w").attrs["tool"] = "other"
    result = run_cli("serve", str(tmp_path / "foreign.zarr"), check=False, timeout=120)
    assert result.returncode == 2 and "not written by `idexdask submit`" in result.stdout


def test_public_address_needs_websocket_origin(l0_store):
    result = run_cli("serve", str(l0_store), "--address", "0.0.0.0", check=False, timeout=120)
    assert result.returncode == 2 and "--allow-websocket-origin" in result.stdout
    port = run_cli("serve", str(l0_store), "--port", "70000", check=False, timeout=120)
    assert port.returncode == 2 and "not a TCP port" in port.stdout


@pytest.mark.slow
def test_store_data_reads_rows_lazily_and_checks_events(l0_store):
    data = StoreData(l0_store)
    scalars = data.scalars()
    assert len(scalars) == 22 and scalars["event"].tolist() == list(range(22))
    assert {"tof_high_snr", "target_low_impact_charge", "quality"} <= set(scalars.columns)
    with pytest.raises(StoreError, match="out of range"):
        data.check_event(22)
    with pytest.raises(StoreError, match="integer"):
        data.check_event("../etc")
    row = data.event(4)
    assert row.dataset.sizes["epoch"] == 1
    lines = data.lines(4)
    assert len(lines) == int(row.event["peak_count"].values)
    assert data.waveform_names() == ["TOF_High", "TOF_Mid", "TOF_Low", "Target_High",
                                     "Target_Low", "Ion_Grid"]
