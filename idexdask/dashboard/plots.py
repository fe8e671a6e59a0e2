"""HoloViews elements of one event: waveforms, impact-fit overlays, the TOF spectrum.

Every trace goes through HoloViews' ``downsample1d`` (LTTB): the browser gets at
most a few thousand points per trace at any zoom, re-sampled on the server as
the user zooms, so a lab capture's 500,002 samples per channel never travel.
These functions draw stored results; they compute no science beyond evaluating
the stored fit models on a display grid.
"""

from __future__ import annotations

import functools
import logging
import operator
from dataclasses import dataclass

import holoviews as hv
import numpy as np
import pandas as pd
import xarray as xr
from holoviews.operation.downsample import downsample1d

from idexdask.analysis.impact_model import impact_signal
from idexdask.analysis.lineshapes import emg, gaussian

__all__ = [
    "DOWNSAMPLE_WIDTH",
    "ImpactOverlay",
    "LineCurve",
    "downsampled",
    "impact_overlay",
    "impact_overlay_data",
    "line_curves",
    "mass_of_time",
    "placed_labels",
    "spectrum_plot",
    "spectrum_window",
    "time_variable",
    "waveform",
    "waveform_plot",
]

logger = logging.getLogger(__name__)

#: Points per trace sent to the browser (about the pixel width of a plot).
DOWNSAMPLE_WIDTH = 1200
#: Assumed width (px) of a spectrum plot and of one label character, to keep line
#: labels from overlapping (:func:`placed_labels`); rows of staggered labels.
LABEL_PLOT_PX = 1000
LABEL_PLOT_HEIGHT_PX = 240
LABEL_CHAR_PX = 6.5
LABEL_ROW_PX = 13
LABEL_TIERS = 3
IMPACT_CHANNELS = {"Target_High": "target_high", "Target_Low": "target_low",
                   "Ion_Grid": "ion_grid"}


def time_variable(event: xr.Dataset, name: str) -> str | None:
    """The time-axis variable of waveform ``name`` (attribute, else by sample dimension)."""
    variable = event[name]
    declared = variable.attrs.get("time_variable")
    if declared and declared in event:
        return str(declared)
    dim = variable.dims[-1]
    candidate = str(dim).removesuffix("_index")
    return candidate if candidate in event else None


def waveform(event: xr.Dataset, name: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(time µs, values with fills as NaN, unit) of one waveform of one event."""
    variable = event[name]
    values = np.asarray(variable.values, dtype=float)
    fill = variable.attrs.get("FILLVAL")
    if fill is not None:
        values = np.where(values == float(fill), np.nan, values)
    tname = time_variable(event, name)
    time = (np.asarray(event[tname].values, dtype=float) if tname
            else np.arange(values.size, dtype=float))
    return time, values, str(variable.attrs.get("units", ""))


def downsampled(curve: hv.Curve | hv.DynamicMap,
                x_range: tuple[float, float] | None = None) -> hv.DynamicMap:
    """LTTB-downsampled trace; ``x_range`` is the range it first opens on."""
    extra = {"x_range": x_range} if x_range else {}
    return downsample1d(curve, algorithm="lttb", width=DOWNSAMPLE_WIDTH, **extra)


@dataclass(frozen=True)
class ImpactOverlay:
    """A stored impact fit evaluated for display.

    Attributes
    ----------
    grid : numpy.ndarray
        Display times (µs).
    model : numpy.ndarray
        Fitted signal on ``grid`` (the channel's unit).
    time_of_impact : float
        Fitted time of impact (µs).
    levels : tuple of float
        Times (µs) where the rising signal crosses 10 % and 90 % of its peak.
    """

    grid: np.ndarray
    model: np.ndarray
    time_of_impact: float
    levels: tuple[float, ...]


def impact_overlay_data(event: xr.Dataset, name: str, time: np.ndarray) -> ImpactOverlay | None:
    """The stored impact fit of channel ``name`` on a display grid, or None without one."""
    prefix = IMPACT_CHANNELS.get(name)
    if prefix is None or f"{prefix}_fit_parameters" not in event:
        return None
    names = [str(n) for n in event["fit_parameter"].values]
    params = dict(zip(names, np.asarray(event[f"{prefix}_fit_parameters"].values, dtype=float),
                      strict=True))
    t0 = params.get("time_of_impact", np.nan)
    if not all(np.isfinite(v) for v in params.values()):
        return None
    grid = np.linspace(np.nanmin(time), np.nanmax(time), 4000)
    signal = impact_signal(np, grid - t0, params["amplitude"], params["rise_time"],
                           params["decay_time"])
    model = params["constant_offset"] + signal
    peak = np.nanargmax(np.abs(signal))
    rising = np.abs(signal[: peak + 1])
    levels: tuple[float, ...] = ()
    if rising.size > 1 and rising[-1] > 0:
        levels = tuple(float(grid[int(np.searchsorted(rising, level * rising[-1]))])
                       for level in (0.1, 0.9))
    return ImpactOverlay(grid, np.asarray(model, dtype=float), float(t0), levels)


def impact_overlay(event: xr.Dataset, name: str, time: np.ndarray) -> list:
    """The stored impact fit of channel ``name`` with its time of impact and 10/90 % marks."""
    fit = impact_overlay_data(event, name, time)
    if fit is None:
        return []
    overlay = [hv.Curve((fit.grid, fit.model), "time", name, label="impact fit").opts(
        color="red", line_width=2)]
    overlay.append(hv.VLine(fit.time_of_impact, label="impact").opts(
        color="black", line_dash="dashed"))
    for t_level in fit.levels:
        overlay.append(hv.VLine(t_level).opts(color="orange", line_dash="dotted"))
    return overlay


def waveform_plot(event: xr.Dataset, name: str, *, height: int = 160) -> hv.Overlay | hv.Text:
    """One channel in µs with its unit, fills removed, missing channels marked."""
    time, values, unit = waveform(event, name)
    label = f"{name} ({unit})" if unit else name
    if not np.isfinite(values).any():
        return hv.Text(0, 0, f"{name}: missing (no valid sample)").opts(
            height=height, responsive=True, title=f"{label} — missing", xaxis=None, yaxis=None)
    # one time dimension per sampling rate: the TOF channels share their zoom, the
    # charge channels theirs (a shared axis would squeeze 40 µs of TOF into 130 µs)
    rate = str(event[name].dims[-1]).removesuffix("_index").removeprefix("time_")
    xdim = hv.Dimension(f"time_{rate}", label="time", unit="µs")
    curve = hv.Curve((time, values), xdim, hv.Dimension(name, label=label))
    plot = downsampled(curve).opts(color="#1f77b4")
    fits = [element.redim(time=xdim.name) for element in impact_overlay(event, name, time)]
    overlay = functools.reduce(operator.mul, [plot, *fits])
    n_fill = int(np.count_nonzero(~np.isfinite(values)))
    title = f"{label}" + (f" — {n_fill} fill/NaN samples" if n_fill else "")
    return overlay.opts(height=height, responsive=True, title=title, show_legend=False)


def mass_of_time(event: xr.Dataset, time: np.ndarray) -> np.ndarray | None:
    """Mass (u) of every time of ``time`` from the event's stored calibration, or None."""
    from idexdask.calibration.mass_axes import mass_axis

    if "mass_calibration" not in event:
        return None
    coefficients = np.asarray(event["mass_calibration"].values, dtype=float)
    if not np.isfinite(coefficients).all():
        return None
    return np.asarray(mass_axis(coefficients, time), dtype=float)


@dataclass(frozen=True)
class LineCurve:
    """One fitted line evaluated for display.

    Attributes
    ----------
    index : object
        Its row label in the line table.
    x : numpy.ndarray
        Times (µs) across its fit window.
    y : numpy.ndarray
        EMG of its stored parameters plus its offset (the spectrum's unit).
    """

    index: object
    x: np.ndarray
    y: np.ndarray

    @property
    def top(self) -> tuple[float, float]:
        """(x, y) of its highest point (its first point when it has no finite value)."""
        if not np.isfinite(self.y).any():
            return float(self.x[0]), 0.0
        peak = int(np.nanargmax(self.y))
        return float(self.x[peak]), float(self.y[peak])


def line_curves(lines: pd.DataFrame, *, points: int = 200) -> list[LineCurve]:
    """Each fitted line with a finite area, centre and width on its fit window.

    EMG lines are drawn with their tail, Gaussian lines (NaN tail rate) as Gaussians;
    a line without a fit window is drawn over ±5σ/10σ of its centre.
    """
    curves = []
    for row in lines.itertuples():
        start = getattr(row, "window_start", np.nan)
        stop = getattr(row, "window_stop", np.nan)
        if not (np.isfinite(start) and np.isfinite(stop)):
            start, stop = row.center - 5 * row.sigma, row.center + 10 * row.sigma
        if not all(np.isfinite(v) for v in (row.area, row.center, row.sigma)):
            continue
        x = np.linspace(start, stop, points)
        offset = getattr(row, "offset", 0.0)
        # a NaN tail rate is a Gaussian line (docs/products.md, peak_gamma)
        y = np.asarray(emg(x, row.area, row.center, row.sigma, row.gamma)
                       if np.isfinite(row.gamma) else gaussian(x, row.area, row.center,
                                                                row.sigma), dtype=float)
        curves.append(LineCurve(row.Index, x, y + (offset if np.isfinite(offset) else 0.0)))
    return curves


def placed_labels(xs: list[float], heights: list[float], labels: list[str], *, span: float,
                  plot_px: float = LABEL_PLOT_PX, plot_height_px: float = LABEL_PLOT_HEIGHT_PX,
                  char_px: float = LABEL_CHAR_PX, tiers: int = LABEL_TIERS
                  ) -> list[tuple[int, int]]:
    """Which line labels to draw, and how many rows above its line, so that none overlap.

    Each label sits above its line's peak, lifted by 0 to ``tiers - 1`` rows of
    :data:`LABEL_ROW_PX`; tallest line first, a label takes the lowest row where
    its box (in screen pixels, from the assumed plot size) overlaps no label placed
    before it.  Labels that fit nowhere are left out: the line is still drawn, and
    its name is in the hover and the line table.

    Parameters
    ----------
    xs, heights, labels : list
        Each line's peak position (x axis unit), peak height (y unit) and text.
    span : float
        Width of the visible x range (x axis unit).
    plot_px, plot_height_px, char_px : float
        Assumed plot width and height and width of one label character (px).
    tiers : int
        Rows a label may be lifted by.

    Returns
    -------
    list of (int, int)
        (position in ``xs``, rows lifted) of every label to draw.
    """
    if span <= 0 or not np.isfinite(span):
        span = 1.0
    height = np.nan_to_num(np.asarray(heights, dtype=float), nan=0.0)
    top = float(np.max(np.abs(height))) if height.size else 1.0
    y_px = height / (top or 1.0) * plot_height_px
    boxes: list[tuple[float, float, float, float]] = []
    placed = []
    for i in np.argsort(-height, kind="stable"):
        centre = float(xs[i]) / span * plot_px
        half = 0.5 * (len(labels[i]) * char_px + 6)
        for tier in range(tiers):
            low_y = y_px[i] + 2 + tier * LABEL_ROW_PX
            box = (centre - half, centre + half, low_y, low_y + LABEL_ROW_PX)
            if all(box[1] < b[0] or box[0] > b[1] or box[3] <= b[2] or box[2] >= b[3]
                   for b in boxes):
                boxes.append(box)
                placed.append((int(i), tier))
                break
    return placed


def spectrum_window(lines: pd.DataFrame, x: np.ndarray) -> tuple[float, float] | None:
    """The time range a spectrum opens on: its lines' fit windows with a margin.

    A lab capture spans -400..100 µs and its lines 0..20 µs; None without lines.
    """
    if not len(lines) or "window_start" not in lines or not x.size:
        return None
    start = float(np.nanmin(lines["window_start"]))
    stop = float(np.nanmax(lines["window_stop"]))
    if not (np.isfinite(start) and np.isfinite(stop)):
        return None
    margin = 0.15 * (stop - start) + 0.5
    return (max(start - margin, float(np.nanmin(x))), min(stop + margin, float(np.nanmax(x))))


def spectrum_plot(event: xr.Dataset, lines: pd.DataFrame, *, mass: bool = False,
                  height: int = 320, tools: tuple[str, ...] = (),
                  streams: tuple = ()) -> hv.Overlay:
    """The merged TOF spectrum with every fitted line drawn and labelled.

    Labels that would overlap are left out or staggered (:func:`placed_labels`);
    the title then says how many are labelled (the line table lists all).

    Parameters
    ----------
    event : xarray.Dataset
        One event (``tof_combined`` and its time axis).
    lines : pandas.DataFrame
        Line table (:func:`idexdask.dashboard.data.lines_frame`).
    mass : bool
        Mass axis (u) instead of time (µs); only when the event is calibrated.
    tools : tuple of str
        Extra Bokeh tools of the spectrum (the first is made active).
    streams : tuple of holoviews.streams.Stream
        Linked streams (a box selection) attached to the spectrum trace itself:
        HoloViews links them only to the element that carries the tool.
    """
    name = "tof_combined" if "tof_combined" in event else "TOF_High"
    time, values, unit = waveform(event, name)
    masses = mass_of_time(event, time) if mass else None
    if masses is not None:
        keep = np.isfinite(masses)
        x, xdim = masses[keep], hv.Dimension("mass", label="mass", unit="u")
        values = values[keep]
    else:
        x, xdim = time, hv.Dimension("time", label="time", unit="µs")
    ydim = hv.Dimension("signal", label=f"TOF spectrum ({unit})")
    xlim = spectrum_window(lines, x) if masses is None else None
    trace = downsampled(hv.Curve((x, values), xdim, ydim), x_range=xlim).opts(
        color="#444", tools=list(tools), **({"active_tools": [tools[0]]} if tools else {}))
    for stream in streams:
        stream.source = trace
    layers = [trace]
    curves = line_curves(lines)
    paths, tops, texts = [], [], []
    for curve in curves:
        lx = mass_of_time(event, curve.x) if masses is not None else curve.x
        label = str(lines.loc[curve.index, "label"]) if "label" in lines else ""
        paths.append((lx, curve.y))
        top_x, top_y = curve.top
        if masses is not None:
            top_x = float(lx[int(np.nanargmax(curve.y))]) if np.isfinite(curve.y).any() \
                else float(lx[0])
        tops.append((top_x, top_y))
        texts.append(label)
    if paths:
        # one glyph for every line: a Bokeh renderer per line cost ~13 ms of plot
        # construction each; no hover on it (with a value per path, Chromium hung
        # drawing a lab impact's 30 lines)
        layers.append(hv.Path(paths, [xdim, ydim]).opts(color="red", line_width=1.5))
    low, high = xlim if xlim else (float(np.nanmin(x)), float(np.nanmax(x))) if x.size \
        else (0.0, 1.0)
    placed = placed_labels([t[0] for t in tops], [t[1] for t in tops], texts,
                           span=high - low)
    if placed:
        ymax = max((t[1] for t in tops), default=1.0) or 1.0
        lift = LABEL_ROW_PX / LABEL_PLOT_HEIGHT_PX * ymax
        labels = [(tops[i][0], tops[i][1] + tier * lift, texts[i]) for i, tier in placed]
        layers.append(hv.Labels(labels, [xdim, ydim], "label").opts(
            text_font_size="9pt", yoffset=0, text_color="darkred", text_baseline="bottom"))
    title = "TOF spectrum" + (" on the mass axis" if masses is not None else "")
    if len(placed) < len(paths):
        title += f" — {len(placed)} of {len(paths)} lines labelled (all in the line table)"
    extra = {"xlim": xlim} if xlim else {}
    return functools.reduce(operator.mul, layers).opts(
        hv.opts.Overlay(height=height, responsive=True, title=title, show_legend=False,
                        **extra))
