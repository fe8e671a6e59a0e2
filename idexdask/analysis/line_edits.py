"""Manual edits of fitted TOF lines: line shape and species (override rows ``shape``, ``species``).

Applied by :func:`idexdask.analyze` after the batched EMG fit of every line
(:func:`idexdask.analysis.tof.tof_lines`): each ``shape`` or ``species`` row
refers to the line of its event whose fitted EMG centre is nearest its
``center_us`` (within ``tolerance_us``, default 0.05 µs); rows are matched
against the EMG fits, all of them before any refit, so a line keeps its edits
whatever shape it is given.

* ``shape``: the line is refitted, in the same window and with the same
  noise weights, with the chosen shape of :mod:`idexdask.analysis.lineshapes`
  plus a constant (all such lines of a shape in one batched fit, started from
  the EMG result).  Its ``peak_shape`` is the shape (its index in
  :data:`~idexdask.analysis.overrides.LINE_SHAPES`) and ``peak_shape_parameters``
  the shape's own parameters beyond ``amplitude``, ``center`` and ``sigma`` as
  JSON (lmfit names: ``{"gamma1": .., "gamma2": .., "fraction": ..}``);
  ``peak_gamma`` stays the right-tail rate of the EMG-like shapes, NaN for
  ``gaussian`` and ``voigt`` (whose ``gamma`` is a Lorentzian HWHM in µs).  A
  row choosing the shape the automatic fit already has marks the line manual
  and keeps its fit.
* ``species``: the line's species as a person assigned it, used by the
  composition instead of the automatic assignment and by a ``calibrate`` row.

The last row of an action for a line wins (rows are applied in table order).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import xarray as xr

from idexdask._logging import get_logger
from idexdask.analysis.fitting import batch_model, fit_batch_on
from idexdask.analysis.line_fits import LineFits
from idexdask.analysis.lineshapes import GAMMA_MAX, SIGMA_MIN
from idexdask.analysis.overrides import LINE_SHAPES
from idexdask.analysis.peaks import PeakCandidates

__all__ = ["LineEdits", "apply_line_edits", "shape_parameter_names"]

_log = get_logger(__name__)

_DEFAULT_TOL = 0.05
_GRID = 512  # points on which a reshaped line's height is taken
_REFIT_ITERATIONS = 4  # iteration budget of a refit, in units of peaks.max_iterations
# starts of the two-tail shapes: (weight of the EMG-like tail, second tail rate / EMG rate);
# hyper_emg: left-tail weight 1 - weight, both tails at the EMG rate
_TWO_TAIL_STARTS = ((0.95, 0.3), (0.8, 0.2), (0.7, 0.2))

# parameters of each shape beyond amplitude, center, sigma (batch_model's order)
_EXTRA: dict[str, tuple[str, ...]] = {
    "gaussian": (),
    "emg": ("gamma",),
    "double_emg": ("gamma1", "gamma2", "fraction"),
    "hyper_emg": ("gamma_left", "gamma_right", "fraction_left"),
    "voigt": ("gamma",),
}
# which extra parameter is the right-tail rate reported as peak_gamma
_RIGHT_TAIL = {"emg": "gamma", "double_emg": "gamma1", "hyper_emg": "gamma_right"}


def shape_parameter_names(shape: str) -> tuple[str, ...]:
    """The parameters of ``shape`` beyond ``amplitude``, ``center``, ``sigma`` (lmfit names)."""
    return _EXTRA[shape]


@dataclass
class LineEdits:
    """The lines after the ``shape`` and ``species`` rows (one entry per line).

    Attributes
    ----------
    fits : LineFits
        The fits, reshaped lines refitted.
    manual : numpy.ndarray
        Added, edited or reshaped by an override (bool).
    shape : numpy.ndarray
        Line shape, index in :data:`~idexdask.analysis.overrides.LINE_SHAPES`
        (0: the automatic EMG) (int8).
    shape_parameters : numpy.ndarray
        JSON of the shape's extra parameters for refitted lines, ``""`` for the
        automatic fits (whose tail rate is ``peak_gamma``) (str).
    species : numpy.ndarray
        Species assigned by hand, ``""`` where automatic, ``"none"`` for "no
        species" (str).
    """

    fits: LineFits
    manual: np.ndarray
    shape: np.ndarray
    shape_parameters: np.ndarray
    species: np.ndarray


def _event_index(table: xr.Dataset, epochs: np.ndarray) -> np.ndarray:
    lookup = {int(e): i for i, e in enumerate(np.asarray(epochs, dtype=np.int64))}
    return np.array([lookup.get(int(e), -1) for e in table["epoch"].values], dtype=np.int64)


def apply_line_edits(
    cand: PeakCandidates,
    fits: LineFits,
    signal: np.ndarray,
    time: np.ndarray,
    sigma: np.ndarray,
    table: xr.Dataset,
    epochs: np.ndarray,
    settings: Mapping[str, Any],
) -> LineEdits:
    """Apply the ``shape`` and ``species`` rows of ``table`` to the fitted lines.

    Parameters
    ----------
    cand : PeakCandidates
        The fitted lines (after add/remove/edit rows).
    fits : LineFits
        Their EMG fits.
    signal, time, sigma : numpy.ndarray
        The merged spectra, their times (µs) and per-sample noise (n_events, n_samples).
    table : xarray.Dataset
        Override rows in force.
    epochs : numpy.ndarray
        Event epochs (index of ``cand.event``).
    settings : mapping
        The ``peaks`` settings plus ``fit_device`` and ``fit_engine``.

    Returns
    -------
    LineEdits
    """
    n = cand.size
    edits = LineEdits(
        fits=fits,
        manual=np.asarray(cand.manual, dtype=bool).copy(),
        # the shape the automatic fit chose (EMG, or a fallback where the fitter has one)
        shape=np.asarray(getattr(fits, "shape", np.zeros(n)), dtype=np.int8).copy(),
        shape_parameters=np.full(n, "", dtype=object),
        species=np.full(n, "", dtype=object),
    )
    if table.sizes.get("override", 0) == 0 or n == 0:
        return _as_str(edits)
    rows = np.nonzero(np.isin(table["action"].values, ("shape", "species")))[0]
    if rows.size == 0:
        return _as_str(edits)
    time = np.broadcast_to(time, signal.shape)
    ref = np.where(np.isfinite(fits.center), fits.center, time[cand.event, cand.index])
    ev_of = _event_index(table, epochs)
    reshape: dict[int, str] = {}
    for r in rows:
        ev = int(ev_of[r])
        c = float(table["center_us"].values[r])
        if ev < 0:
            _log.info("override %s: epoch %d not in the dataset; ignored",
                      table["override"].values[r], int(table["epoch"].values[r]))
            continue
        tol = float(table["tolerance_us"].values[r])
        tol = tol if math.isfinite(tol) else _DEFAULT_TOL
        mine = np.nonzero(cand.event == ev)[0]
        dist = np.abs(ref[mine] - c) if mine.size else np.zeros(0)
        if mine.size == 0 or not np.isfinite(dist).any() or np.nanmin(dist) > tol:
            _log.info("override %s: no line within %g µs of %g µs in event %d; ignored",
                      table["override"].values[r], tol, c, ev)
            continue
        j = int(mine[int(np.nanargmin(dist))])
        if table["action"].values[r] == "shape":
            reshape[j] = str(table["shape"].values[r])
        else:
            edits.species[j] = str(table["species"].values[r])
    by_shape: dict[str, list[int]] = {}
    for j, shape in reshape.items():
        edits.manual[j] = True
        if LINE_SHAPES.index(shape) != edits.shape[j]:  # else the fit is that shape's already
            by_shape.setdefault(shape, []).append(j)
        edits.shape[j] = LINE_SHAPES.index(shape)
    for shape, lines in by_shape.items():
        _refit(edits, np.array(sorted(lines)), shape, cand, signal, time, sigma, settings)
    return _as_str(edits)


def _as_str(edits: LineEdits) -> LineEdits:
    return replace(
        edits,
        shape_parameters=edits.shape_parameters.astype(str),
        species=edits.species.astype(str),
    )


def _refit(
    edits: LineEdits,
    lines: np.ndarray,
    shape: str,
    cand: PeakCandidates,
    signal: np.ndarray,
    time: np.ndarray,
    sigma: np.ndarray,
    settings: Mapping[str, Any],
) -> None:
    """Refit ``lines`` with ``shape`` in their EMG fit windows; update ``edits`` in place."""
    fits = edits.fits
    ev = cand.event[lines]
    t = time[ev]
    lo = fits.window_start[lines][:, None]
    hi = fits.window_stop[lines][:, None]
    inside = (t >= lo) & (t <= hi) & np.isfinite(signal[ev])
    width = max(int(inside.sum(axis=1).max()), 1)
    # gather each window's samples left-aligned, NaN padded (the fitter ignores NaN)
    order = np.argsort(~inside, axis=1, kind="stable")[:, :width]
    keep = np.take_along_axis(inside, order, axis=1)
    xw = np.where(keep, np.take_along_axis(t, order, axis=1), np.nan)
    yw = np.where(keep, np.take_along_axis(signal[ev], order, axis=1), np.nan)
    sw = np.take_along_axis(sigma[ev], order, axis=1)
    sw = np.where(keep & np.isfinite(sw) & (sw > 0), sw, np.nan)
    span = np.maximum(fits.window_stop[lines] - fits.window_start[lines], 1e-6)
    dt = span / np.maximum(keep.sum(axis=1), 1)

    # starting values: the EMG fit where it has one, else the window's samples
    y0 = np.where(keep, yw, 0.0)
    top = np.argmax(y0, axis=1)
    area0 = np.where(np.isfinite(fits.area[lines]) & (fits.area[lines] > 0), fits.area[lines],
                     np.maximum(np.sum(np.clip(y0, 0, None), axis=1) * dt, 1e-12))
    c0 = np.where(np.isfinite(fits.center[lines]), fits.center[lines],
                  xw[np.arange(lines.size), top])
    s0 = np.where(np.isfinite(fits.sigma[lines]) & (fits.sigma[lines] > 0), fits.sigma[lines],
                  0.1 * span)
    s0 = np.clip(s0, 0.2 * dt, 0.25 * span)
    g0 = np.where(np.isfinite(fits.gamma[lines]) & (fits.gamma[lines] > 0), fits.gamma[lines],
                  1.0 / s0)
    g0 = np.clip(g0, 4.0 / span, 0.5 * GAMMA_MAX)
    off0 = np.where(np.isfinite(fits.offset[lines]), fits.offset[lines], 0.0)
    names = _EXTRA[shape]
    model = batch_model(shape, "constant")
    lower = np.array(model.lower, dtype=float)[None, :].repeat(lines.size, axis=0)
    upper = np.array(model.upper, dtype=float)[None, :].repeat(lines.size, axis=0)
    lower[:, 0], lower[:, 1], upper[:, 1] = 0.0, lo[:, 0], hi[:, 0]
    lower[:, 2], upper[:, 2] = np.maximum(0.1 * dt, SIGMA_MIN), 0.5 * span
    engine = str(settings.get("fit_engine", "compiled"))
    ones = np.ones(lines.size)
    best = None
    # The two-tail shapes have local minima (measured on real flight and lab
    # lines: each of three starts alone ended worse than the EMG on some line):
    # fit from each start of _TWO_TAIL_STARTS and keep, per line, the lowest
    # chi-square.  Their EMG-like start (most weight on the EMG tail) makes the
    # result about as good as the automatic EMG fit at worst.
    for weight, second in _TWO_TAIL_STARTS if len(names) == 3 else ((0.0, 0.0),):
        extra0 = {
            "gamma": g0 if shape != "voigt" else 0.5 * s0,
            "gamma1": g0, "gamma2": second * g0, "fraction": weight * ones,
            "gamma_left": g0, "gamma_right": g0,
            "fraction_left": (1.0 - weight) * ones,
        }
        p0 = np.stack([area0, np.clip(c0, lo[:, 0], hi[:, 0]), s0,
                       *(extra0[k] for k in names), off0], axis=1)
        result = fit_batch_on(
            str(settings.get("fit_device", "cpu")), xw, yw, model, p0,
            lower=lower, upper=upper, sigma=sw,
            # a handful of hand-chosen lines: four times the automatic budget
            max_iter=_REFIT_ITERATIONS * int(settings["max_iterations"]),
            # only the EMG has a compiled kernel: the others run through the array code
            engine="xp" if engine == "xp" else "auto",
        )
        best = result if best is None else _better(best, result)
    result = best
    par, err = result.params, result.stderr
    col = {name: k for k, name in enumerate(model.param_names)}
    height = _heights(shape, par, names, lo[:, 0], hi[:, 0])
    updates = {
        "area": par[:, 0], "area_err": err[:, 0], "center": par[:, 1],
        "center_err": err[:, 1], "sigma": par[:, 2],
        "gamma": par[:, col[_RIGHT_TAIL[shape]]] if shape in _RIGHT_TAIL
        else np.full(lines.size, np.nan),
        "offset": par[:, col["c"]], "chisq": result.chisq, "redchi": result.redchi,
        "status": np.asarray(result.status, dtype=np.int8), "height": height,
    }
    new = {name: getattr(fits, name).copy() for name in LineFits.__dataclass_fields__}
    for name, values in updates.items():
        new[name][lines] = values
    if "shape" in new:
        new["shape"][lines] = LINE_SHAPES.index(shape)
    edits.fits = LineFits(**new)
    for i, j in enumerate(lines):
        edits.shape_parameters[j] = json.dumps(
            {k: (float(par[i, col[k]]) if math.isfinite(par[i, col[k]]) else None)
             for k in names}
        )


def _better(a: Any, b: Any) -> Any:
    """Per fit, the result of ``a`` or ``b`` with the lower finite chi-square."""
    ca = np.where(np.isfinite(a.chisq), a.chisq, np.inf)
    cb = np.where(np.isfinite(b.chisq), b.chisq, np.inf)
    take_b = cb < ca
    if not take_b.any():
        return a
    pick = take_b[:, None]
    return replace(
        a,
        params=np.where(pick, b.params, a.params), stderr=np.where(pick, b.stderr, a.stderr),
        chisq=np.where(take_b, b.chisq, a.chisq), redchi=np.where(take_b, b.redchi, a.redchi),
        ndata=np.where(take_b, b.ndata, a.ndata), nfev=np.where(take_b, b.nfev, a.nfev),
        niter=np.where(take_b, b.niter, a.niter), status=np.where(take_b, b.status, a.status),
    )


def _heights(
    shape: str, par: np.ndarray, names: tuple[str, ...], lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """Maximum of each fitted line above its baseline, on a fine grid over its window."""
    from idexdask.analysis import lineshapes  # noqa: PLC0415

    func = getattr(lineshapes, shape)
    grid = lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, _GRID)[None, :]
    args = [par[:, k][:, None] for k in range(3 + len(names))]
    with np.errstate(all="ignore"):
        prof = np.asarray(func(grid, *args))
        best = np.nanmax(np.where(np.isfinite(prof), prof, -np.inf), axis=1)
    return np.where(np.isfinite(best), best, np.nan)
