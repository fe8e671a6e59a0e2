"""The charge pickup (QD) products that :func:`idexdask.analyze` adds to lab captures.

A dust-accelerator capture (:func:`idexdask.read_trc`, dataset attribute
``source = "lecroy_trc"``) records the grain passing the beam line's charge
pickup tubes (``QD_1`` upstream, ``QD_2`` downstream).  Every such event gets the
products below, whatever its QD channels hold: a missing channel gives its
detector the status ``no_signal``, a flat one ``no_pulse``, never an exception.

Products (dimension ``epoch``)
------------------------------
``qd1_*``, ``qd2_*``
    The single-tube results of :func:`~idexdask.analysis.pickup.pickup_uniform`
    for ``QD_1`` and ``QD_2``: ``entry_time``, ``exit_time``, ``center_time``,
    ``transit_time`` (+ ``_err``), µs; ``speed`` (+ ``_err``), km/s;
    ``baseline``, ``pulse_height`` (+ ``_err``), V; ``charge`` (+ ``_err``), fC;
    ``snr``; ``flight_to_impact``, µs; ``flight_over_transit``;
    ``speed_to_target`` (+ ``_err``), km/s; ``status`` (int8 flags).
``qd_speed``, ``qd_speed_err``
    The grain's speed, km/s: the error-weighted mean of the two tubes' transit
    speeds (one tube where only one measured it).
``qd_charge``, ``qd_charge_err``
    The grain's charge, fC: that of the first tube with a usable plateau
    (``QD_1``, else ``QD_2``; ``qd_charge_detector`` says which).  The two tubes'
    amplifiers are calibrated separately, so their charges are not averaged.
``qd_delay``, ``qd_delay_err``, ``qd_entry_delay``, ``qd_exit_delay``
    Centre (entry, exit) time of ``QD_2`` minus ``QD_1``, µs.
``qd_speed_tof``, ``qd_speed_tof_err``, ``qd_speed_ratio``, ``qd_speeds_agree``,
``qd_implied_separation``, ``qd_delay_to_transit``
    The flight-time speed between the tubes and its consistency with the
    transit speed (see :func:`~idexdask.analysis.pickup.combine_detectors`).
``qd_status``
    0 ``ok`` (speed and charge), 1 ``no_channel`` (no QD channel in the
    capture), 2 ``no_speed`` (no tube found both edges), 3 ``no_charge`` (speed,
    but no usable plateau).

Tube lengths and amplifier gains come from ``configs/scope.yaml``
(``pickup``); where they are not measurements the products say so in their
``tube_length_provenance`` and ``calibration`` attributes (``placeholder``).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import Any

import numpy as np
import xarray as xr

from idexdask._logging import get_logger
from idexdask.adccodes import code_scale, recorded_codes
from idexdask.analysis.pickup import (
    DEFAULT_TUBE_LENGTH_M,
    PLACEHOLDER_VOLTS_PER_COULOMB,
    load_scope_config,
)
from idexdask.analysis.pickup.charge_speed import SingleTube, pickup_uniform_variables
from idexdask.analysis.pickup.detectors import combine_tubes
from idexdask.analysis.signal_quality.dataset import (
    FormulaTimes,
    find_time_variable,
    host_time_axis,
)

__all__ = ["DETECTORS", "QDStatus", "is_capture", "pickup_products"]

_log = get_logger(__name__)

DETECTORS = ("QD_1", "QD_2")
"""The pickup channels, upstream first, as :func:`idexdask.read_trc` names them."""

_DETECTION_KEYS = ("smooth_us", "threshold_sigma", "min_transit_us", "max_transit_us",
                   "edge_window_us", "baseline_us", "plateau_guard", "impact_time_us")

_COMBINED = {  # combine_detectors name -> product name
    "delay": "qd_delay",
    "delay_err": "qd_delay_err",
    "entry_delay": "qd_entry_delay",
    "exit_delay": "qd_exit_delay",
    "speed_transit": "qd_speed",
    "speed_transit_err": "qd_speed_err",
    "speed_tof": "qd_speed_tof",
    "speed_tof_err": "qd_speed_tof_err",
    "speed_ratio": "qd_speed_ratio",
    "speeds_agree": "qd_speeds_agree",
    "implied_separation": "qd_implied_separation",
    "delay_to_transit": "qd_delay_to_transit",
}

_ABSENT_SAMPLES = 64  # an all-NaN record standing in for a missing channel


class QDStatus(IntEnum):
    """Outcome of the grain's speed and charge from the pickup tubes."""

    OK = 0
    NO_CHANNEL = 1
    NO_SPEED = 2
    NO_CHARGE = 3


def is_capture(ds: xr.Dataset) -> bool:
    """Whether ``ds`` holds lab captures (LeCroy source, or a QD channel)."""
    return ds.attrs.get("source") == "lecroy_trc" or any(c in ds.variables for c in DETECTORS)


def _detector(ds: xr.Dataset, name: str, cfg: Mapping[str, Any]) -> SingleTube:
    """:func:`pickup_uniform` of one QD channel (all-NaN, status no_signal, if absent)."""
    per = (cfg.get("detectors") or {}).get(name) or {}

    def setting(key: str, default: Any) -> Any:
        return per.get(key, cfg.get(key, default))

    kw: dict[str, Any] = {k: cfg[k] for k in _DETECTION_KEYS if k in cfg}
    if cfg.get("target_distance_m") is not None:
        kw["target_distance_m"] = float(cfg["target_distance_m"])
    kw.update(
        tube_length_m=float(setting("tube_length_m", DEFAULT_TUBE_LENGTH_M)),
        volts_per_coulomb=float(setting("volts_per_coulomb", PLACEHOLDER_VOLTS_PER_COULOMB)),
        calibration=str(setting("calibration", "placeholder")),
    )
    n_events = int(ds.sizes["epoch"])
    variable = ds.variables.get(name)
    time_name = None if variable is None else variable.attrs.get("time_variable")
    if variable is None or variable.ndim != 2 or time_name not in ds.variables:
        signal = np.full((n_events, _ABSENT_SAMPLES), np.nan)
        return pickup_uniform_variables(0.0, 1.0, signal, polarity=int(setting("polarity", -1)),
                                        **kw)
    first_two = _first_two_times(ds, name, variable, time_name)
    start = first_two[:, 0]
    offset = _channel_column(ds, "channel_time_offset", name)
    if offset is not None:
        start = start + np.where(np.isfinite(offset), offset, 0.0)
    polarity = int(variable.attrs.get("signal_polarity", setting("polarity", -1)))
    gain, offset = _adc_scale(ds, name)
    codes = _recorded_codes(variable, gain, offset)
    # with the recorded codes the volts are decoded only if a record needs them
    # (a lazy waveform of a pipeline read: mostly never)
    signal = (lambda: variable.values) if codes is not None else variable.values
    return pickup_uniform_variables(start, first_two[:, 1] - first_two[:, 0], signal,
                                    polarity=polarity, adc_gain=gain, adc_offset=offset,
                                    adc_codes=codes, **kw)


def _first_two_times(ds: xr.Dataset, name: str, variable: xr.Variable,
                     time_name: str) -> np.ndarray:
    """The times of each event's first two samples, (events, 2), µs: from the
    axis's terms where it is given by formula (the same roundings as the
    materialised axis, which indexing the lazy axis would form in full)."""
    axis = host_time_axis(ds, name, variable.shape)
    if isinstance(axis, FormulaTimes) and find_time_variable(ds, name) == time_name:
        rows = np.arange(variable.shape[0])[:, None]
        return axis.values_at(rows, np.arange(2))
    return np.asarray(ds.variables[time_name][:, :2].values, dtype=np.float64)


def _recorded_codes(variable: xr.Variable, gain: np.ndarray | None,
                    offset: np.ndarray | None) -> np.ndarray | None:
    """The int16 codes the reader decoded ``variable``'s float32 volts from, where
    it kept them (:func:`idexdask.adccodes.recorded_codes`, a pack read: without
    decoding a lazy waveform) with the scale of every event whose ``gain`` and
    ``offset`` are known (the others, a missing channel, are left to the float
    path); else None."""
    scale = code_scale(variable.encoding)
    if scale is None or gain is None or offset is None or variable.dtype != np.float32:
        return None
    known = np.isfinite(gain) & np.isfinite(offset)
    if not (np.all(gain[known] == scale.scale) and np.all(-offset[known] == scale.offset)):
        return None
    codes = recorded_codes(variable, scale)
    return codes if codes is not None and codes.dtype == np.int16 else None


def _adc_scale(ds: xr.Dataset, name: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Each event's ``vertical_gain`` and ``vertical_offset`` of channel ``name``
    (volts = gain * code - offset), or None where the capture does not carry them."""
    gain = _channel_column(ds, "vertical_gain", name)
    offset = _channel_column(ds, "vertical_offset", name)
    if gain is None or offset is None:
        return None, None
    return gain.astype(np.float64), offset.astype(np.float64)


def _channel_column(ds: xr.Dataset, variable: str, name: str) -> np.ndarray | None:
    """``ds[variable].sel(channel=name)``'s values per event (by position: a label
    selection builds an indexer and a DataArray per call), or None where
    ``variable`` or the channel is absent."""
    var = ds.variables.get(variable)
    index = ds.indexes.get("channel")
    if var is None or index is None or name not in index:
        return None
    if var.dims == ("epoch", "channel"):
        return np.asarray(var.values[:, index.get_loc(name)])
    return np.asarray(ds[variable].sel(channel=name).values)


def pickup_products(
    ds: xr.Dataset, scope_config: Mapping[str, Any] | None = None
) -> dict[str, xr.Variable] | None:
    """The QD products of a capture dataset (see the module docstring).

    Parameters
    ----------
    ds : xarray.Dataset
        Events on ``epoch``.
    scope_config : mapping, optional
        The parsed ``configs/scope.yaml`` (default: that file).

    Returns
    -------
    dict of str to xarray.Variable, or None
        The products in a fixed order (the same for every capture, whichever QD
        channels it has); None if ``ds`` is not a capture or has no events.
    """
    if not is_capture(ds) or int(ds.sizes.get("epoch", 0)) == 0:
        return None
    config = scope_config if scope_config is not None else load_scope_config()
    cfg = dict(config.get("pickup") or {})
    tube_provenance = str(cfg.get("tube_length_provenance", "placeholder"))
    singles = [_detector(ds, name, cfg) for name in DETECTORS]
    combined = combine_tubes(
        *singles, separation_m=cfg.get("separation_m"),
        agreement_tolerance=float(cfg.get("agreement_tolerance", 0.05)),
    )
    out: dict[str, xr.Variable] = {}
    for name, (_, values, var_attrs) in combined.items():
        product = _COMBINED.get(name, name)
        attrs = dict(var_attrs)
        if product.endswith("_speed") or product == "qd_speed":
            attrs["tube_length_provenance"] = tube_provenance
        out[product] = xr.Variable(("epoch",), values, attrs=attrs)
    out["qd_speed"].attrs["long_name"] = (
        "grain speed from the pickup tubes' transit times (error-weighted mean)")
    charge, charge_err, source = _first_charge(singles)
    calibration = str(cfg.get("calibration", "placeholder"))
    out["qd_charge"] = xr.Variable(("epoch",), charge, attrs={
        "units": "fC", "calibration": calibration,
        "long_name": "grain charge from the first pickup tube with a usable plateau"})
    out["qd_charge_err"] = xr.Variable(("epoch",), charge_err, attrs={"units": "fC"})
    out["qd_charge_detector"] = xr.Variable(("epoch",), source, attrs={
        "long_name": "pickup channel giving qd_charge ('' if none)"})
    present = any(name in ds.variables for name in DETECTORS)
    status = np.where(
        not present, QDStatus.NO_CHANNEL,
        np.where(~np.isfinite(out["qd_speed"].values), QDStatus.NO_SPEED,
                 np.where(np.isfinite(charge), QDStatus.OK, QDStatus.NO_CHARGE)),
    ).astype(np.int8)
    out["qd_status"] = xr.Variable(("epoch",), status, attrs={
        "units": "1", "flag_values": np.arange(len(QDStatus), dtype=np.int8),
        "flag_meanings": " ".join(s.name.lower() for s in QDStatus)})
    n_bad = int((status != QDStatus.OK).sum())
    if n_bad:
        _log.info("pickup products: %d of %d events without speed and charge", n_bad,
                  status.size)
    return out


def _first_charge(singles: list[SingleTube]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Charge, its error and the channel name of the first detector that measured one."""
    n = singles[0].values("charge").size
    charge, err = np.full(n, np.nan), np.full(n, np.nan)
    source = np.full(n, "", dtype=object)
    for name, single in zip(DETECTORS, singles, strict=True):
        q, e = single.values("charge"), single.values("charge_err")
        use = ~np.isfinite(charge) & np.isfinite(q)
        charge = np.where(use, q, charge)
        err = np.where(use, e, err)
        source = np.where(use, name, source)
    return charge, err, source.astype(str)
