"""``analyze``: every product of a batch of IDEX events, all at once.

Input: any event dataset with waveforms on an ``epoch`` dimension and their
time axes -- :func:`idexdask.read_l0` output, the simulator's ``events``, LeCroy
captures from :func:`idexdask.read_trc` (a subset of the channels, 1 ns
sampling, negative-going signals flagged by ``signal_polarity``) -- with header
fields used when present.  Output: the input variables plus the products
documented in ``docs/analysis.md``.

This module sits above the science layers it runs in order (analysis ->
calibration -> composition), so that none of them imports a layer above it.
Stages (each vectorised over events; the per-event loop is only the mass
calibration's comb alignment, ~5 ms per event):

1. signal quality (:func:`idexdask.analysis.products.quality_products`);
2. TOF gain merge, line detection and one batched EMG fit of every line, with
   manual overrides applied between detection and fit
   (:func:`idexdask.analysis.products.tof_products`);
3. mass calibration per event and per group of events, then the manual
   calibrations (:func:`idexdask.calibration.products.mass_calibration_products`,
   :func:`~idexdask.calibration.products.manual_calibration_products`);
4. lab captures: grain speed and charge from the pickup tubes
   (:mod:`~idexdask.analysis.pickup_products`);
5. impact-charge fits of Target_High, Target_Low, Ion_Grid, impact velocity and
   dust mass (the pickup speed, where measured, for the mass)
   (:func:`idexdask.analysis.products.impact_products`);
6. instrument state from the header words
   (:func:`idexdask.analysis.instrument.instrument_products`);
7. composition (:func:`idexdask.composition.products.composition_variables`)
   and the targeted search for the configured species at their calibrated
   times (:func:`idexdask.composition.targeted.targeted_variables`).

Bad waveforms (flat, zero, saturated, NaN, fill, too short) give statuses,
never an exception.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from idexdask._logging import get_logger
from idexdask.analysis.instrument import instrument_products
from idexdask.analysis.overrides import as_table
from idexdask.analysis.pickup_products import pickup_products
from idexdask.analysis.products import (
    impact_products,
    load_analysis_settings,
    quality_products,
    tof_products,
)
from idexdask.analysis.tof import MergeBuffers
from idexdask.calibration.products import (
    manual_calibration_products,
    mass_calibration_products,
)
from idexdask.composition.products import composition_variables
from idexdask.composition.settings import composition_settings
from idexdask.composition.targeted import (
    searched_columns,
    searched_times,
    target_masses,
    targeted_variables,
)
from idexdask.errors import AnalysisError, ConfigError

__all__ = ["AnalysisProducts", "analysis_products", "analyze"]

_log = get_logger(__name__)

# the peak variables the composition layer reads
_PEAK_INPUTS = ("peak_event", "peak_mass", "peak_mass_tolerance", "peak_area", "peak_area_err")


def _composition_products(
    peaks: Mapping[str, xr.Variable],
    n_events: int,
    config: Mapping[str, Any],
    calibrated: np.ndarray | None,
) -> tuple[dict[str, xr.Variable], frozenset[str]] | None:
    """Composition products (``peak_species``, ``composition``, ``mg_number``, ``best_mineral``).

    Calls :func:`idexdask.composition.products.composition_variables` (the
    variables of :func:`idexdask.composition.composition_products`, without
    building their Dataset); returns None when there are no line masses or the
    composition fails on the data (the products are then omitted).

    Returns
    -------
    (variables, coordinate names) or None
    """
    if "peak_mass" not in peaks:
        return None
    try:
        return composition_variables(peaks, n_events, config, calibrated=calibrated)
    except ConfigError:
        raise  # a configuration mistake stops the analysis: it never drops products
    except (AnalysisError, ValueError) as exc:
        _log.warning("composition products failed: %s", exc)
        return None


def _targeted_products(
    l1a: xr.Dataset, new: Mapping[str, xr.Variable], config: Mapping[str, Any],
    calibrated: np.ndarray, *, deferred: bool = False,
) -> dict[str, xr.Variable]:
    """The targeted search for the configured species in every calibrated event.

    See :func:`idexdask.composition.targeted.targeted_variables`: the merged
    spectrum, its high gain's baseline noise and the fitted lines, at the times
    of the event's calibration.  ``deferred``: the same variables, NaN (not
    detected) for every event, for a later step that searches at the times of
    another calibration (no spectrum is read).
    """
    settings = composition_settings(config)
    merged = new["tof_combined"]
    channel = str(merged.attrs["gains"][0])
    name = l1a.variables[channel].attrs.get("time_variable", "time_high_sample_rate")
    noise = new.get(f"{channel.lower()}_noise", l1a.variables.get(f"{channel.lower()}_noise"))
    lines = {k: np.asarray(new[k].values) for k in
             ("peak_event", "peak_center", "peak_sigma", "peak_gamma", "peak_area",
              "peak_status")}  # fmt: skip
    if deferred:
        n_events = int(merged.shape[0])
        time, signal = np.zeros(0), np.zeros((n_events, 0))
        calibrated = np.zeros(n_events, dtype=bool)
    else:
        # only the samples the search reads (~2,500 of a lab row's 500,002: its
        # formula times and float64 spectrum are 8 MB per event in full)
        bounds = searched_times(
            lines["peak_event"], lines["peak_center"], lines["peak_sigma"],
            lines["peak_status"] == 0, new["mass_calibration"].values, calibrated,
            target_masses(settings.targeted_species),
        )  # fmt: skip
        axis = l1a.variables[name]
        columns = slice(None) if bounds is None else searched_columns(axis, *bounds)
        time = np.asarray(axis[..., columns].values, dtype=float)
        signal = np.asarray(merged[..., columns].values, float)
    return targeted_variables(
        time, signal,
        np.asarray(noise.values, dtype=float), lines, new["mass_calibration"].values,
        calibrated, settings.targeted_species,
        min_significance=settings.targeted_min_significance,
        unit=str(merged.attrs.get("units", "")),
    )  # fmt: skip


@dataclass(frozen=True)
class AnalysisProducts:
    """What :func:`analyze` adds to an event dataset, before it is assembled.

    Attributes
    ----------
    variables : dict of str to xarray.Variable
        The products, in order: each replaces the input variable of its name
        (keeping that variable's place) or is appended.
    coord_names : tuple of str
        Products that are non-index coordinates.
    attrs : dict
        Dataset attributes to set (which analysis, how many overrides).
    """

    variables: dict[str, xr.Variable]
    coord_names: tuple[str, ...]
    attrs: dict[str, Any]

    def merged_with(self, l1a: xr.Dataset) -> dict[str, xr.Variable]:
        """``l1a``'s variables updated with the products, in :func:`analyze`'s order."""
        variables = {str(k): v for k, v in l1a.variables.items()}
        variables.update(self.variables)
        return variables


def analysis_products(
    l1a: xr.Dataset,
    config: Mapping[str, Any] | str | Path | None = None,
    *,
    overrides: xr.Dataset | str | Path | Iterable[Mapping[str, Any]] | None = None,
    defer_targeted: bool = False,
    buffers: MergeBuffers | None = None,
) -> AnalysisProducts:
    """The products :func:`analyze` adds to ``l1a``, not yet assembled into a Dataset.

    For callers that build their own Dataset of the result (the campaign
    pipeline): assembling ~270 variables costs ~15 ms per call, once is enough.
    Same parameters and errors as :func:`analyze`, and ``defer_targeted``: the
    ``targeted_*`` variables are laid out but left NaN (not detected), for a
    caller that runs the targeted search itself after calibrating the events
    again (``submit``'s campaign step, :mod:`idexdask.pipeline.recalibrate`);
    ``buffers``: memory the caller keeps between analyses for the merged TOF
    spectrum (:class:`~idexdask.analysis.tof.MergeBuffers`; no product is a
    view of it, so it may be reused as soon as this returns).
    """
    if "epoch" not in l1a.dims:
        raise AnalysisError("analyze needs an event dataset with an 'epoch' dimension")
    cfg, settings = load_analysis_settings(config)
    table = as_table(overrides)
    n_events = int(l1a.sizes["epoch"])
    products: dict[str, xr.Variable] = {}
    quality = quality_products(l1a, settings)
    lines = tof_products(l1a, quality, settings, table, products, buffers)
    calibrated = None
    instrument = instrument_products(l1a)  # header words -> engineering units
    if lines is not None and settings["calibration"]["enabled"] and cfg.get("calibration"):
        calibrated = mass_calibration_products(
            lines, n_events, cfg, settings, products, l1a.attrs, l1a.variables, instrument
        )
        calibrated = manual_calibration_products(lines, table, l1a, cfg, products, calibrated)
    pickup = pickup_products(l1a)  # lab captures: grain speed and charge (QD)
    if pickup is not None:
        products.update(pickup)
    impact_products(l1a, quality, settings, table, products,
                    pickup_speed=None if pickup is None else pickup["qd_speed"].values)
    products.update(instrument)

    # Bare Variables (no coordinates to align), assembled by the caller in one
    # step: each merge or assign over the ~270 variables costs several ms.
    # Precedence and order are those of
    #   l1a.merge(quality, compat="override").assign(products).merge(composition, ...)
    # : a variable already present keeps its place; ``merge`` keeps the existing
    # variable, ``assign`` replaces it.
    present = l1a.variables
    new: dict[str, xr.Variable] = {}
    if quality is not None:
        for name, var in quality.items():
            if name not in present:
                new[name] = var
    new.update(products)
    coord_names: list[str] = []
    if "peak_mass" in present or "peak_mass" in new:
        peak_inputs = {
            name: var
            for name, var in ((n, new.get(n, present.get(n))) for n in _PEAK_INPUTS)
            if var is not None
        }
        if lines is not None and (lines.species_manual != "").any():
            peak_inputs["peak_species_by_hand"] = xr.Variable(("peak",), lines.species_manual)
        comp = _composition_products(
            peak_inputs,
            n_events,
            cfg,
            calibrated,
        )
        if comp is not None:
            variables, comp_coords = comp
            for name, var in variables.items():
                if name == "epoch" or name in present or name in new:
                    continue
                new[name] = var
                if name in comp_coords and name not in var.dims:
                    coord_names.append(name)  # a non-index coordinate (rsf)
    if calibrated is not None and "tof_combined" in new:
        new.update(_targeted_products(l1a, new, cfg, calibrated, deferred=defer_targeted))
        coord_names.append("targeted_mass")
    n_lines = int(new["peak_event"].size) if "peak_event" in new else 0
    _log.info("analyze: %d events, %d lines", n_events, n_lines)
    return AnalysisProducts(
        variables=new,
        coord_names=tuple(coord_names),
        attrs={
            "analysis": "idexdask.analyze",
            "analysis_overrides": int(table.sizes.get("override", 0)),
        },
    )


def analyze(
    l1a: xr.Dataset,
    config: Mapping[str, Any] | str | Path | None = None,
    *,
    overrides: xr.Dataset | str | Path | Iterable[Mapping[str, Any]] | None = None,
) -> xr.Dataset:
    """Analysis products of every event of ``l1a``, vectorised across events.

    Parameters
    ----------
    l1a : xarray.Dataset
        Events (``epoch`` dimension) with any of the waveforms TOF_High,
        TOF_Mid, TOF_Low, Target_High, Target_Low, Ion_Grid (plus any others,
        which get quality products only) and their time axes (the
        ``time_variable`` attribute, else ``time_high_sample_rate`` /
        ``time_low_sample_rate`` by sample dimension).  Fill values
        (``FILLVAL``, 65535) and NaN samples are ignored.
    config : mapping, path or None
        Configuration (see :func:`load_analysis_settings`).
    overrides : xarray.Dataset, path, records or None
        Manual overrides (:mod:`idexdask.analysis.overrides`), reapplied here.

    Returns
    -------
    xarray.Dataset
        The input variables plus the products listed in ``docs/analysis.md``:
        the ``peak`` dimension (``peak_*``), per-event quality
        (``<channel>_snr``, ``_saturated``, ``_baseline``, ``_noise``, ...),
        TOF gain ratios, mass calibration, impact fits, velocity and dust mass,
        and composition when available.

    Raises
    ------
    ConfigError
        On an invalid configuration or override table.
    AnalysisError
        If ``l1a`` has no ``epoch`` dimension.
    """
    products = analysis_products(l1a, config, overrides=overrides)
    out = l1a.assign(products.variables)
    if products.coord_names:
        out = out.set_coords(list(products.coord_names))
    out.attrs.update(products.attrs)
    return out
