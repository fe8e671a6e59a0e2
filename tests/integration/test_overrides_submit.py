"""`idexdask submit` reapplies the store's override table and redoes exactly the changed units.

A real Dask cluster (the embedded LocalCluster: two worker processes), a
simulated campaign and the real L0 files: a line added through the store API
(as the dashboard's studio saves it) is in the products after a rerun, only
its unit is reprocessed, and undoing the row brings the automatic products back.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from idexdask.analysis.overrides import LINE_SHAPES
from idexdask.cli import main
from idexdask.config import load_config
from idexdask.pipeline.export import open_campaign
from idexdask.pipeline.manifest import Manifest
from idexdask.pipeline.overrides_store import (
    add_override_rows,
    read_store_overrides,
    undo_override,
    units_awaiting_overrides,
)
from idexdask.pipeline.ragged import peaks_from_event_major
from idexdask.pipeline.runner import run_campaign
from idexdask.simulate import write_campaign

CONFIG = {
    "cluster": {"workers": 2, "threads_per_worker": 1, "dashboard": ":0",
                "memory_limit": "0"},
    "pipeline": {"batch_events": 8, "chunk_events": 8},
}


def _lines(store: Path):
    """Ragged lines of the store (peak_event indexes epoch), loaded."""
    ds = open_campaign(store, dask=False)
    names = [n for n in ds.variables if n.startswith("peak_") or n in ("epoch", "input_index")]
    out = peaks_from_event_major(ds[names].load())
    ds.close()
    return out


def _units_of_run(store: Path) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for record in Manifest(store).records():
        if record.get("record") == "unit":
            runs.setdefault(record["run_id"], []).append(record)
    return runs


def _last_run(store: Path) -> list[dict]:
    runs = _units_of_run(store)
    return runs[list(runs)[-1]] if runs else []


def _free_spot(lines, event: int) -> float:
    """A time (µs) in the widest gap between the event's lines, away from both."""
    centers = np.sort(lines.peak_center.values[lines.peak_event.values == event])
    centers = centers[np.isfinite(centers)]
    gaps = np.diff(centers)
    k = int(np.argmax(gaps))
    return float(centers[k] + 0.5 * gaps[k])


def _manual_lines(lines, event: int) -> np.ndarray:
    mine = lines.peak_event.values == event
    return np.nonzero(mine & lines.peak_manual.values.astype(bool))[0]


def _check_added_and_only_unit_redone(store, config, inputs, event, spot):
    """Run submit again: the added line is there and only the event's unit was redone."""
    lines = _lines(store)
    epoch = int(lines.epoch.values[event])
    summary = run_campaign(inputs, store, config)
    assert summary.failures == []
    redone = _last_run(store)
    assert len(redone) == 1, [r["uid"] for r in redone]
    start, stop = redone[0]["region"]
    assert start <= event < stop
    assert summary.events_this_run == stop - start
    assert summary.units_skipped == summary.units_total - 1
    assert redone[0]["overrides_hash"]
    after = _lines(store)
    assert int(after.epoch.values[event]) == epoch
    manual = _manual_lines(after, event)
    assert manual.size == 1
    j = int(manual[0])
    assert after.peak_window_start.values[j] <= spot <= after.peak_window_stop.values[j]
    n_before = int(np.sum(lines.peak_event.values == event))
    assert int(np.sum(after.peak_event.values == event)) == n_before + 1
    # every other event's lines are as they were
    others = after.peak_event.values != event
    np.testing.assert_array_equal(
        after.peak_center.values[others],
        lines.peak_center.values[lines.peak_event.values != event],
    )
    return after


def test_simulated_campaign_line_added_survives_submit(tmp_path, capsys):
    sim = tmp_path / "sim.pkts"
    write_campaign(sim, 40, compress=True, seed=21)
    config = load_config(CONFIG)
    store = tmp_path / "campaign.zarr"
    first = run_campaign([sim], store, config)
    assert first.failures == [] and first.units_total >= 4
    event = 19
    lines = _lines(store)
    spot = _free_spot(lines, event)
    epoch = int(lines.epoch.values[event])
    assert units_awaiting_overrides(store) == []
    (row_id,) = add_override_rows(
        store, [{"epoch": epoch, "action": "add", "target": "tof", "center_us": spot,
                 "note": "line the detection missed"}], author="tester")
    (waiting,) = units_awaiting_overrides(store)
    assert waiting["region"][0] <= event < waiting["region"][1]
    capsys.readouterr()
    assert main(["status", str(store)]) == 0
    out = capsys.readouterr().out
    assert ("manual overrides   : 1 in force, 0 undone; 1 unit(s) redone by the next submit"
            in out)
    # the status says whether the run's campaign calibration step has run
    from idexdask.pipeline.campaign_config import recalibrates

    assert ("campaign step      : done, " in out) == recalibrates(config), out
    _check_added_and_only_unit_redone(store, config, [sim], event, spot)
    assert units_awaiting_overrides(store) == []

    # nothing changed: nothing is redone
    again = run_campaign([sim], store, config)
    assert again.events_this_run == 0 and again.units_skipped == again.units_total

    # undo: the unit is redone once more, and the automatic lines come back
    undo_override(store, row_id, author="tester")
    assert read_store_overrides(store).sizes["override"] == 1  # kept, marked undone
    undone = run_campaign([sim], store, config)
    assert len(_last_run(store)) == 1 and undone.units_skipped == undone.units_total - 1
    back = _lines(store)
    np.testing.assert_array_equal(back.peak_center.values, lines.peak_center.values)
    assert _last_run(store)[0]["overrides_hash"] == ""

    # --overwrite keeps the table (a person's edits outlive the products)
    run_campaign([sim], store, config, overwrite=True)
    table = read_store_overrides(store)
    assert list(table["override"].values) == [row_id] and table["undone"].values[0]


def test_real_l0_store_line_added_survives_submit(tmp_path, l0_dir):
    inputs = [l0_dir / "imap_idex_l0_raw_20231218_v001.pkts",
              l0_dir / "imap_idex_l0_raw_20241206_v001.pkts"]
    config = load_config(CONFIG)
    store = tmp_path / "real.zarr"
    first = run_campaign(inputs, store, config)
    assert first.failures == [] and first.units_total >= 2
    lines = _lines(store)
    counts = np.bincount(lines.peak_event.values, minlength=lines.sizes["epoch"])
    event = int(np.argmax(counts))  # the event with most lines: gaps between them
    assert counts[event] >= 2
    spot = _free_spot(lines, event)
    add_override_rows(store, [{"epoch": int(lines.epoch.values[event]), "action": "add",
                               "target": "tof", "center_us": spot}])
    after = _check_added_and_only_unit_redone(store, config, inputs, event, spot)
    j = int(_manual_lines(after, event)[0])

    # a second save on the same event (shape and species of its strongest line):
    # its unit is redone again, and both edits are in the products
    mine = np.nonzero(after.peak_event.values == event)[0]
    k = int(mine[np.nanargmax(np.where(mine == j, -np.inf, after.peak_area.values[mine]))])
    center = float(after.peak_center.values[k])
    epoch = int(after.epoch.values[event])
    add_override_rows(store, [
        {"epoch": epoch, "action": "shape", "center_us": center, "shape": "gaussian"},
        {"epoch": epoch, "action": "species", "center_us": center, "species": "Na"},
    ])
    summary = run_campaign(inputs, store, config)
    assert len(_last_run(store)) == 1 and summary.units_skipped == summary.units_total - 1
    again = _lines(store)
    mine = np.nonzero(again.peak_event.values == event)[0]
    k2 = int(mine[np.argmin(np.abs(again.peak_center.values[mine] - center))])
    assert LINE_SHAPES[again.peak_shape.values[k2]] == "gaussian"
    assert again.peak_species.values[k2] == "Na" and again.peak_species_manual.values[k2]
    assert again.peak_manual.values[mine].sum() == 2

    # a detected line removed and added back by hand in its own window: the
    # same line, now manual, fitted to the same samples
    auto = mine[~again.peak_manual.values[mine].astype(bool)]
    m = int(auto[np.nanargmax(again.peak_area.values[auto])])
    c, w0, w1 = (float(again[n].values[m])
                 for n in ("peak_center", "peak_window_start", "peak_window_stop"))
    add_override_rows(store, [
        {"epoch": epoch, "action": "remove", "center_us": c, "tolerance_us": 0.02},
        {"epoch": epoch, "action": "add", "center_us": c, "window_start_us": w0,
         "window_stop_us": w1},
    ])
    run_campaign(inputs, store, config)
    assert len(_last_run(store)) == 1
    third = _lines(store)
    mine3 = np.nonzero(third.peak_event.values == event)[0]
    assert mine3.size == mine.size
    m3 = int(mine3[np.argmin(np.abs(third.peak_center.values[mine3] - c))])
    assert third.peak_manual.values[m3] and third.peak_status.values[m3] <= 1
    # same samples and window, a start a fraction of a sample away: the fit reaches
    # the same minimum; 0.1 sigma leaves room for the optimiser's stopping tolerance
    assert abs(third.peak_center.values[m3] - c) <= 0.1 * again.peak_center_err.values[m]
    assert (abs(third.peak_area.values[m3] - again.peak_area.values[m])
            <= 0.1 * again.peak_area_err.values[m])
    logging.getLogger(__name__).info(
        "real event %d, line re-added by hand: centre %.5f -> %.5f us (err %.2g), "
        "area %.5g -> %.5g (err %.2g), status %d -> %d", event, c,
        third.peak_center.values[m3], again.peak_center_err.values[m],
        again.peak_area.values[m], third.peak_area.values[m3], again.peak_area_err.values[m],
        again.peak_status.values[m], third.peak_status.values[m3])
    logging.getLogger(__name__).info(
        "real event %d: line added at %.4f us -> fitted centre %.4f us, area %.4g, status %d",
        event, spot, after.peak_center.values[j], after.peak_area.values[j],
        after.peak_status.values[j])
