"""Steps 3 and 5 of the pickup analysis, and its single-tube entry points: edge
times, speed, charge and their errors as a Dataset."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from idexdask._logging import get_logger
from idexdask.analysis.pickup.edges import (
    Derivative,
    Edges,
    Records,
    as_2d,
    find_edges,
    read_records,
    smoothed_derivative,
)
from idexdask.analysis.pickup.levels import Levels, pulse_levels
from idexdask.analysis.pickup.settings import (
    DEFAULT_TUBE_LENGTH_M,
    KM_S_PER_M_US,
    PLACEHOLDER_VOLTS_PER_COULOMB,
    STATUS_MEANINGS,
    pickup_settings,
)
from idexdask.errors import AnalysisError

__all__ = ["SingleTube", "pickup_charge_speed", "pickup_uniform", "pickup_uniform_variables"]

_log = get_logger("idexdask.analysis.pickup")


def pickup_charge_speed(time_us: Any, signal_v: Any, **options: Any) -> xr.Dataset:
    """Speed and charge of grains from one charge-pickup tube, vectorised over events.

    Parameters
    ----------
    time_us : array_like, (n,) or (events, n)
        Sample times, µs, uniformly spaced.
    signal_v : array_like, (n,) or (events, n)
        Amplifier output, V.  NaN samples (missing channel, padding) are ignored.
        With ``adc_codes``, :func:`pickup_uniform_variables` also takes a
        function returning the float32 volts, called only where a record is
        not read from its codes alone (a missing sample, an unknown scale).
    **options
        Keyword options of :func:`pickup_uniform_variables`, the same for every
        entry point, with these meanings:
    tube_length_m : float
        Length of the pickup tube, m (PLACEHOLDER default, see module docs).
    volts_per_coulomb : float
        Amplifier calibration, V per C of induced charge (PLACEHOLDER default).
    polarity : {-1, 1}
        Sign of the pulse (-1: negative-going, as in the lab captures).
    smooth_us : float
        Width of each half of the derivative kernel, µs; about the edge rise time.
    threshold_sigma : float
        Edge detection threshold, in MAD-scaled noise sigmas of the derivative.
    min_transit_us, max_transit_us : float
        Range searched for the exit edge after the entry edge, µs.
    edge_window_us : float
        Half-width of the window holding an edge's derivative peak, µs.
    baseline_us : float
        Length of the pre-pulse baseline window, µs.
    plateau_guard : float
        Fraction of the transit time excluded at each end of the plateau (and
        before the entry edge for the baseline).
    calibration : str
        Provenance of ``volts_per_coulomb`` stored in the output attributes.
    target_distance_m : float, optional
        Distance from the tube centre to the impact target, m.  With it,
        ``speed_to_target`` = distance / (``impact_time_us`` - centre time).
    impact_time_us : float
        Time of the impact on the trace, µs (0: the scope triggers on the impact).
    adc_gain, adc_offset : array_like, scalar or (events,), optional
        The ADC scale of the records, ``signal_v = adc_gain * code - adc_offset``
        rounded to ``signal_v``'s dtype (V per code and V: a scope's
        ``vertical_gain`` and ``vertical_offset``; NaN: not known).  Records
        exactly on their codes are differentiated from the codes' integer sums
        (exact, no float rounding), the others from float64 sums of their values.
    adc_codes : numpy.ndarray of int16, (events, n), optional
        The codes the float32 ``signal_v`` was decoded from with that scale
        (``float32(adc_gain * code - adc_offset)``, :data:`~idexdask.adccodes.CODE_FILL`
        where NaN), as :func:`idexdask.read_trc` keeps them
        (:class:`~idexdask.adccodes.RecordedCodes`): taken as they are instead
        of being found from the values and checked.  Ignored unless of
        ``signal_v``'s shape, with ``signal_v`` float32 (or a function
        returning those volts).

    Returns
    -------
    xarray.Dataset
        On dimension ``event``: ``entry_time``, ``exit_time``, ``center_time``,
        ``transit_time``, ``transit_time_err`` (µs); ``speed``, ``speed_err``
        (km/s); ``baseline``, ``pulse_height``, ``pulse_height_err`` (V, pulse
        height positive along ``polarity``); ``charge``, ``charge_err`` (fC);
        ``snr`` (height / its error); ``flight_to_impact`` (impact time - centre
        time, µs); ``flight_over_transit`` (their ratio = target distance / tube
        length, the same for every grain: a geometry-free consistency check);
        ``speed_to_target`` (km/s, NaN without ``target_distance_m``);
        ``status`` (int8, see :data:`STATUS_MEANINGS`).  Quantities of events that
        fail are NaN.

    Raises
    ------
    AnalysisError
        Inconsistent shapes or too few samples.
    """
    y = as_2d(signal_v, "signal_v")
    t = as_2d(time_us, "time_us")
    if t.shape[1] != y.shape[1] or t.shape[0] not in (1, y.shape[0]):
        raise AnalysisError(f"time_us {t.shape} does not match signal_v {y.shape}")
    if y.shape[1] < 2:
        raise AnalysisError(f"too few samples ({y.shape[1]}) for pulse detection")
    return pickup_uniform(t[:, 0], t[:, 1] - t[:, 0], y, **options)


def pickup_uniform(start_us: Any, interval_us: Any, signal_v: Any, **options: Any) -> xr.Dataset:
    """:func:`pickup_charge_speed` of records on uniform time axes given by formula.

    Parameters
    ----------
    start_us, interval_us : array_like, scalar or (events,)
        Time of each record's first sample and its sampling interval, µs: sample
        ``i`` lies at ``start_us + i * interval_us`` (no time array needed).
    signal_v : array_like, (n,) or (events, n)
        Amplifier output, V.
    **options
        As :func:`pickup_charge_speed`.

    Returns
    -------
    xarray.Dataset
        As :func:`pickup_charge_speed`.
    """
    return pickup_uniform_variables(start_us, interval_us, signal_v, **options).dataset()


@dataclass(frozen=True)
class SingleTube:
    """One tube's results as plain arrays: the variables of
    :func:`pickup_uniform`'s Dataset without building it (a campaign's packs
    combine them directly; xarray's construction of ~20 small variables costs
    more than their arithmetic)."""

    variables: dict[str, tuple[str, np.ndarray, dict[str, Any]]]  #: name -> (dim, values, attrs)
    attrs: dict[str, Any]  #: the Dataset's attributes

    def values(self, name: str) -> np.ndarray:
        """The values of variable ``name``."""
        return self.variables[name][1]

    def dataset(self) -> xr.Dataset:
        """The results as :func:`pickup_uniform` returns them."""
        return xr.Dataset(self.variables, attrs=self.attrs)


def pickup_uniform_variables(
    start_us: Any,
    interval_us: Any,
    signal_v: Any,
    *,
    tube_length_m: float = DEFAULT_TUBE_LENGTH_M,
    volts_per_coulomb: float = PLACEHOLDER_VOLTS_PER_COULOMB,
    polarity: int = -1,
    smooth_us: float = 2.0,
    threshold_sigma: float = 6.0,
    min_transit_us: float = 0.5,
    max_transit_us: float = 400.0,
    edge_window_us: float = 15.0,
    baseline_us: float = 30.0,
    plateau_guard: float = 0.2,
    calibration: str = "placeholder",
    target_distance_m: float | None = None,
    impact_time_us: float = 0.0,
    adc_gain: Any = None,
    adc_offset: Any = None,
    adc_codes: np.ndarray | None = None,
) -> SingleTube:
    """:func:`pickup_uniform`'s results as a :class:`SingleTube` (no Dataset).

    Parameters
    ----------
    start_us, interval_us, signal_v
        As :func:`pickup_uniform`.
    tube_length_m, volts_per_coulomb, polarity, smooth_us, threshold_sigma, \
min_transit_us, max_transit_us, edge_window_us, baseline_us, plateau_guard, \
calibration, target_distance_m, impact_time_us, adc_gain, adc_offset, adc_codes
        The keyword options of every entry point, described in
        :func:`pickup_charge_speed`.

    Returns
    -------
    SingleTube
    """
    if callable(signal_v) and adc_codes is not None:  # volts decoded only if needed
        y = signal_v
        n_ev, n = adc_codes.shape
    else:
        y = as_2d(signal_v() if callable(signal_v) else signal_v, "signal_v", dtype=None)
        n_ev, n = y.shape
    t0 = np.broadcast_to(np.asarray(start_us, dtype=np.float64), (n_ev,))
    dt_ev = np.broadcast_to(np.asarray(interval_us, dtype=np.float64), (n_ev,))
    settings = pickup_settings(
        dt_ev, n, polarity=polarity, smooth_us=smooth_us, threshold_sigma=threshold_sigma,
        min_transit_us=min_transit_us, max_transit_us=max_transit_us,
        edge_window_us=edge_window_us, baseline_us=baseline_us, plateau_guard=plateau_guard,
    )
    # the reader's float32 volts (or the function decoding them)
    codes = adc_codes if callable(y) or y.dtype == np.float32 else None
    rec = read_records(t0, dt_ev, y, settings, adc_gain, adc_offset, codes)  # 1. NaN samples
    der = smoothed_derivative(rec, settings)          # 2. smoothed derivative
    rec = der.records  # with the volts, where a record needed them
    edges = find_edges(der, settings, rec.status)     # 2. entry and exit edges
    levels = pulse_levels(rec, der, edges, settings)  # 4. pulse height
    return _single_tube(                              # 3, 5. speed, charge, errors
        rec, der, edges, levels,
        tube_length_m=float(tube_length_m), volts_per_coulomb=float(volts_per_coulomb),
        polarity=polarity, calibration=calibration, target_distance_m=target_distance_m,
        impact_time_us=impact_time_us,
        attrs={"smooth_us": smooth_us, "threshold_sigma": threshold_sigma},
    )


def _single_tube(
    rec: Records, der: Derivative, edges: Edges, levels: Levels, *,
    tube_length_m: float, volts_per_coulomb: float, polarity: int, calibration: str,
    target_distance_m: float | None, impact_time_us: float, attrs: Mapping[str, Any],
) -> SingleTube:
    """Steps 3 and 5: edge times, speed, charge and their errors."""
    status = rec.status
    # d[i] compares [i, i+w) with [i-w, i): its sample i sits at t[i] - dt/2
    t_entry = rec.t0 + (edges.c_in - 0.5) * rec.dt
    t_exit = rec.t0 + (edges.c_out - 0.5) * rec.dt
    transit = t_exit - t_entry
    # edge timing: derivative noise over peak height times the peak half-width
    with np.errstate(all="ignore"):
        e_in = der.sigma / np.abs(edges.peak_in) * edges.hw_in * rec.dt
        e_out = der.sigma / np.abs(edges.peak_out) * edges.hw_out * rec.dt
        transit_err = np.hypot(e_in, e_out)
        speed = tube_length_m / transit * KM_S_PER_M_US
        speed_err = speed * transit_err / transit
    flight = impact_time_us - 0.5 * (t_entry + t_exit)
    dist = np.nan if target_distance_m is None else float(target_distance_m)
    with np.errstate(all="ignore"):
        flight_ratio = flight / transit
        speed_target = dist / flight * KM_S_PER_M_US
        speed_target_err = speed_target * 0.5 * transit_err / flight
    charge = levels.height / volts_per_coulomb * 1e15
    charge_err = levels.height_err / volts_per_coulomb * 1e15

    bad = status != 0
    edges_bad = np.isin(status, (1, 2, 3))

    def per_event(values: np.ndarray, unusable: np.ndarray, **var_attrs: Any) -> tuple:
        return ("event", np.where(unusable, np.nan, values), var_attrs)

    out = SingleTube(
        variables={
            "entry_time": per_event(t_entry, edges_bad, units="us"),
            "exit_time": per_event(t_exit, edges_bad, units="us"),
            "center_time": per_event(0.5 * (t_entry + t_exit), edges_bad, units="us"),
            "transit_time": per_event(transit, edges_bad, units="us"),
            "transit_time_err": per_event(transit_err, edges_bad, units="us"),
            "speed": per_event(speed, edges_bad, units="km/s", tube_length_m=tube_length_m),
            "speed_err": per_event(speed_err, edges_bad, units="km/s"),
            "baseline": per_event(polarity * levels.baseline, bad, units="V"),
            "pulse_height": per_event(
                levels.height, bad, units="V",
                long_name="plateau minus baseline along the pulse polarity"),
            "pulse_height_err": per_event(levels.height_err, bad, units="V"),
            "charge": per_event(charge, bad, units="fC", volts_per_coulomb=volts_per_coulomb,
                                calibration=calibration),
            "charge_err": per_event(charge_err, bad, units="fC"),
            "snr": per_event(levels.snr, bad, units="1"),
            "flight_to_impact": per_event(flight, edges_bad, units="us"),
            "flight_over_transit": per_event(flight_ratio, edges_bad, units="1",
                                             long_name="target distance over tube length"),
            "speed_to_target": per_event(speed_target, edges_bad, units="km/s",
                                         target_distance_m=dist),
            "speed_to_target_err": per_event(speed_target_err, edges_bad, units="km/s"),
            "status": ("event", status, {
                "flag_values": list(range(len(STATUS_MEANINGS))),
                "flag_meanings": " ".join(STATUS_MEANINGS)}),
        },
        attrs={
            "method": "smoothed-derivative edges (50% points), median plateau over baseline",
            **attrs, "polarity": polarity, "calibration": calibration,
        },
    )
    n_bad = int(bad.sum())
    if n_bad:
        _log.info("pickup: %d of %d events flagged: %s", n_bad, status.size,
                  {STATUS_MEANINGS[k]: int((status == k).sum()) for k in set(status[bad])})
    return out

