"""Two pickup tubes: the speed from their flight time, and the analysis of an
event dataset's QD channels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from idexdask.analysis.pickup.charge_speed import SingleTube, pickup_charge_speed
from idexdask.analysis.pickup.settings import (
    DEFAULT_TUBE_LENGTH_M,
    KM_S_PER_M_US,
    PLACEHOLDER_VOLTS_PER_COULOMB,
    load_scope_config,
)
from idexdask.errors import AnalysisError

__all__ = ["combine_detectors", "combine_tubes", "pickup_from_dataset", "pickup_two_detectors"]


def _pair(value: Any) -> tuple[Any, Any]:
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise AnalysisError(f"expected a scalar or a pair, got {value!r}")
        return value[0], value[1]
    return value, value


def pickup_two_detectors(
    time_us: Any,
    signal1_v: Any,
    signal2_v: Any,
    *,
    separation_m: float | None = None,
    tube_length_m: float | Sequence[float] = DEFAULT_TUBE_LENGTH_M,
    volts_per_coulomb: float | Sequence[float] = PLACEHOLDER_VOLTS_PER_COULOMB,
    polarity: int | Sequence[int] = -1,
    agreement_tolerance: float = 0.05,
    time2_us: Any = None,
    **kwargs: Any,
) -> xr.Dataset:
    """Speeds from two pickup tubes: transit times, and the flight time between them.

    Parameters
    ----------
    time_us : array_like
        Sample times of detector 1 (and of detector 2 unless ``time2_us``), µs.
    signal1_v, signal2_v : array_like
        Detector outputs, V; detector 2 downstream of detector 1.
    separation_m : float, optional
        Centre-to-centre distance of the tubes along the beam, m.  Without it the
        flight-time speed is NaN and only ``implied_separation`` is reported.
    tube_length_m, volts_per_coulomb, polarity : scalar or pair
        Per detector (see :func:`pickup_charge_speed`).
    agreement_tolerance : float
        Relative speed difference accepted on top of 2 combined sigmas.
    time2_us : array_like, optional
        Sample times of detector 2, µs, if they differ.
    **kwargs
        Passed to :func:`pickup_charge_speed`.

    Returns
    -------
    xarray.Dataset
        ``qd1_*`` and ``qd2_*`` (the single-tube results), ``delay`` and
        ``delay_err`` (centre time 2 - 1, µs), ``entry_delay``/``exit_delay`` (µs),
        ``speed_transit`` (error-weighted mean of both tubes, km/s),
        ``speed_tof`` (separation / delay, km/s), their errors, ``speed_ratio``
        (tof / transit), ``speeds_agree`` (bool), ``implied_separation``
        (speed_transit * delay, m) and ``delay_to_transit`` (delay over mean
        transit time: geometry ratio D/L, the same for every grain).
    """
    L1, L2 = _pair(tube_length_m)
    k1, k2 = _pair(volts_per_coulomb)
    p1, p2 = _pair(polarity)
    r1 = pickup_charge_speed(time_us, signal1_v, tube_length_m=L1, volts_per_coulomb=k1,
                             polarity=p1, **kwargs)
    r2 = pickup_charge_speed(time_us if time2_us is None else time2_us, signal2_v,
                             tube_length_m=L2, volts_per_coulomb=k2, polarity=p2, **kwargs)
    return combine_detectors(r1, r2, separation_m=separation_m,
                             agreement_tolerance=agreement_tolerance)


def combine_detectors(
    r1: xr.Dataset,
    r2: xr.Dataset,
    *,
    separation_m: float | None = None,
    agreement_tolerance: float = 0.05,
) -> xr.Dataset:
    """Combine the single-tube results of two detectors (see :func:`pickup_two_detectors`).

    Parameters
    ----------
    r1, r2 : xarray.Dataset
        :func:`pickup_charge_speed` (or :func:`pickup_uniform`) of detector 1 and
        of detector 2, downstream, on the same events.
    separation_m, agreement_tolerance
        As :func:`pickup_two_detectors`.

    Returns
    -------
    xarray.Dataset
        As :func:`pickup_two_detectors`.
    """
    tubes = [
        SingleTube({str(name): (variable.dims, variable.values, variable.attrs)
                    for name, variable in single.data_vars.items()}, dict(single.attrs))
        for single in (r1, r2)
    ]
    variables = combine_tubes(*tubes, separation_m=separation_m,
                              agreement_tolerance=agreement_tolerance)
    return xr.Dataset(variables, coords=r1.coords, attrs=dict(r1.attrs))


def combine_tubes(
    t1: SingleTube,
    t2: SingleTube,
    *,
    separation_m: float | None = None,
    agreement_tolerance: float = 0.05,
) -> dict[str, tuple]:
    """:func:`combine_detectors` of two tubes' plain results.

    Parameters
    ----------
    t1, t2 : SingleTube
        Detector 1 and detector 2, downstream, on the same events.
    separation_m, agreement_tolerance
        As :func:`pickup_two_detectors`.

    Returns
    -------
    dict of str to (dims, values, attrs)
        The variables of :func:`combine_detectors`'s Dataset, in its order.
    """
    # NumPy on the variables' values: xarray's merge and arithmetic on ~40 small
    # variables cost more than the pulse analysis of an impact
    dims = t1.variables["speed"][0]
    v: dict[str, np.ndarray] = {}
    variables: dict[str, tuple] = {}
    for prefix, single in (("qd1_", t1), ("qd2_", t2)):
        for name, (var_dims, values, attrs) in single.variables.items():
            variables[f"{prefix}{name}"] = (var_dims, values, attrs)
            v[f"{prefix}{name}"] = values
    with np.errstate(all="ignore"):
        delay = v["qd2_center_time"] - v["qd1_center_time"]
        delay_err = 0.5 * np.hypot(v["qd1_transit_time_err"], v["qd2_transit_time_err"])
        v1, v2 = v["qd1_speed"], v["qd2_speed"]
        e1, e2 = v["qd1_speed_err"], v["qd2_speed_err"]
        wt1, wt2 = 1 / e1**2, 1 / e2**2
        both = np.isfinite(v1) & np.isfinite(v2)
        v_tr = np.where(both, (wt1 * v1 + wt2 * v2) / (wt1 + wt2), np.where(np.isnan(v1), v2, v1))
        v_tr_err = np.where(both, 1 / np.sqrt(wt1 + wt2), np.where(np.isnan(e1), e2, e1))
        sep = np.nan if separation_m is None else float(separation_m)
        v_tof = sep / delay * KM_S_PER_M_US
        v_tof_err = np.abs(v_tof) * delay_err / np.abs(delay)
        ratio = v_tof / v_tr
        ratio_err = np.abs(ratio) * np.hypot(v_tof_err / v_tof, v_tr_err / v_tr)
        agree = np.abs(ratio - 1) <= agreement_tolerance + 2 * ratio_err
        mean_transit = 0.5 * (v["qd1_transit_time"] + v["qd2_transit_time"])
        implied = v_tr * delay / KM_S_PER_M_US
        delay_to_transit = delay / mean_transit
    variables.update({
        "delay": (dims, delay, {"units": "us", "long_name": "centre time, detector 2 - 1"}),
        "delay_err": (dims, delay_err, {"units": "us"}),
        "entry_delay": (dims, v["qd2_entry_time"] - v["qd1_entry_time"], {"units": "us"}),
        "exit_delay": (dims, v["qd2_exit_time"] - v["qd1_exit_time"], {"units": "us"}),
        "speed_transit": (dims, v_tr, {"units": "km/s"}),
        "speed_transit_err": (dims, v_tr_err, {"units": "km/s"}),
        "speed_tof": (dims, v_tof, {"units": "km/s", "separation_m": sep}),
        "speed_tof_err": (dims, v_tof_err, {"units": "km/s"}),
        "speed_ratio": (dims, ratio, {"units": "1", "long_name": "speed_tof / speed_transit"}),
        "speeds_agree": (dims, agree & np.isfinite(ratio), {}),
        "implied_separation": (dims, implied, {
            "units": "m", "long_name": "separation for which speed_tof equals speed_transit"}),
        "delay_to_transit": (dims, delay_to_transit, {
            "units": "1", "long_name": "delay over mean transit time (= D/L for equal tubes)"}),
    })
    return variables


def pickup_from_dataset(
    ds: xr.Dataset,
    *,
    config: Mapping[str, Any] | None = None,
    channels: tuple[str, str] = ("QD_1", "QD_2"),
) -> xr.Dataset:
    """Run the pickup analysis on an event dataset (e.g. from :func:`read_trc`).

    Parameters
    ----------
    ds : xarray.Dataset
        Dimension ``epoch``; QD waveforms whose ``time_variable`` attribute names
        their time axis (µs), and optionally ``signal_polarity``.
    config : mapping, optional
        The ``pickup`` section of ``configs/scope.yaml`` (default: that file).
    channels : pair of str
        QD variables; with only the first present, the single-tube analysis runs.

    Returns
    -------
    xarray.Dataset
        As :func:`pickup_two_detectors` (or :func:`pickup_charge_speed`) on
        dimension ``epoch``.

    Raises
    ------
    AnalysisError
        If no QD channel is in ``ds``.
    """
    cfg = dict(config if config is not None else load_scope_config().get("pickup", {}))
    present = [c for c in channels if c in ds]
    if not present:
        raise AnalysisError(f"no charge pickup channel {channels} in dataset")
    kw = {k: cfg[k] for k in ("smooth_us", "threshold_sigma", "min_transit_us",
                              "max_transit_us", "edge_window_us", "baseline_us",
                              "plateau_guard", "impact_time_us") if k in cfg}
    if cfg.get("target_distance_m") is not None:
        kw["target_distance_m"] = float(cfg["target_distance_m"])
    det = cfg.get("detectors", {})

    def per(c: str, key: str, default: Any) -> Any:
        return det.get(c, {}).get(key, cfg.get(key, default))

    def series(c: str) -> tuple[np.ndarray, np.ndarray, int]:
        tname = ds[c].attrs.get("time_variable")
        if tname is None or tname not in ds:
            raise AnalysisError(f"{c}: no time_variable attribute naming a time axis")
        pol = int(ds[c].attrs.get("signal_polarity", per(c, "polarity", -1)))
        return ds[tname].values, ds[c].values, pol

    calib = str(cfg.get("calibration", "placeholder"))
    if len(present) == 2:
        (t1, y1, p1), (t2, y2, p2) = series(present[0]), series(present[1])
        res = pickup_two_detectors(
            t1, y1, y2, time2_us=t2, polarity=(p1, p2),
            separation_m=cfg.get("separation_m"),
            tube_length_m=tuple(per(c, "tube_length_m", DEFAULT_TUBE_LENGTH_M)
                                for c in present),
            volts_per_coulomb=tuple(
                per(c, "volts_per_coulomb", PLACEHOLDER_VOLTS_PER_COULOMB) for c in present),
            agreement_tolerance=cfg.get("agreement_tolerance", 0.05),
            calibration=calib, **kw)
    else:
        c = present[0]
        t, y, p = series(c)
        res = pickup_charge_speed(
            t, y, polarity=p, tube_length_m=per(c, "tube_length_m", DEFAULT_TUBE_LENGTH_M),
            volts_per_coulomb=per(c, "volts_per_coulomb", PLACEHOLDER_VOLTS_PER_COULOMB),
            calibration=calib, **kw)
    res = res.rename({"event": "epoch"}).assign_coords(epoch=ds.epoch.values)
    if "impact_number" in ds:
        res["impact_number"] = ("epoch", ds.impact_number.values)
    return res
