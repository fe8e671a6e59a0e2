"""pipeline/manifest.py: the append-only run journal of a store."""

from __future__ import annotations

import json

import numpy as np

from idexdask.pipeline.manifest import MANIFEST_NAME, PIPELINE_DIR, Manifest, pipeline_dir


def test_pipeline_dir_is_an_empty_zarr_group_once_created(tmp_path):
    store = tmp_path / "s.zarr"
    path = pipeline_dir(store)
    assert path == store / PIPELINE_DIR and not path.exists()  # not created unless asked
    pipeline_dir(store, create=True)
    marker = json.loads((path / "zarr.json").read_text())
    assert marker == {"zarr_format": 3, "node_type": "group", "attributes": {}}


def test_records_come_back_in_order_with_numpy_values_as_json(tmp_path):
    manifest = Manifest(tmp_path / "s.zarr")
    assert list(manifest.records()) == []  # no journal yet
    manifest.append({"record": "run_start", "run_id": "a", "units": np.int64(3)})
    manifest.extend([
        {"record": "unit", "uid": "u1", "status": "done", "region": (0, 4),
         "elapsed_s": np.float32(0.5)},
        {"record": "unit", "uid": "u2", "status": "failed", "reason": "bad"},
    ])
    manifest.extend([])  # nothing to write: no empty line either
    records = list(manifest.records())
    assert [r["record"] for r in records] == ["run_start", "unit", "unit"]
    assert records[0]["units"] == 3 and isinstance(records[0]["units"], int)
    assert records[1]["region"] == [0, 4] and records[1]["elapsed_s"] == 0.5
    text = (tmp_path / "s.zarr" / PIPELINE_DIR / MANIFEST_NAME).read_text()
    assert text.count("\n") == 3 and text.endswith("\n")


def test_latest_unit_record_wins(tmp_path):
    manifest = Manifest(tmp_path)
    manifest.extend([{"record": "unit", "uid": "u1", "status": "failed", "reason": "x"},
                     {"record": "unit", "uid": "u2", "status": "done"},
                     {"record": "run_end", "run_id": "a"},
                     {"record": "unit", "uid": "u1", "status": "done"}])
    latest = manifest.latest_units()
    assert set(latest) == {"u1", "u2"}
    assert latest["u1"]["status"] == "done"


def test_a_torn_or_unreadable_line_is_skipped(tmp_path, caplog):
    """A crash mid-write leaves the last line without its newline: that unit is
    redone, never counted; a line that is not JSON is skipped with a warning."""
    manifest = Manifest(tmp_path)
    manifest.append({"record": "unit", "uid": "u1", "status": "done"})
    with open(manifest.path, "a", encoding="utf-8") as stream:
        stream.write("not json\n")
        stream.write('{"record": "unit", "uid": "u2", "status": "do')
    assert [r["uid"] for r in manifest.records()] == ["u1"]
    assert "incomplete line 3" in caplog.text and "unreadable line 2" in caplog.text
    # the next run appends after the torn line: its record starts a line of its own
    manifest.append({"record": "unit", "uid": "u3", "status": "done"})
    assert [r["uid"] for r in manifest.records()] == ["u1", "u3"]


def test_clear_removes_the_journal(tmp_path):
    manifest = Manifest(tmp_path)
    manifest.append({"record": "run_start", "run_id": "a"})
    manifest.clear()
    assert not manifest.path.exists() and list(manifest.records()) == []
    manifest.clear()  # clearing twice is no error
