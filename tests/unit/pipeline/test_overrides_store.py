"""The store's override table: read, add, undo/redo, validation, atomic writes, locking."""

from __future__ import annotations

import json
import multiprocessing
import threading

import numpy as np
import pytest
import zarr

from idexdask.analysis.overrides import active_overrides, override_digest
from idexdask.errors import StoreError, StoreLockedError
from idexdask.pipeline.lock import store_lock
from idexdask.pipeline.overrides_store import (
    add_override_rows,
    event_override_rows,
    overrides_path,
    read_store_overrides,
    redo_override,
    store_write_lock,
    undo_override,
    write_store_overrides,
)
from idexdask.pipeline.store import META_ATTR

EPOCHS = np.array([1000, 2000, 3000], dtype=np.int64)


@pytest.fixture()
def store(tmp_path):
    """A minimal campaign store: the pipeline attribute and an epoch array, as submit writes."""
    path = tmp_path / "campaign.zarr"
    group = zarr.open_group(str(path), mode="w")
    group.attrs[META_ATTR] = json.dumps({"n_events": 3, "layout": []})
    group.create_array("epoch", data=EPOCHS)
    return path


def test_empty_table_and_not_a_store(store, tmp_path):
    table = read_store_overrides(store)
    assert table.sizes["override"] == 0
    with pytest.raises(StoreError, match="not a campaign store"):
        read_store_overrides(tmp_path / "nothing")
    foreign = tmp_path / "foreign.zarr"
    zarr.open_group(str(foreign), mode="w")
    with pytest.raises(StoreError, match="not written by"):
        read_store_overrides(foreign)
    with pytest.raises(StoreError):
        add_override_rows(foreign, [{"epoch": 1000, "action": "add", "center_us": 1.0}])


def test_add_undo_redo_keeps_history(store):
    ids = add_override_rows(
        store,
        [
            {"epoch": 2000, "action": "add", "center_us": 3.2, "note": "missed Na line"},
            {"epoch": 2000, "action": "species", "center_us": 3.2, "species": "Na"},
            {"epoch": 1000, "action": "shape", "center_us": 1.5, "shape": "voigt"},
        ],
        author="alice",
    )
    assert len(ids) == 3 and len(set(ids)) == 3
    table = read_store_overrides(store)
    assert list(table["override"].values) == ids
    assert set(table["author"].values) == {"alice"}
    assert set(table["origin"].values) == {"dashboard"}
    assert all(table["created"].values)  # a time on every row
    assert table["note"].values[0] == "missed Na line"
    before = override_digest(table, [2000])
    other = override_digest(table, [1000])

    row = undo_override(store, ids[1], author="bob")
    assert row["undone"] and row["undone_by"] == "bob"
    table = read_store_overrides(store)
    assert table.sizes["override"] == 3  # kept, marked undone
    assert active_overrides(table).sizes["override"] == 2
    assert override_digest(table, [2000]) != before
    assert override_digest(table, [1000]) == other  # other events unaffected
    assert [r["id"] for r in event_override_rows(table, 2000)] == [ids[0]]
    assert len(event_override_rows(table, 2000, include_undone=True)) == 2
    with pytest.raises(StoreError, match="already undone"):
        undo_override(store, ids[1])
    redo_override(store, ids[1])
    assert override_digest(read_store_overrides(store), [2000]) == before
    with pytest.raises(StoreError, match="no override row"):
        undo_override(store, "nope")


def test_invalid_rows_leave_the_table_unchanged(store):
    add_override_rows(store, [{"epoch": 1000, "action": "remove", "center_us": 2.0}])
    text = overrides_path(store).read_text()
    bad_rows = [
        {"epoch": 1000, "action": "shape", "center_us": 2.0, "shape": "lorentzian"},
        {"epoch": 1000, "action": "species", "center_us": 2.0, "species": "Xx"},
        {"epoch": 1000, "action": "add"},  # no centre
        {"epoch": 4000, "action": "add", "center_us": 1.0},  # not an event of the store
        {"epoch": 1000, "action": "window", "target": "Target_Low",
         "window_start_us": 5.0, "window_stop_us": 1.0},
    ]
    for bad in bad_rows:
        with pytest.raises(StoreError):
            add_override_rows(store, [bad])
    assert overrides_path(store).read_text() == text
    with pytest.raises(StoreError):
        write_store_overrides(store, [{"epoch": 1000, "action": "explode"}])
    assert overrides_path(store).read_text() == text


def test_write_replaces_whole_table(store):
    add_override_rows(store, [{"epoch": 1000, "action": "remove", "center_us": 2.0}])
    table = read_store_overrides(store)
    write_store_overrides(store, table.isel(override=slice(0, 0)), purpose="test")
    assert read_store_overrides(store).sizes["override"] == 0
    assert not list(overrides_path(store).parent.glob("*.tmp"))


def _hold_lock(store, ready, release):
    with store_lock(store, purpose="idexdask submit"):
        ready.set()
        release.wait(30)


def test_writes_take_the_store_lock(store):
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(store, ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(StoreLockedError, match="idexdask submit"):
            add_override_rows(store, [{"epoch": 1000, "action": "remove", "center_us": 2.0}])
        with pytest.raises(StoreLockedError):
            write_store_overrides(store, [])
        assert not overrides_path(store).exists()
    finally:
        release.set()
        holder.join(30)
    add_override_rows(store, [{"epoch": 1000, "action": "remove", "center_us": 2.0}])
    assert read_store_overrides(store).sizes["override"] == 1
    with store_write_lock(store, purpose="dashboard"):  # released after each write
        pass


def test_concurrent_saves_of_one_process_all_land(store):
    """Two sessions of one dashboard server saving at once: both rows are kept."""
    errors = []

    def save(center):
        try:
            for k in range(5):
                add_override_rows(store, [{"epoch": 2000, "action": "add",
                                           "center_us": center + 0.01 * k}])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(c,)) for c in (1.0, 2.0, 3.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    table = read_store_overrides(store)
    assert table.sizes["override"] == 15
    assert len(set(table["override"].values)) == 15
