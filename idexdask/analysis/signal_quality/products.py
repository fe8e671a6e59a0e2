"""The signal-quality products of a dataset: per channel, then as variables."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from idexdask._logging import get_logger
from idexdask.analysis.robust import MAD_TO_SIGMA
from idexdask.analysis.signal_quality.array_path import channel_quality_xp
from idexdask.analysis.signal_quality.dataset import adc_rails, clipped_flag, waveform_variables
from idexdask.analysis.signal_quality.host_path import channel_quality_host, host_codes
from idexdask.analysis.signal_quality.settings import load_quality_config
from idexdask.analysis.signal_quality.status import (
    STATUS_MEANINGS,
    ChannelQuality,
    QualityStatus,
)
from idexdask.errors import AnalysisError

__all__ = ["channel_quality", "quality_variables", "signal_quality"]

_log = get_logger(__name__)


def channel_quality(
    ds: xr.Dataset, name: str, cfg: Mapping[str, Any], *, compiled: bool = True
) -> ChannelQuality:
    """All per-event quantities of one channel (host NumPy arrays of length n_events).

    ``compiled``: NumPy samples of a numeric dtype go through the compiled passes
    (:func:`channel_quality_host`); False forces the array-namespace code (the
    one CuPy runs), which gives the same results.
    """
    var = ds.variables[name]
    window = cfg["baseline_window_by_channel"].get(name, cfg["baseline_window_us"])
    polarity = cfg["polarity"].get(name, var.attrs.get("signal_polarity", 1))
    try:
        polarity = int(polarity)
    except (TypeError, ValueError):
        polarity = 1
    if polarity not in (-1, 0, 1):
        polarity = 1 if polarity > 0 else -1
    rails = adc_rails(var.attrs)
    n_events = var.shape[0] if var.ndim == 2 else 0
    clipped = clipped_flag(ds, name, n_events)
    # the compiled passes read NumPy samples, or the int16 codes the reader kept
    # for float32 volts (a lazy waveform's volts are then never decoded)
    if (
        compiled
        and var.ndim == 2
        and var.dtype.kind in "iuf"
        and var.size > 0
        and (host_codes(var) is not None or isinstance(var.data, np.ndarray))
    ):
        res = channel_quality_host(ds, name, cfg, window, polarity, rails, clipped)
    else:
        res = channel_quality_xp(ds, name, cfg, window, polarity, rails, clipped)
    return replace(res, window=window, polarity=polarity, rails=rails)


def signal_quality(
    ds: xr.Dataset,
    config: Mapping[str, Any] | str | Path | None = None,
    *,
    channels: Sequence[str] | None = None,
) -> xr.Dataset:
    """Baseline, noise, SNR and saturation of every waveform of every event.

    Parameters
    ----------
    ds : xarray.Dataset
        Event dataset from :func:`idexdask.read_l0` (uint16 DN, fill 65535) or
        :func:`idexdask.io.trc.read_trc` (float32 V, NaN for missing).  NumPy or
        CuPy backed.
    config : mapping, str, pathlib.Path or None
        Overrides of ``analysis.quality`` in ``configs/default.yaml`` (see
        :func:`load_quality_config`).
    channels : sequence of str, optional
        Waveform variables to analyse; default all (:func:`waveform_variables`).

    Returns
    -------
    xarray.Dataset
        Dimension ``epoch`` (and ``channel`` for ``quality_status``).  For each
        channel, with ``<ch>`` its lower-case name (``tof_high``, ``ion_grid``, ...):

        ``<ch>_baseline`` (DN or V)
            Median over the baseline window.
        ``<ch>_noise`` (DN or V)
            1.4826 x MAD over the baseline window (std if the MAD is 0).
        ``<ch>_excursion`` (DN or V)
            Largest ``polarity * (x - baseline)``.
        ``<ch>_snr`` (1)
            ``excursion / max(noise, quantum / sqrt(12))``.
        ``<ch>_peak_time`` (µs)
            Time of that excursion.
        ``<ch>_saturated`` (bool)
            Any saturated sample (rail run or clipped flat top, see module doc).
        ``<ch>_saturated_samples`` (int)
            Number of saturated samples.
        ``<ch>_saturation_start``, ``<ch>_saturation_stop`` (µs)
            Times of the first and last saturated sample (NaN if none).
        ``<ch>_quality_status`` (int8)
            :class:`QualityStatus`.

        plus ``quality_status`` (epoch, channel), the same codes stacked.

    Raises
    ------
    AnalysisError
        If a requested channel is not a waveform of ``ds``.
    ConfigError
        If ``config`` is invalid.

    Notes
    -----
    Never raises on bad waveforms (flat, all zero, all at a rail, NaN or fill,
    too short): these get a :class:`QualityStatus` and NaN statistics.
    """
    cfg = load_quality_config(config)
    names = list(channels) if channels is not None else None
    variables = quality_variables(ds, cfg, names)
    coords = {"epoch": ds["epoch"].values} if "epoch" in ds.coords else {}
    out = xr.Dataset(coords=coords).assign(variables)  # one assign, not 60 merges
    out.attrs["baseline_window_us"] = list(cfg["baseline_window_us"])
    out.attrs["mad_to_sigma"] = MAD_TO_SIGMA
    return out


def quality_variables(
    ds: xr.Dataset,
    cfg: Mapping[str, Any],
    channels: Sequence[str] | None = None,
    *,
    channel_dim: str = "channel",
) -> dict[str, xr.Variable]:
    """The variables of :func:`signal_quality`, without building their Dataset.

    For callers that add them to a dataset of their own (:func:`idexdask.analyze`
    assigns them, with its other products, in one step).

    Parameters
    ----------
    ds : xarray.Dataset
        Event dataset (see :func:`signal_quality`).
    cfg : mapping
        A configuration already validated by :func:`load_quality_config`.
    channels : sequence of str, optional
        Waveform variables to analyse; default all (:func:`waveform_variables`).
    channel_dim : str
        Name of the channel dimension of ``quality_status``.

    Returns
    -------
    dict of str to xarray.Variable
        In the order of :func:`signal_quality`'s variables after ``epoch``: the
        per-channel variables, the ``channel_dim`` coordinate values, then
        ``quality_status``.

    Raises
    ------
    AnalysisError
        If a requested channel is not a waveform of ``ds``.
    """
    available = waveform_variables(ds)
    names = list(channels) if channels is not None else available
    for name in names:
        if name not in ds.data_vars or ds.variables[name].ndim != 2:
            raise AnalysisError(f"{name!r} is not a waveform variable of the dataset")
        if name not in available:
            _log.debug("%s: not recognised as a waveform by its dims/attrs; analysed anyway", name)
    n_events = int(ds.sizes.get("epoch", 0))
    data_vars: dict[str, xr.Variable] = {}
    stacked = []
    for name in names:  # one pass per channel (six at most); events are vectorised
        quality = channel_quality(ds, name, cfg)
        data_vars.update(_channel_variables(ds.variables[name], name, quality, cfg))
        res = quality.products
        stacked.append(res["quality_status"])
        bad = res["quality_status"] >= int(QualityStatus.MISSING_SAMPLES)
        if bad.any():
            counts = np.bincount(res["quality_status"], minlength=len(QualityStatus))
            _log.info(
                "%s: quality status counts %s",
                name,
                {QualityStatus(i).name: int(c) for i, c in enumerate(counts) if c},
            )
    status = np.stack(stacked, axis=1) if stacked else np.zeros((n_events, 0), dtype=np.int8)
    data_vars[channel_dim] = xr.Variable((channel_dim,), np.asarray(names, dtype=str))
    data_vars["quality_status"] = xr.Variable(
        ("epoch", channel_dim),
        status.astype(np.int8),
        attrs={
            "long_name": "worst applicable quality condition per event and channel",
            "flag_values": np.arange(len(QualityStatus), dtype=np.int8),
            "flag_meanings": STATUS_MEANINGS,
        },
    )
    return data_vars


def _channel_variables(
    var: xr.Variable, name: str, quality: ChannelQuality, cfg: Mapping[str, Any]
) -> dict[str, xr.Variable]:
    """The ``<ch>_<product>`` variables of one channel, with their attributes."""
    units = str(var.attrs.get("units", "DN" if var.dtype.kind in "iu" else ""))
    label = str(var.attrs.get("long_name", name))
    low = name.lower()
    spec = {
        "baseline": (units, f"{label}: baseline level (median over the baseline window)"),
        "noise": (units, f"{label}: baseline noise (1.4826 x MAD over the baseline window, "
            "floored at the quantisation noise)"),
        "excursion": (
            units,
            f"{label}: largest excursion from the baseline in the signal polarity",
        ),
        "snr": ("1", f"{label}: peak excursion over the baseline noise"),
        "peak_time": ("us", f"{label}: time of the largest excursion from the trigger"),
        "saturated": ("1", f"{label}: ADC rail run or clipped flat top present"),
        "saturated_samples": ("1", f"{label}: number of saturated samples"),
        "saturation_start": ("us", f"{label}: time of the first saturated sample"),
        "saturation_stop": ("us", f"{label}: time of the last saturated sample"),
        "quality_status": ("1", f"{label}: quality status"),
    }
    data_vars = {}
    for key, (unit, long_name) in spec.items():
        attrs: dict[str, Any] = {"units": unit, "long_name": long_name, "channel": name}
        if key == "quality_status":
            attrs["flag_values"] = np.arange(len(QualityStatus), dtype=np.int8)
            attrs["flag_meanings"] = STATUS_MEANINGS
        if key in ("baseline", "noise", "snr"):
            attrs["baseline_window_us"] = list(quality.window)
        if key == "snr":
            attrs["signal_polarity"] = quality.polarity
            attrs["noise_floor"] = quality.quantum / math.sqrt(12.0)
        if key == "saturated":
            vmin, vmax = quality.rails
            attrs["rail_min"] = "none" if vmin is None else vmin
            attrs["rail_max"] = "none" if vmax is None else vmax
            attrs["saturation_min_run"] = cfg["saturation_min_run"]
            attrs["flat_top_min_run"] = cfg["flat_top_min_run"]
            attrs["flat_top_sigma"] = cfg["flat_top_sigma"]
        data_vars[f"{low}_{key}"] = xr.Variable(("epoch",), quality.products[key], attrs=attrs)
    return data_vars
