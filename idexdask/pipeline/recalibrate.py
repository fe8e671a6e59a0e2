"""The campaign calibration step of ``idexdask submit``: reduce, then map.

The per-event analysis (the pack tasks) calibrates the events of each pack
together; the instrument is calibrated per *group* (one input file, one lab
run), whose events may span many packs.  Once every pack is written:

1. **reduce** -- one task per group reads the group's line lists from the store
   (``peak_center``, ``peak_area``, ``peak_status``: kilobytes per event, on the
   worker that reads them), recomputes each event's own bootstrap calibration
   and runs :func:`~idexdask.calibration.campaign.calibrate_groups` over the
   group; only the per-event coefficients, statuses and line residuals go back;
2. **map** -- one task per span of contiguous units (whole store chunks where
   the units allow) recomputes the calibration-dependent products of its rows
   (``mass_calibration*``, ``peak_mass``, ``peak_mass_tolerance``,
   ``peak_calibration_residual``, the composition products and the targeted
   search, which reads the rows' merged spectra around the target times only)
   and writes them into its region of the store.

Each task opens the store with the variables it reads only: xarray reads the
metadata of every variable it lists.

The joint result of every group (shape, events, anchors, rms residual) is kept
in the store's attribute ``campaign_calibration`` and in the ``mass_calibration``
variable's attributes (and so in the exports), and the step is journalled in
the manifest (record ``campaign``): a resumed run whose done units and
configuration are those of the last completed step skips it; any other change
runs it again over every group (it is cheap against the analysis).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr
from zarr.storage import LocalStore, WrapperStore

from idexdask.pipeline.campaign_config import recalibrates
from idexdask.pipeline.chunk_reads import read_chunks
from idexdask.pipeline.plan import Unit

if TYPE_CHECKING:
    from idexdask.composition.settings import CompositionSettings

__all__ = ["apply_region", "campaign_step", "reduce_group"]

logger = logging.getLogger(__name__)

_LINE_VARIABLES = (
    "peak_center", "peak_area", "peak_area_err", "peak_status", "peak_center_at_mode",
    "peak_sigma", "peak_gamma", "peak_count",
)
#: What a hand calibration or species assignment (override rows) keeps.
_KEPT = (
    "mass_calibration", "mass_calibration_status", "mass_calibration_reason",
    "mass_calibration_method", "peak_calibration_residual", "peak_species",
    "peak_species_manual",
)


class _ListedStore(WrapperStore):
    """A read-only local Zarr store whose root lists only the variables ``keep`` accepts.

    Opening a store reads every listed variable's metadata (its ``zarr.json``):
    ~45 ms of CPU for a lab store's ~190 variables, paid by every task of the
    step, where a task reads ~20 of them (~7 ms).  The other variables are
    left out of the root's listing; everything else is the store's own.
    """

    def __init__(self, store: LocalStore, keep: Callable[[str], bool]) -> None:
        super().__init__(store)
        self.keep = keep

    def _with_store(self, store: LocalStore) -> _ListedStore:
        return type(self)(store, self.keep)

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        async for key in self._store.list_dir(prefix):
            if prefix or key == "zarr.json" or self.keep(key):
                yield key


def _open(store: str, keep: Callable[[str], bool] | None = None) -> xr.Dataset:
    """The store, lazily, with the variables ``keep`` accepts (every one: None).

    Each task opens it once; reading a variable's metadata costs ~0.25 ms.
    """
    source = store if keep is None else _ListedStore(LocalStore(store, read_only=True), keep)
    return xr.open_zarr(source, consolidated=False, chunks=None)


def _row_runs(regions: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """``regions`` in order, each run of contiguous ones joined (one read per run).

    A lab group has one unit per impact: reading its rows unit by unit would cost
    a Zarr read and a concatenation per impact for what is one slice.
    """
    runs: list[tuple[int, int]] = []
    for a, b in regions:
        if runs and runs[-1][1] == a:
            runs[-1] = (runs[-1][0], b)
        else:
            runs.append((a, b))
    return runs


def _rows(ds: xr.Dataset | None, names: Sequence[str], regions: Sequence[tuple[int, int]],
          store: str | None = None) -> xr.Dataset:
    """Variables ``names`` of the store rows in ``regions``, in that order (loaded).

    With the ``store``'s path, the variables :func:`~idexdask.pipeline.chunk_reads.read_chunks`
    reads come from
    their chunk files, the others through xarray (``ds``, the store opened; None:
    opened here with those variables only, when there are any).
    """
    runs = _row_runs(regions)
    direct = {}
    for name in names if store is not None else ():
        variable = read_chunks(store, name, runs)
        if variable is not None:
            direct[name] = variable
    rest = [n for n in names if n not in direct]
    if not rest:
        return xr.Dataset(direct)
    if ds is None:
        ds = _open(str(store), lambda name: name in rest or name == "epoch")
    parts = [ds[rest].isel(epoch=slice(a, b)).load() for a, b in runs]
    loaded = xr.concat(parts, "epoch") if len(parts) > 1 else parts[0]
    return loaded.assign(direct) if direct else loaded


def _read_rows(ds: xr.Dataset, regions: Sequence[tuple[int, int]], store: str) -> xr.Dataset:
    """The line variables of the store rows in ``regions``, in that order (loaded)."""
    return _rows(ds, [n for n in _LINE_VARIABLES if n in ds.variables], regions, store)


def _high_voltage_labels(present: Callable[[str], bool], regions: Sequence[tuple[int, int]],
                         n: int, store: str) -> np.ndarray:
    """(n,) calibration group labels of one input's rows: ``"0"``, split by HV setting.

    As :func:`idexdask.analyze` does: events of one input recorded at two
    high-voltage settings never share a mass scale.  A store without the stored
    voltages (lab captures, ``pipeline.analyze: false``) keeps one group.
    """
    from idexdask.analysis.hv_settings import split_groups_by_high_voltage
    from idexdask.analysis.instrument_table import load_instrument_table

    labels = np.zeros(n, dtype=np.int64).astype(str)
    names = load_instrument_table().high_voltage_groups.voltages
    if not all(present(name) for name in names):
        return labels
    return split_groups_by_high_voltage(labels, _rows(None, names, regions, store))


def _flat_lines(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """Event-major lines -> flat arrays (event index, values) in slot order."""
    count = np.asarray(ds["peak_count"].values, dtype=np.int64)
    count = np.where(count > 0, count, 0)
    slots = ds.sizes.get("peak_slot", 0)
    used = np.arange(slots)[None, :] < count[:, None]
    event, _ = np.nonzero(used)
    out = {"event": event, "used": used}
    for name in ("peak_center", "peak_area", "peak_area_err", "peak_status",
                 "peak_center_at_mode", "peak_sigma", "peak_gamma"):
        if name in ds:
            out[name] = np.asarray(ds[name].values)[used]
    return out


def _preset(config: Mapping[str, Any], kind: str) -> tuple[str, Any]:
    from idexdask.calibration import load_calibration_settings
    from idexdask.sources import sources
    from idexdask.sources.defaults import resolve_preset

    section = config.get("calibration") or {}
    preset = resolve_preset(section, {"source_kind": sources.by_kind(kind).source_kind})
    path = section.get("settings_file") or None
    if path == "calibration.yaml":
        path = None
    return preset, load_calibration_settings(preset, path=path)


def reduce_group(store: str, regions: Sequence[tuple[int, int]], kind: str,
                 config: Mapping[str, Any]) -> dict[str, Any]:
    """The joint calibration of one group (task 1 of the step).

    Parameters
    ----------
    store : str
        Campaign store.
    regions : sequence of (int, int)
        Store rows of the group's done units.
    kind : str
        The units' kind (``l0``, ``trc``): picks the preset when it is ``auto``.
    config : mapping
        The run configuration.

    Returns
    -------
    dict
        ``coefficients`` (E, 4), ``status``, ``reason``, ``method`` (E,),
        ``residual`` (E, peak_slot) µs, ``preset`` and ``summary`` of the group.
    """
    from idexdask.calibration import comb_calibrations
    from idexdask.calibration.campaign import CampaignSettings, calibrate_groups
    from idexdask.calibration.products import CAL_ORDER

    # the store's variables from its listing: opening it through xarray (~14 ms of
    # CPU) only where a variable is not read from its chunk files (_rows)
    listed = set(os.listdir(store))
    ds = _rows(None, [n for n in _LINE_VARIABLES if n in listed], regions, store)
    n = int(ds.sizes["epoch"])
    lines = _flat_lines(ds)
    preset, settings = _preset(config, kind)
    cal_cfg = config["analysis"]["calibration"]
    center, area = lines["peak_center"].astype(float), lines["peak_area"].astype(float)
    good = (lines["peak_status"] <= int(cal_cfg["max_fit_status"])) & np.isfinite(center)
    good &= np.isfinite(area) & (area > 0)
    if "peak_center_at_mode" in lines:  # as analyze(): mode-centred lines are not used
        good &= ~lines["peak_center_at_mode"].astype(bool)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(lines["event"][good], minlength=n), out=offsets[1:])
    batch = comb_calibrations(center[good], area[good], offsets, settings=settings)
    labels = _high_voltage_labels(listed.__contains__, regions, n, store)
    grouped = calibrate_groups(
        lines["event"], center, area, good, labels, settings,
        CampaignSettings.from_config(cal_cfg.get("campaign")),
        batch.stacked(order=CAL_ORDER), batch.n_matched,
    )
    calibrated = np.all(np.isfinite(grouped.coefficients[:, :2]), axis=1)
    residual = np.full(lines["used"].shape, np.nan, dtype=np.float64)
    residual[lines["used"]] = grouped.residual_us
    # one input at one high-voltage setting: its group's summary; an input recorded
    # at several settings: one summary per setting, by label
    parts = sorted(set(labels.tolist()))
    summary = (grouped.groups.get("0", {}) if parts == ["0"]
               else {"high_voltage_settings": {label: grouped.groups.get(label, {})
                                               for label in parts}})
    return {
        "coefficients": grouped.coefficients,
        "status": np.where(calibrated, "calibrated", batch.status).astype(str),
        "reason": np.where(calibrated, "none", batch.reason).astype(str),
        "method": grouped.method.astype(str),
        "residual": residual,
        "preset": preset,
        "tolerance_us": float(settings.bootstrap.tolerance_us),
        "summary": summary,
    }


def apply_region(store: str, region: tuple[int, int], part: Mapping[str, Any],
                 groups: Mapping[str, Any], config: Mapping[str, Any], rows: int,
                 n_events: int, composition: CompositionSettings | None = None,
                 ) -> tuple[int, list[str]]:
    """Write the calibration-dependent products of a span of rows (task 2).

    ``region`` is one unit's rows or several contiguous units' rows of one
    group; ``part`` holds those rows of the group's :func:`reduce_group`
    result; ``groups`` the summaries of every group (the ``mass_calibration``
    attributes).  Every product is per event, so a span gives the same values
    as its units one by one.  ``composition``: the configuration's composition
    settings, made once for every task (from a configuration mapping,
    :func:`~idexdask.composition.settings.composition_settings` validates the
    whole configuration again, ~10 ms a call); None: made here.  Returns the
    number of events written and the variables.
    """
    from idexdask.calibration.products import calibration_variables
    from idexdask.composition.products import composition_variables
    from idexdask.composition.settings import composition_settings
    from idexdask.pipeline.region_write import write_region
    from idexdask.pipeline.units import normalise_for_store

    opened = _open(store, lambda name: name in _LINE_VARIABLES or name in _KEPT
                   or name == "epoch" or _targeted_input(name))
    ds = _read_rows(opened, [region], store)
    n = int(ds.sizes["epoch"])
    lines = _flat_lines(ds)
    coefficients = np.array(part["coefficients"], dtype=float)
    status = np.array(part["status"], dtype=object)
    reason = np.array(part["reason"], dtype=object)
    method = np.array(part["method"], dtype=object)
    residual = np.asarray(part["residual"])[lines["used"]]
    # events calibrated by hand (override rows `calibrate`) keep that calibration
    kept = _stored(opened, region, _KEPT, store)
    if "mass_calibration_method" in kept:
        manual = _strings(kept["mass_calibration_method"].values) == "manual"
        if manual.any():
            coefficients[manual] = kept["mass_calibration"].values[manual]
            status[manual] = _strings(kept["mass_calibration_status"].values)[manual]
            reason[manual] = _strings(kept["mass_calibration_reason"].values)[manual]
            method[manual] = "manual"
            if "peak_calibration_residual" in kept:
                mine = manual[lines["event"]]
                residual = np.where(
                    mine, kept["peak_calibration_residual"].values[lines["used"]], residual)
    variables = calibration_variables(
        coefficients, status.astype(str), reason.astype(str), method.astype(str), residual,
        lines["event"], lines["peak_center"], part["preset"], groups, part["tolerance_us"],
    )
    calibrated = np.all(np.isfinite(coefficients[:, :2]), axis=1)
    peaks = {
        "peak_event": xr.Variable(("peak",), lines["event"]),
        "peak_mass": variables["peak_mass"],
        "peak_mass_tolerance": variables["peak_mass_tolerance"],
        "peak_area": xr.Variable(("peak",), lines["peak_area"]),
        "peak_area_err": xr.Variable(("peak",), lines["peak_area_err"]),
    }
    if "peak_species_manual" in kept:  # species assigned by hand stay assigned
        by_hand = np.asarray(kept["peak_species_manual"].values)[lines["used"]].astype(bool)
        if by_hand.any():
            species = _strings(kept["peak_species"].values)[lines["used"]]
            peaks["peak_species_by_hand"] = xr.Variable(
                ("peak",), np.where(by_hand, species, ""))
    settings = composition_settings(config if composition is None else composition)
    comp, _ = composition_variables(peaks, n, settings, calibrated=calibrated)
    comp.update(_targeted(opened, region, lines, coefficients, calibrated, settings, store))
    names = [k for k in (*variables, *comp) if k != "calibration_coefficient"]
    out = xr.Dataset(
        {**{k: v for k, v in comp.items() if k not in ("epoch",)}, **variables,
         "peak_event": peaks["peak_event"], "peak_center": xr.Variable(
             ("peak",), lines["peak_center"]),
         "peak_area": peaks["peak_area"]},
        coords={"epoch": np.asarray(opened["epoch"].values[region[0]:region[1]])},
    )
    max_peaks = int(ds.sizes.get("peak_slot", 64))
    stored = normalise_for_store(out, 0, max_peaks=max_peaks)
    keep = [k for k in names if k in stored.variables and "epoch" in stored.variables[k].dims]
    write_region(store, stored[keep], region, rows=rows, n_events=n_events)
    return n, keep


def _targeted(ds: xr.Dataset, region: tuple[int, int], lines: Mapping[str, np.ndarray],
              coefficients: np.ndarray, calibrated: np.ndarray,
              settings: CompositionSettings, store: str) -> dict[str, xr.Variable]:
    """The targeted-search products of the rows ``region`` at their new calibration.

    As :func:`idexdask.analyze` makes them (the merged spectrum, its high gain's
    noise and the fitted lines of the store rows); none where the store has
    no merged spectrum (``pipeline.analyze: false``).  Only the samples the
    search reads are read (:func:`~idexdask.composition.targeted.searched_times`):
    a lab row holds 500,000 samples, the search ~2,500 of them.
    """
    from idexdask.composition.targeted import (
        searched_columns,
        searched_times,
        target_masses,
        targeted_variables,
    )
    from idexdask.timeaxis import expand_axes

    if "tof_combined" not in ds.variables or not calibrated.any():
        return {}
    merged = ds["tof_combined"]
    channel = str(list(merged.attrs.get("gains", ["TOF_High"]))[0])
    time_name = ds[channel].attrs.get("time_variable", "time_high_sample_rate") \
        if channel in ds.variables else "time_high_sample_rate"
    noise_name = f"{channel.lower()}_noise"
    if noise_name not in ds.variables:
        return {}
    rows = slice(*region)
    if time_name in ds.variables and "epoch" in ds[time_name].dims:
        # the rows' times decoded once (from the chunk files where it can), then
        # read twice (the column grid, the window): a flight chunk of 512 rows
        # through xarray is decompressed for each read
        time = xr.DataArray(_rows(ds, [time_name], [region], store)[time_name])
    elif time_name in ds.variables:
        time = ds[time_name]
    else:  # a lab store keeps its axes as terms: rebuild this one, for these rows only
        terms = [k for k in ds.variables if str(k).startswith(f"{time_name}_")]
        time = expand_axes(_rows(ds, terms, [region], store)).get(time_name)
        if time is None:
            return {}
    flat = {"peak_event": lines["event"], **{f"peak_{k}": lines[f"peak_{k}"] for k in
                                             ("center", "sigma", "gamma", "area", "status")}}
    bounds = searched_times(
        flat["peak_event"], flat["peak_center"], flat["peak_sigma"],
        np.asarray(flat["peak_status"]) == 0, coefficients, calibrated,
        target_masses(settings.targeted_species),
    )  # fmt: skip
    columns = slice(0, 0) if bounds is None else searched_columns(time, *bounds)
    # the stored float32 samples: the search converts the stretches it reads
    window = read_chunks(store, "tof_combined", [region], columns)
    signal = (merged.isel({"epoch": rows, merged.dims[-1]: columns}).values if window is None
              else window.values)
    return targeted_variables(
        np.asarray(time.isel({time.dims[-1]: columns}).values, dtype=float), signal,
        np.asarray(_rows(ds, [noise_name], [region], store)[noise_name].values, dtype=float),
        flat, coefficients,
        calibrated, settings.targeted_species,
        min_significance=settings.targeted_min_significance,
        unit=str(merged.attrs.get("units", "")),
    )  # fmt: skip


def _targeted_input(name: str) -> bool:
    """Whether :func:`_targeted` may read the store variable ``name``.

    The merged spectrum, its gains' waveform variables (``TOF_High``: their
    ``time_variable`` attribute) and noise (``tof_high_noise``), and the time
    axes (``time_high_sample_rate`` or its terms).
    """
    return (name == "tof_combined" or name.startswith(("TOF_", "time_"))
            or (name.startswith("tof_") and name.endswith("_noise")))


def _strings(values: Any) -> np.ndarray:
    """Stored strings (Zarr's variable-length: object or NumPy StringDType) as ``str``."""
    return np.array([str(v) for v in np.asarray(values, dtype=object).ravel()],
                    dtype=str).reshape(np.shape(values))


def _stored(ds: xr.Dataset, region: tuple[int, int], names: Sequence[str],
            store: str) -> xr.Dataset:
    """The variables ``names`` the opened store ``ds`` has, for rows ``region`` (loaded)."""
    return _rows(ds, [n for n in names if n in ds.variables], [region], store)


def contiguous_spans(units: Sequence[Unit], max_events: int) -> list[list[Unit]]:
    """Units of one group (sorted by row) cut into runs of contiguous rows.

    A run ends where the next unit's rows do not follow on, where the next unit
    starts in another block of ``max_events`` rows (blocks start at multiples
    of ``max_events``), or where it would exceed ``max_events`` events (a run
    never splits a unit, so a unit larger than ``max_events`` is a run of its
    own).  With ``max_events`` a multiple of the store's chunk rows, runs of
    small units (lab impacts) cover whole chunks: each task decodes and
    writes its own chunks, never a neighbour's.
    """
    spans: list[list[Unit]] = []
    events = 0
    for unit in units:
        count = unit.region[1] - unit.region[0]
        if (spans and spans[-1][-1].region[1] == unit.region[0]
                and unit.region[0] // max_events == spans[-1][-1].region[0] // max_events
                and events + count <= max_events):
            spans[-1].append(unit)
            events += count
        else:
            spans.append([unit])
            events = count
    return spans


def _span_events(client: Any, events: int, cap: int, rows: int) -> int:
    """Events per map task: one task per worker, at most ``cap`` events.

    Each task pays ~30 ms of CPU whatever its size (opening the store's
    metadata, reading ~20 variables and writing ~35 through Zarr): on a lab
    campaign of 96 impacts and one worker, four tasks cost 1 ms per impact more
    than one.  The events of a group cost alike, so one task per worker
    balances them; ``cap`` bounds a task's memory on large flight groups.
    A lab unit is one impact: a task per unit would pay that cost per impact.
    Rounded to whole chunks of ``rows`` events: a task that shares a chunk with
    its neighbour decodes that chunk too and writes it under a lock.
    """
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    rows = max(1, int(rows))
    per = -(-max(1, -(-events // workers)) // rows) * rows
    return max(rows, min(per, cap // rows * rows))


def _signature(units: Sequence[Unit], chash: str) -> str:
    text = json.dumps([chash, sorted((u.uid, u.input_hash) for u in units)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def campaign_step(client: Any, store: Path, units: Sequence[Unit], config: Mapping[str, Any],
                  rows: int, n_events: int, manifest: Any, run_id: str, chash: str,
                  resources: Mapping[str, float] | None, retries: int) -> dict[str, Any] | None:
    """Run the reduce and map tasks of the campaign calibration on the cluster.

    Parameters
    ----------
    client : distributed.Client
    store : Path
    units : sequence of Unit
        The done units (their rows hold analysed events).
    config, rows, n_events, manifest, run_id, chash, resources, retries
        As in :func:`~idexdask.pipeline.runner.run_campaign`.

    Returns
    -------
    dict or None
        The group summaries by input index; None when the step is disabled or
        was already done for these units and configuration.
    """
    if not units or not recalibrates(config):
        return None
    signature = _signature(units, chash)
    last = None
    for record in manifest.records():
        if record.get("record") == "campaign":
            last = record
    if last is not None and last.get("signature") == signature and last.get("status") == "done":
        logger.info("campaign calibration: unchanged since run %s", last.get("run_id"))
        return None
    by_group: dict[int, list[Unit]] = {}
    for unit in sorted(units, key=lambda u: u.region[0]):
        by_group.setdefault(unit.input_index, []).append(unit)
    reduce_futures = {
        index: client.submit(reduce_group, str(store), [tuple(u.region) for u in group],
                             group[0].kind, config, resources=resources, retries=retries,
                             pure=False, key=f"idexdask-campaign-reduce-{run_id}-{index}")
        for index, group in by_group.items()
    }
    results = {index: future.result() for index, future in reduce_futures.items()}
    summaries = {str(index): {**res["summary"], "preset": res["preset"],
                              "input": by_group[index][0].path}
                 for index, res in results.items()}
    from idexdask.composition.settings import composition_settings

    composition = composition_settings(config)  # validated once, here
    map_futures = []
    cap = int((config.get("pipeline") or {}).get("batch_events", 512))
    for index, group in by_group.items():
        res = results[index]
        group_events = sum(u.region[1] - u.region[0] for u in group)
        offset = 0
        per_task = _span_events(client, group_events, cap, rows)
        for k, span in enumerate(contiguous_spans(group, per_task)):
            region = (span[0].region[0], span[-1].region[1])
            count = region[1] - region[0]
            part = {key: (value[offset:offset + count] if isinstance(value, np.ndarray)
                          else value) for key, value in res.items() if key != "summary"}
            offset += count
            map_futures.append(client.submit(
                apply_region, str(store), region, part, summaries, config, rows,
                n_events, composition, resources=resources, retries=retries, pure=False,
                key=f"idexdask-campaign-apply-{run_id}-{index}-{k}",
            ))
    done = [f.result() for f in map_futures]
    written = sum(n for n, _ in done)
    variables = sorted({name for _, names in done for name in names})
    _annotate_store(store, summaries)
    manifest.append({"record": "campaign", "status": "done", "run_id": run_id,
                     "signature": signature, "events": written, "groups": summaries,
                     "variables": variables})
    logger.info("campaign calibration: %d groups, %d events rewritten", len(by_group), written)
    return summaries


def _annotate_store(store: Path, summaries: Mapping[str, Any]) -> None:
    """The groups' summaries in the store attributes and ``mass_calibration``'s."""
    import zarr

    text = json.dumps(dict(summaries), sort_keys=True)
    group = zarr.open_group(str(store), mode="r+")
    group.attrs["campaign_calibration"] = text
    if "mass_calibration" in group:
        group["mass_calibration"].attrs["campaign_calibration"] = text
