"""Noise diagnostics of one waveform channel: histogram + Gaussian fit, PSD, autocorrelation.

Everything is computed for all events of a dataset at once, on the samples of a
time window (default the baseline window -7..-5 µs of ``analysis.quality`` in
``configs/default.yaml``) or on the whole trace.  The work is done on the host
(SciPy); CuPy-backed datasets are copied to host memory first.

Definitions
-----------
Window
    Samples with ``start <= t < stop`` (µs from the trigger).  Time axes differ by
    a fraction of a sample between events, so every event contributes the same
    number ``L`` of consecutive samples from its first one in the window (``L`` =
    the smallest count over the events that have any).  Missing samples (NaN or
    ``FILLVAL``) are replaced by the event's median for the PSD and the
    autocorrelation and left out of the histogram; ``n_missing`` counts them.
Histogram and Gaussian fit
    Common bins for all events, spanning ``median +- histogram_range_sigma``
    robust sigmas of every event.  Integer (DN) data get integer-aligned bins
    (edges at ``k +- 0.5``, integer widths).  The model of bin ``[a, b)`` is
    ``amplitude * (Phi((b - mean) / sigma) - Phi((a - mean) / sigma))``, the
    Gaussian integrated over the bin: ``amplitude`` is the area in samples, and
    for a rounding ADC ``sigma`` is the analogue noise before quantisation.  It is
    fitted with :func:`scipy.optimize.curve_fit` to the counts in the event's own
    ``median +- range`` bins, with Poisson weights ``1 / model`` iterated to
    convergence (the fixed point is the Poisson maximum-likelihood estimate).
    Uncertainties are the square roots of the covariance diagonal
    (``absolute_sigma=True``); ``chi2`` is the Poisson likelihood-ratio
    (Baker-Cousins) chi-square ``2 * sum(model - n + n * ln(n / model))`` over the
    fitted bins whose expected count is at least 1, distributed approximately as
    chi-square with ``ndf`` = those bins - 3 degrees of freedom (the far tails,
    where the asymptotics fail, still constrain the fit but not the statistic).
Power spectral density
    :func:`scipy.signal.welch` (Hann window, ``nperseg`` samples, 50 % overlap,
    mean removed per segment), one-sided, frequency in MHz and density in
    ``unit**2 / MHz`` (DN²/MHz or V²/MHz); ``sum(psd) * df`` equals the variance.
    The sampling rate is ``1 / median(diff(t))`` MHz of the time axis.
Autocorrelation
    By FFT (O(L log L)), zero-padded so that it is linear, not circular; mean
    removed per event, unbiased (``r_k / (L - k)``) and normalised so
    ``acf[0] == 1``.  Lags in µs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from idexdask._logging import get_logger
from idexdask.analysis.histogram_fit import GaussianFit, fit_gaussian_histogram
from idexdask.analysis.robust import MAD_TO_SIGMA
from idexdask.analysis.signal_quality import (
    channel_arrays,
    detect_quantum,
    interpolated_mad,
    load_quality_config,
)
from idexdask.analysis.spectra import autocorrelation, welch_psd
from idexdask.analysis.xp import to_numpy
from idexdask.errors import AnalysisError

__all__ = ["CONFIG_WINDOW", "noise_diagnostics"]

_log = get_logger(__name__)

CONFIG_WINDOW = "config"
"""``window`` value meaning: the ``quality.noise.window_us`` of the configuration."""


def _window_segments(
    x: np.ndarray, valid: np.ndarray, t: np.ndarray | None, window: tuple[float, float] | None
) -> _WindowSamples:
    """Equal-length segments (n_events, L), their validity and their times (no step yet)."""
    n_events, n = x.shape
    if t is None:
        t2 = None
    else:
        t2 = t if t.ndim == 2 else np.broadcast_to(t[None, :], (n_events, n))
    if window is None or t2 is None:
        if window is not None:
            _log.warning("no time axis: noise diagnostics on the whole trace")
        tt = t2 if t2 is not None else np.full((n_events, n), np.nan)
        return _WindowSamples(values=x, ok=valid, times=tt, step=None)
    with np.errstate(invalid="ignore"):
        inwin = (t2 >= window[0]) & (t2 < window[1])
    count = inwin.sum(axis=1)
    has = count > 0
    if not has.any():
        return _WindowSamples(
            values=np.full((n_events, 0), np.nan),
            ok=np.zeros((n_events, 0), bool),
            times=np.full((n_events, 0), np.nan),
            step=None,
        )
    length = int(count[has].min())
    start = np.argmax(inwin, axis=1)
    idx = np.minimum(start[:, None] + np.arange(length)[None, :], n - 1)
    seg = np.take_along_axis(x, idx, axis=1)
    ok = np.take_along_axis(valid, idx, axis=1) & has[:, None]
    tt = np.take_along_axis(t2, idx, axis=1)
    return _WindowSamples(values=np.where(ok, seg, np.nan), ok=ok, times=tt, step=None)


def noise_diagnostics(
    ds: xr.Dataset,
    channel: str,
    *,
    window: tuple[float, float] | None | str = CONFIG_WINDOW,
    nperseg: int | None = None,
    max_lag: int | None = None,
    config: Mapping[str, Any] | str | Path | None = None,
) -> xr.Dataset:
    """Histogram with Gaussian fit, Welch PSD and autocorrelation of one channel.

    Parameters
    ----------
    ds : xarray.Dataset
        Event dataset (:func:`idexdask.read_l0` DN, or :func:`idexdask.io.trc.read_trc` V).
    channel : str
        Waveform variable, e.g. ``"TOF_High"``.
    window : (float, float), None or "config"
        ``[start, stop)`` µs from the trigger; None for the whole trace; default the
        configured ``quality.noise.window_us`` (-7..-5 µs).
    nperseg : int, optional
        Welch segment length, samples (default ``quality.noise.welch_nperseg``).
    max_lag : int, optional
        Largest autocorrelation lag, samples (default ``quality.noise.max_lag``).
    config : mapping, str, pathlib.Path or None
        Overrides of the ``quality`` configuration (see
        :func:`~idexdask.analysis.signal_quality.load_quality_config`).

    Returns
    -------
    xarray.Dataset
        Dimensions ``epoch``, ``frequency`` (MHz), ``lag`` (µs), ``bin``:
        ``histogram`` (epoch, bin) counts, ``histogram_model`` (fitted counts),
        ``bin_lower`` / ``bin_upper`` (bin) edges, ``gauss_mean``,
        ``gauss_sigma``, ``gauss_amplitude`` with ``*_err``, ``chi2``, ``ndf``,
        ``reduced_chi2``, ``fit_ok``, ``psd`` (epoch, frequency), ``autocorrelation``
        (epoch, lag), ``n_samples``, ``n_missing``, ``median``, ``robust_sigma``
        (1.4826 x MAD), ``std`` (epoch).

    Raises
    ------
    AnalysisError
        If ``channel`` is not a waveform of ``ds`` or no event has a sample in the
        window.
    ConfigError
        If ``config`` or the overrides are invalid.
    """
    cfg = load_quality_config(config)["noise"]
    window = _resolve_window(window, cfg)
    nperseg = int(cfg["welch_nperseg"] if nperseg is None else nperseg)
    max_lag = int(cfg["max_lag"] if max_lag is None else max_lag)
    if nperseg < 2 or max_lag < 0:
        raise AnalysisError("nperseg must be >= 2 and max_lag >= 0")
    var = ds[channel]
    units = str(var.attrs.get("units", "DN" if var.dtype.kind in "iu" else ""))

    samples = _window_samples(ds, channel, window)
    levels = _levels(samples)
    dt = _sampling_interval(channel, var, samples)
    rate_mhz = 1.0 / dt

    filled = np.where(samples.ok, samples.values, levels.median[:, None])
    filled = np.where(np.isfinite(filled), filled, 0.0)
    dead = samples.n_ok < 2
    freq, psd = _psd(filled, dead, rate_mhz, nperseg)
    acf = _acf(filled, dead, max_lag)

    bins = _histogram_bins(samples, levels, dead, cfg)
    hist = _histogram_counts(samples, bins)
    fits = _fit_histograms(channel, hist, bins)

    out = _coordinates(ds, freq, np.arange(acf.shape[1]) * dt, bins, units)
    _add_histograms(out, bins, hist, fits, units)
    _add_gaussian_fits(out, fits, units)
    _add_spectra(out, psd, acf, nperseg, samples.length, units)
    _add_levels(out, samples, levels, units)
    out.attrs.update(
        {
            "channel": channel,
            "window_us": "whole trace" if window is None else list(window),
            "sample_rate_mhz": rate_mhz,
            "units": units,
        }
    )
    return out


@dataclass(frozen=True)
class _WindowSamples:
    """One channel's samples in the window: ``L`` consecutive samples per event.

    Attributes
    ----------
    values : numpy.ndarray
        Samples (n_events, L), NaN where missing.
    ok : numpy.ndarray of bool
        Valid samples (n_events, L).
    times : numpy.ndarray
        Their times (n_events, L), µs; NaN without a time axis.
    step : float or None
        Quantisation step: 1 DN for integer data, else detected (scope codes),
        else None.
    """

    values: np.ndarray
    ok: np.ndarray
    times: np.ndarray
    step: float | None

    @property
    def n_events(self) -> int:
        """Number of events."""
        return int(self.values.shape[0])

    @property
    def length(self) -> int:
        """Samples per event, ``L``."""
        return int(self.values.shape[1])

    @property
    def n_ok(self) -> np.ndarray:
        """Valid samples per event (n_events,)."""
        return self.ok.sum(axis=1)


@dataclass(frozen=True)
class _Levels:
    """Per-event location and spread of the window's samples (units of the channel)."""

    median: np.ndarray
    robust_sigma: np.ndarray  #: 1.4826 x MAD (interpolated on quantised data)
    std: np.ndarray  #: sample standard deviation


@dataclass(frozen=True)
class _Bins:
    """Histogram bins common to all events, and each event's centre and width for them.

    Attributes
    ----------
    edges : numpy.ndarray
        Bin edges (n_bins + 1,).
    centre, sigma : numpy.ndarray
        Per event, the median and the robust sigma the bins span
        (``centre +- span * sigma``).
    span : float
        Robust sigmas each side of the centre (``histogram_range_sigma``).
    good : numpy.ndarray of bool
        Events with a finite median and at least 2 valid samples (the others
        are not fitted).
    """

    edges: np.ndarray
    centre: np.ndarray
    sigma: np.ndarray
    span: float
    good: np.ndarray

    @property
    def count(self) -> int:
        """Number of bins."""
        return int(self.edges.size - 1)

    @property
    def lower(self) -> np.ndarray:
        """Lower edges (n_bins,)."""
        return self.edges[:-1]

    @property
    def upper(self) -> np.ndarray:
        """Upper edges (n_bins,)."""
        return self.edges[1:]


def _resolve_window(
    window: tuple[float, float] | None | str, cfg: Mapping[str, Any]
) -> tuple[float, float] | None:
    """The ``[start, stop)`` window in µs (None: the whole trace), checked."""
    if isinstance(window, str):
        if window != CONFIG_WINDOW:
            raise AnalysisError(f"window: expected (start_us, stop_us), None or {CONFIG_WINDOW!r}")
        return cfg["window_us"]
    if window is not None:
        if len(window) != 2 or not float(window[0]) < float(window[1]):
            raise AnalysisError(
                f"window: expected (start_us, stop_us) with start < stop, got {window!r}"
            )
        return (float(window[0]), float(window[1]))
    return None


def _window_samples(
    ds: xr.Dataset, channel: str, window: tuple[float, float] | None
) -> _WindowSamples:
    """The channel's samples in ``window``, on the host, with their quantisation step."""
    xd, vd, td = channel_arrays(ds, channel)
    x, valid = to_numpy(xd), to_numpy(vd)
    t = None if td is None else to_numpy(td)
    segments = _window_segments(x, valid, t, window)
    if x.shape[0] and segments.length < 2:
        raise AnalysisError(f"{channel}: fewer than 2 samples in the window {window} µs")
    step = 1.0 if ds[channel].dtype.kind in "iu" else detect_quantum(segments.values)
    return replace(segments, step=step)


def _levels(samples: _WindowSamples) -> _Levels:
    """Median, robust sigma and standard deviation of each event's samples."""
    seg, step = samples.values, samples.step
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(seg, axis=1) if samples.length else np.full(samples.n_events, np.nan)
        dev = np.abs(seg - med[:, None])
        mad = interpolated_mad(dev, step) if step is not None else np.nanmedian(dev, axis=1)
        robust = MAD_TO_SIGMA * mad
        std = np.nanstd(seg, axis=1, ddof=1)
    return _Levels(median=med, robust_sigma=robust, std=std)


def _sampling_interval(channel: str, var: xr.DataArray, samples: _WindowSamples) -> float:
    """Median sampling interval of the window's time axis, µs (else from the sample rate)."""
    tt, length = samples.times, samples.length
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        dt = np.nanmedian(np.diff(tt, axis=1)) if length > 1 else math.nan
    if not (math.isfinite(dt) and dt > 0):
        rate = var.attrs.get("sample_rate_msps")
        dt = 1.0 / float(rate) if rate else 1.0
        _log.warning("%s: no usable time axis; sampling interval %.6g µs assumed", channel, dt)
    if length > 1 and np.isfinite(tt).all():
        spread = np.nanmax(np.abs(np.diff(tt, axis=1) - dt)) / dt
        if spread > 1e-3:
            _log.warning(
                "%s: sampling interval varies by %.2g (relative); PSD uses %.6g MHz",
                channel,
                spread,
                1.0 / dt,
            )
    return dt


def _psd(
    filled: np.ndarray, dead: np.ndarray, rate_mhz: float, nperseg: int
) -> tuple[np.ndarray, np.ndarray]:
    """Welch PSD of each event's gap-filled samples (NaN for dead events): frequency, psd."""
    n_events, length = filled.shape
    freq, psd = (
        welch_psd(filled, rate_mhz, nperseg)
        if n_events
        else welch_psd(np.zeros((0, length)), rate_mhz, nperseg)
    )
    return freq, np.where(dead[:, None], np.nan, psd)


def _acf(filled: np.ndarray, dead: np.ndarray, max_lag: int) -> np.ndarray:
    """Autocorrelation of each event's gap-filled samples (NaN for dead events)."""
    n_events, length = filled.shape
    acf = (
        autocorrelation(filled, max_lag)
        if n_events
        else np.zeros((0, min(max_lag, length - 1) + 1))
    )
    return np.where(dead[:, None], np.nan, acf)


def _histogram_bins(
    samples: _WindowSamples, levels: _Levels, dead: np.ndarray, cfg: Mapping[str, Any]
) -> _Bins:
    """Common bins spanning ``median +- histogram_range_sigma`` robust sigmas of every event.

    Quantised data get lattice-aligned bins (edges half a step from the sample
    values, integer multiples of the step wide).
    """
    seg, ok, step = samples.values, samples.ok, samples.step
    med, robust, std = levels.median, levels.robust_sigma, levels.std
    rsig = np.where((robust > 0) & np.isfinite(robust), robust, std)
    floor = step if step is not None else 0.0
    rsig = np.where(np.isfinite(rsig) & (rsig > floor / 4), rsig, max(floor, 1e-12))
    span = cfg["histogram_range_sigma"]
    good = np.isfinite(med) & ~dead
    max_bins = cfg["histogram_max_bins"]
    if good.any():
        lo = float(np.min(med[good] - span * rsig[good]))
        hi = float(np.max(med[good] + span * rsig[good]))
        if step is not None:
            # lattice-aligned bins: edges half a step from the sample values
            ref = float(np.nanmin(seg[ok])) if ok.any() else 0.0
            k_lo = math.floor((lo - ref) / step)
            k_hi = math.ceil((hi - ref) / step)
            lo_e = ref + (k_lo - 0.5) * step
            mult = max(1, math.ceil((k_hi - k_lo + 1) / max_bins))
            width = mult * step
            nb = int(math.ceil((k_hi - k_lo + 1) / mult))
        else:
            width = float(np.min(rsig[good])) / 4.0
            nb = int(min(max_bins, max(8, math.ceil((hi - lo) / width))))
            width = (hi - lo) / nb
            lo_e = lo
        edges = lo_e + width * np.arange(nb + 1)
    else:
        edges = np.array([0.0, 1.0])
    return _Bins(edges=edges, centre=med, sigma=rsig, span=span, good=good)


def _histogram_counts(samples: _WindowSamples, bins: _Bins) -> np.ndarray:
    """Valid samples per bin and event (n_events, n_bins), int64."""
    n_events, nb, edges = samples.n_events, bins.count, bins.edges
    with np.errstate(invalid="ignore"):
        b = np.floor((samples.values - edges[0]) / (edges[1] - edges[0]))
    inb = samples.ok & np.isfinite(b) & (b >= 0) & (b < nb)
    flat_idx = (np.arange(n_events)[:, None] * nb + np.where(inb, b, 0).astype(np.int64))[inb]
    return np.bincount(flat_idx, minlength=n_events * nb).reshape(n_events, nb).astype(np.int64)


def _fit_histograms(channel: str, hist: np.ndarray, bins: _Bins) -> list[GaussianFit]:
    """One Gaussian fit per event, to the bins within its ``centre +- span * sigma``."""
    lower, upper, span = bins.lower, bins.upper, bins.span
    fits: list[GaussianFit] = []
    for e in range(hist.shape[0]):  # one small least-squares fit per event
        if not bins.good[e]:
            fits.append(GaussianFit.failed(bins.count))
            continue
        centre, sigma = bins.centre[e], bins.sigma[e]
        mask = (upper > centre - span * sigma) & (lower < centre + span * sigma)
        p0 = (float(centre), float(sigma), float(hist[e][mask].sum()))
        fits.append(fit_gaussian_histogram(hist[e], lower, upper, p0=p0, fit_mask=mask))
    n_failed = sum(1 for f, g in zip(fits, bins.good, strict=True) if g and not f.ok)
    if n_failed:
        _log.info("%s: Gaussian fit failed for %d of %d events", channel, n_failed, len(fits))
    return fits


def _coordinates(
    ds: xr.Dataset, freq: np.ndarray, lags: np.ndarray, bins: _Bins, units: str
) -> xr.Dataset:
    """The result's coordinates: ``frequency`` (MHz), ``lag`` (µs), ``bin`` and ``epoch``."""
    coords: dict[str, Any] = {
        "frequency": ("frequency", freq, {"units": "MHz", "long_name": "frequency"}),
        "lag": ("lag", lags, {"units": "us", "long_name": "autocorrelation lag"}),
        "bin": (
            "bin",
            0.5 * (bins.lower + bins.upper),
            {"units": units, "long_name": "histogram bin centre"},
        ),
    }
    if "epoch" in ds.coords:
        coords["epoch"] = ds["epoch"].values
    return xr.Dataset(coords=coords)


def _add_histograms(
    out: xr.Dataset, bins: _Bins, hist: np.ndarray, fits: list[GaussianFit], units: str
) -> None:
    """Bin edges, counts and the fitted model's counts."""
    out["bin_lower"] = ("bin", bins.lower, {"units": units})
    out["bin_upper"] = ("bin", bins.upper, {"units": units})
    out["histogram"] = (("epoch", "bin"), hist, {"units": "1", "long_name": "samples per bin"})
    out["histogram_model"] = (
        ("epoch", "bin"),
        np.stack([f.model for f in fits]) if fits else np.zeros((0, bins.count)),
        {"units": "1", "long_name": "fitted bin-integrated Gaussian (NaN outside the fitted bins)"},
    )


def _add_gaussian_fits(out: xr.Dataset, fits: list[GaussianFit], units: str) -> None:
    """The Gaussian fits' parameters, uncertainties and goodness of fit, per event."""

    def col(attr: str) -> np.ndarray:
        return np.array([getattr(f, attr) for f in fits], dtype=float)

    e_dims = ("epoch",)
    for name, unit, long_name in (
        ("mean", units, "fitted Gaussian mean"),
        ("sigma", units, "fitted Gaussian standard deviation"),
        ("amplitude", "1", "fitted Gaussian area (samples)"),
    ):
        out[f"gauss_{name}"] = (e_dims, col(name), {"units": unit, "long_name": long_name})
        out[f"gauss_{name}_err"] = (
            e_dims,
            col(f"{name}_err"),
            {"units": unit, "long_name": f"1-sigma uncertainty of {long_name}"},
        )
    out["chi2"] = (
        e_dims,
        col("chi2"),
        {
            "units": "1",
            "long_name": "Baker-Cousins (Poisson likelihood-ratio) chi-square of the Gaussian fit",
        },
    )
    out["ndf"] = (e_dims, np.array([f.ndf for f in fits], dtype=np.int32), {"units": "1"})
    out["reduced_chi2"] = (
        e_dims,
        np.array([f.reduced_chi2 for f in fits], dtype=float),
        {"units": "1"},
    )
    out["fit_ok"] = (e_dims, np.array([f.ok for f in fits], dtype=bool))


def _add_spectra(
    out: xr.Dataset, psd: np.ndarray, acf: np.ndarray, nperseg: int, length: int, units: str
) -> None:
    """Welch PSD and autocorrelation, per event."""
    out["psd"] = (
        ("epoch", "frequency"),
        psd,
        {
            "units": f"{units}^2/MHz",
            "long_name": "Welch power spectral density (one-sided)",
            "nperseg": int(min(nperseg, max(length, 1))),
        },
    )
    out["autocorrelation"] = (
        ("epoch", "lag"),
        acf,
        {"units": "1", "long_name": "normalised unbiased autocorrelation"},
    )


def _add_levels(out: xr.Dataset, samples: _WindowSamples, levels: _Levels, units: str) -> None:
    """Sample counts, median, robust sigma and standard deviation, per event."""
    e_dims = ("epoch",)
    n_ok = samples.n_ok
    out["n_samples"] = (
        e_dims,
        n_ok.astype(np.int32),
        {"units": "1", "long_name": "valid samples in the window"},
    )
    out["n_missing"] = (e_dims, (samples.length - n_ok).astype(np.int32), {"units": "1"})
    out["median"] = (e_dims, levels.median, {"units": units})
    out["robust_sigma"] = (
        e_dims, levels.robust_sigma, {"units": units, "long_name": "1.4826 x MAD"}
    )  # fmt: skip
    out["std"] = (e_dims, levels.std, {"units": units, "long_name": "sample standard deviation"})
