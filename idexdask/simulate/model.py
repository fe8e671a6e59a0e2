"""Physical model of IDEX dust impacts: TOF mass spectra and charge signals.

Per event the model draws

* an impact time (MET, seconds since 2010-01-01 UTC) and the trigger/readout
  header words (values seen in real events);
* a composition: each species of :data:`SPECIES` present with some probability,
  with Dirichlet weights; the time-of-flight spectrum holds one exponentially
  modified Gaussian line (:func:`idexdask.analysis.lineshapes.emg`) per present
  species at ``t = t0 + a sqrt(m)`` (µs, ``m`` in u), area = total area x weight;
* three TOF gain stages (high, mid, low) seeing the same spectrum scaled by their
  gains, each on a baseline near 512 DN with Gaussian noise, rounded and clipped
  to the 10-bit ADC range (big lines saturate the high gain);
* Target_High, Target_Low and Ion_Grid: baseline near 2048 DN, noise and the
  impact charge signal ``Q(t) = A (1 - exp(-(t - t0)/tau_r)) exp(-(t - t0)/tau_d)``
  for ``t > t0``, rounded and clipped to the 12-bit range.

All draws come from one :class:`numpy.random.Generator`; waveforms are computed
for all events at once.  Time zero of both time axes is the trigger, which the
model takes as the impact time of the TOF spectrum.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import xarray as xr

from idexdask._logging import get_logger
from idexdask.analysis.lineshapes import emg
from idexdask.calibration.ions import ion_mass
from idexdask.errors import ConfigError
from idexdask.packets.layout import HIGH_RATE_MSPS, HIGH_RATE_SAMPLES
from idexdask.simulate.dataset import events_dataset, time_axes
from idexdask.simulate.defaults import REAL_SAMPDELAYS
from idexdask.simulate.writer import EncodedPackets, encode_events, header_field_values

__all__ = [
    "ModelParameters",
    "finalize_events",
    "SPECIES",
    "SimulatedEvents",
    "ion_mass",
    "simulate_events",
]

_log = get_logger(__name__)

_SPECIES_FORMULAS = (
    "H",
    "C",
    "O",
    "Na",
    "Mg",
    "Al",
    "Si",
    "K",
    "Ca",
    "Fe",
    "H3O",
    "CO",
    "MgO",
    "SiO",
    "FeO",
)
SPECIES = MappingProxyType({name: ion_mass(name) for name in _SPECIES_FORMULAS})
"""Ion species of the model -> singly charged ion mass, u."""

_LINE_WINDOW = 512  # samples (~2 µs) evaluated per line: 10 sigma before, > 25 tails after
_LOW_RATE_CHANNELS = ("Target_High", "Target_Low", "Ion_Grid")
_TOF_CHANNELS = ("TOF_High", "TOF_Mid", "TOF_Low")


@dataclass(frozen=True)
class ModelParameters:
    """Knobs of the event model; ranges are ``(low, high)`` of uniform draws.

    Attributes
    ----------
    species : tuple of str
        Species that may appear (keys of :data:`SPECIES`).
    species_probability : float
        Probability that a species is present in an event.
    dirichlet_alpha : float
        Concentration of the composition weights (small: a few dominant species).
    total_area : tuple of float
        Log-uniform range of the summed line area seen by the high gain, DN·µs.
    tof_gains : tuple of float
        Gains of the (high, mid, low) TOF stages relative to the high gain.
    tof_t0 : tuple of float
        Time-of-flight offset, µs.
    tof_stretch : tuple of float
        ``a`` in ``t = t0 + a sqrt(m)``, µs/sqrt(u).
    line_sigma : tuple of float
        Gaussian width of the lines, µs.
    line_gamma : tuple of float
        Exponential tail rate of the lines, 1/µs.
    tof_baseline, low_rate_baseline : float
        Mean baselines, DN.
    baseline_jitter_tof, baseline_jitter_low_rate : float
        Event-to-event standard deviation of the baselines, DN.
    noise_sigma : tuple of float
        Gaussian noise of every channel, DN.
    impact_amplitude : tuple of float
        Log-uniform range of the charge signal amplitude ``A`` on Target_High, DN.
    low_rate_gains : tuple of float
        Gains of (Target_High, Target_Low, Ion_Grid) relative to Target_High.
    impact_time : tuple of float
        Impact time on the target, µs from the trigger.
    impact_time_spread : float
        Half-width of the per-channel scatter around the impact time, µs.
    rise_time, decay_time : tuple of float
        ``tau_r`` and ``tau_d`` of the charge signal, µs.
    start_met : float
        MET of the first event, s since 2010-01-01 UTC.
    mean_interval : float
        Mean time between events (exponential), s.
    sampdelays : tuple of int
        SAMPDELAY words to draw from.
    """

    species: tuple[str, ...] = _SPECIES_FORMULAS
    species_probability: float = 0.5
    dirichlet_alpha: float = 0.7
    total_area: tuple[float, float] = (2.0, 200.0)
    tof_gains: tuple[float, float, float] = (1.0, 0.1, 0.01)
    tof_t0: tuple[float, float] = (-0.05, 0.15)
    tof_stretch: tuple[float, float] = (1.40, 1.50)
    line_sigma: tuple[float, float] = (0.005, 0.02)
    line_gamma: tuple[float, float] = (50.0, 150.0)
    tof_baseline: float = 512.0
    baseline_jitter_tof: float = 2.0
    low_rate_baseline: float = 2048.0
    baseline_jitter_low_rate: float = 10.0
    noise_sigma: tuple[float, float] = (1.0, 3.0)
    impact_amplitude: tuple[float, float] = (20.0, 3000.0)
    low_rate_gains: tuple[float, float, float] = (1.0, 0.1, 0.4)
    impact_time: tuple[float, float] = (-1.0, 1.0)
    impact_time_spread: float = 0.2
    rise_time: tuple[float, float] = (1.0, 10.0)
    decay_time: tuple[float, float] = (50.0, 500.0)
    start_met: float = 5.0e8
    mean_interval: float = 120.0
    sampdelays: tuple[int, ...] = field(default=REAL_SAMPDELAYS)

    def __post_init__(self) -> None:
        unknown = [s for s in self.species if s not in SPECIES]
        if unknown or not self.species:
            raise ConfigError(f"species: unknown or empty {unknown} (known: {list(SPECIES)})")
        if not 0.0 < self.species_probability <= 1.0:
            raise ConfigError("species_probability must lie in (0, 1]")
        for name in (
            "total_area",
            "line_sigma",
            "line_gamma",
            "noise_sigma",
            "impact_amplitude",
            "rise_time",
            "decay_time",
        ):
            low, high = getattr(self, name)
            if not 0.0 < low <= high:
                raise ConfigError(f"{name}: need 0 < low <= high, got {(low, high)}")
        if len(self.tof_gains) != 3 or len(self.low_rate_gains) != 3:
            raise ConfigError("tof_gains and low_rate_gains need three values each")
        if self.mean_interval <= 0 or self.start_met < 0 or not self.sampdelays:
            raise ConfigError("mean_interval > 0, start_met >= 0 and sampdelays non-empty needed")


@dataclass(frozen=True)
class SimulatedEvents:
    """Simulated events and the physical truth behind them.

    Attributes
    ----------
    events : xarray.Dataset
        What a decoder returns for the packets :func:`write_packets` writes from it.
    truth : xarray.Dataset
        Model draws: lines (dimension ``line``), per-event TOF and charge signal
        parameters, composition (dimension ``species``).
    """

    events: xr.Dataset
    truth: xr.Dataset


def _uniform(rng: np.random.Generator, bounds, size) -> np.ndarray:
    return rng.uniform(bounds[0], bounds[1], size)


def _log_uniform(rng: np.random.Generator, bounds, size) -> np.ndarray:
    return np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]), size))


def _draw_header(rng: np.random.Generator, p: ModelParameters, n: int) -> dict[str, np.ndarray]:
    """Per-event header words: times, event numbers, trigger/readout words."""
    met = p.start_met + np.cumsum(rng.exponential(p.mean_interval, n))
    whole = np.floor(met).astype(np.int64)
    subs = np.minimum(((met - whole) * 50_000).astype(np.int64), 49_999)
    evtnum = (np.arange(n) + 1) & 0xFFFF
    return {
        "idx__txhdrtimesec1": whole >> 16,
        "idx__txhdrtimesec2": whole & 0xFFFF,
        "idx__txhdrtimesubs": subs,
        "idx__sci0time32": whole & 0xFFFFFFFF,
        "shcoarse": (whole + rng.integers(1, 30, n)) & 0xFFFFFFFF,
        "shfine": rng.integers(0, 1 << 16, n),
        "idx__sci0evtnum": evtnum,
        "idx__txhdrevtnum": evtnum,
        "idx__txhdrtrigoffset": rng.integers(1, 8, n),
        "idx__txhdrfifodelay": rng.integers(15, 19, n),
        "idx__txhdrtranscnt": rng.choice(np.array([2, 4, 8, 14]), n),
        "idx__txhdrsampdelay": rng.choice(np.asarray(p.sampdelays, dtype=np.int64), n),
    }


def _tof_waveforms(
    rng: np.random.Generator, p: ModelParameters, time_high: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """TOF waveforms of the three gains, the line list and per-event TOF truth."""
    n = time_high.shape[0]
    names = list(p.species)
    masses = np.array([SPECIES[s] for s in names])
    present = rng.random((n, len(names))) < p.species_probability
    forced = rng.integers(0, len(names), n)  # every event shows at least one line
    present[np.arange(n), forced] |= ~present.any(axis=1)
    weights = rng.gamma(p.dirichlet_alpha, 1.0, (n, len(names))) * present
    weights = np.maximum(weights, np.finfo(float).tiny * present)
    weights /= weights.sum(axis=1, keepdims=True)

    t0 = _uniform(rng, p.tof_t0, n)
    stretch = _uniform(rng, p.tof_stretch, n)
    total_area = _log_uniform(rng, p.total_area, n)
    line_event, line_species = np.nonzero(present)
    n_lines = line_event.size
    area = total_area[line_event] * weights[line_event, line_species]
    center = t0[line_event] + stretch[line_event] * np.sqrt(masses[line_species])
    sigma = _uniform(rng, p.line_sigma, n_lines)
    gamma = _uniform(rng, p.line_gamma, n_lines)

    # Evaluate each line on a window of samples around it, then sum per event.
    t_first = time_high[:, 0]
    first = np.floor((center - 10.0 * sigma - t_first[line_event]) * HIGH_RATE_MSPS).astype(
        np.int64
    )
    index = first[:, np.newaxis] + np.arange(_LINE_WINDOW)
    inside = (index >= 0) & (index < HIGH_RATE_SAMPLES)
    index = np.clip(index, 0, HIGH_RATE_SAMPLES - 1)
    times = time_high[line_event[:, np.newaxis], index]
    profile = emg(
        times,
        area[:, np.newaxis],
        center[:, np.newaxis],
        sigma[:, np.newaxis],
        gamma[:, np.newaxis],
    )
    flat = (line_event[:, np.newaxis] * HIGH_RATE_SAMPLES + index)[inside]
    spectrum = np.bincount(flat, weights=profile[inside], minlength=n * HIGH_RATE_SAMPLES).reshape(
        n, HIGH_RATE_SAMPLES
    )

    waveforms, baselines, noises = {}, {}, {}
    for name, gain in zip(_TOF_CHANNELS, p.tof_gains, strict=True):
        baseline = p.tof_baseline + p.baseline_jitter_tof * rng.standard_normal(n)
        noise = _uniform(rng, p.noise_sigma, n)
        signal = (
            baseline[:, np.newaxis]
            + noise[:, np.newaxis] * rng.standard_normal((n, HIGH_RATE_SAMPLES))
            + gain * spectrum
        )
        waveforms[name] = np.clip(np.rint(signal), 0, 1023).astype(np.uint16)
        baselines[name] = baseline
        noises[name] = noise
    lines = {
        "line_event": line_event.astype(np.int64),
        "line_species": np.array(names, dtype=object)[line_species].astype(str),
        "line_mass": masses[line_species],
        "line_center": center,
        "line_area": area,
        "line_sigma": sigma,
        "line_gamma": gamma,
    }
    per_event = {"tof_t0": t0, "tof_stretch": stretch, "tof_total_area": total_area}
    per_event.update({f"{k}_baseline": v for k, v in baselines.items()})
    per_event.update({f"{k}_noise": v for k, v in noises.items()})
    return waveforms, lines, {**per_event, "composition": weights}


def _charge_waveforms(
    rng: np.random.Generator, p: ModelParameters, time_low: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Target_High, Target_Low and Ion_Grid waveforms and their charge-signal truth."""
    n, n_samples = time_low.shape
    charge = _log_uniform(rng, p.impact_amplitude, n)
    impact = _uniform(rng, p.impact_time, n)
    waveforms, truth = {}, {}
    for name, gain in zip(_LOW_RATE_CHANNELS, p.low_rate_gains, strict=True):
        key = name.lower()
        t_impact = impact + rng.uniform(-p.impact_time_spread, p.impact_time_spread, n)
        rise = _uniform(rng, p.rise_time, n)
        decay = _uniform(rng, p.decay_time, n)
        amplitude = gain * charge
        baseline = p.low_rate_baseline + p.baseline_jitter_low_rate * rng.standard_normal(n)
        noise = _uniform(rng, p.noise_sigma, n)
        dt = np.maximum(time_low - t_impact[:, np.newaxis], 0.0)
        signal = (
            amplitude[:, np.newaxis]
            * (1.0 - np.exp(-dt / rise[:, np.newaxis]))
            * np.exp(-dt / decay[:, np.newaxis])
        )
        total = (
            baseline[:, np.newaxis]
            + noise[:, np.newaxis] * rng.standard_normal((n, n_samples))
            + signal
        )
        waveforms[name] = np.clip(np.rint(total), 0, 4095).astype(np.uint16)
        truth.update(
            {
                f"{key}_impact_amplitude": amplitude,
                f"{key}_impact_time": t_impact,
                f"{key}_rise_time": rise,
                f"{key}_decay_time": decay,
                f"{name}_baseline": baseline,
                f"{name}_noise": noise,
            }
        )
    return waveforms, truth


_TRUTH_UNITS = {
    "line_mass": "u",
    "line_center": "us",
    "line_area": "DN us (high gain)",
    "line_sigma": "us",
    "line_gamma": "1/us",
    "tof_t0": "us",
    "tof_stretch": "us/sqrt(u)",
    "tof_total_area": "DN us (high gain)",
    "species_mass": "u",
}


def _truth_dataset(
    epoch: np.ndarray,
    p: ModelParameters,
    lines: dict[str, np.ndarray],
    per_event: dict[str, np.ndarray],
) -> xr.Dataset:
    data_vars: dict[str, tuple] = {}
    for name, values in lines.items():
        data_vars[name] = ("line", values, {"units": _TRUTH_UNITS.get(name, "")})
    composition = per_event.pop("composition")
    data_vars["composition"] = (("epoch", "species"), composition, {"units": "1"})
    data_vars["species_mass"] = (
        "species",
        np.array([SPECIES[s] for s in p.species]),
        {"units": "u"},
    )
    for name, values in per_event.items():
        if name.endswith(("_time", "_t0")):
            units = "us"
        elif name.endswith(("_amplitude", "_baseline", "_noise")):
            units = "DN"
        else:
            units = _TRUTH_UNITS.get(name, "")
        data_vars[name] = ("epoch", values, {"units": units})
    parameters = {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(p).items()
    }
    return xr.Dataset(
        data_vars,
        coords={"epoch": ("epoch", epoch), "species": ("species", list(p.species))},
        attrs={"model_parameters": json.dumps(parameters)},
    )


def simulate_events(
    n_events: int,
    *,
    seed: int = 0,
    rng: np.random.Generator | None = None,
    **model_options,
) -> SimulatedEvents:
    """Draw ``n_events`` dust impacts and the event dataset a decoder returns for them.

    Parameters
    ----------
    n_events : int
        Number of events (>= 0).
    seed : int
        Seed of the generator when ``rng`` is not given.
    rng : numpy.random.Generator, optional
        Generator to draw from (takes precedence over ``seed``).
    **model_options
        Fields of :class:`ModelParameters`.

    Returns
    -------
    SimulatedEvents
        ``events`` matches what decoding ``write_packets(events)`` (uncompressed,
        sequence counts from 0) returns; ``truth`` holds the model draws.

    Raises
    ------
    ConfigError
        On an unknown or invalid model option.

    Examples
    --------
    >>> sim = simulate_events(2, seed=1)
    >>> sim.events["TOF_High"].shape
    (2, 8192)
    """
    try:
        params = ModelParameters(**model_options)
    except TypeError as exc:
        raise ConfigError(f"invalid simulation option: {exc}") from exc
    if isinstance(n_events, bool) or int(n_events) != n_events or n_events < 0:
        raise ConfigError(f"n_events must be a non-negative integer, got {n_events!r}")
    n = int(n_events)
    rng = np.random.default_rng(seed) if rng is None else rng

    drawn = _draw_header(rng, params, n)
    empty = xr.Dataset({k: ("epoch", v) for k, v in drawn.items()})
    values = header_field_values(empty)  # defaults for the rest, before the waveforms
    time_high, time_low = time_axes(values)
    tof, lines, tof_truth = _tof_waveforms(rng, params, time_high)
    charge, charge_truth = _charge_waveforms(rng, params, time_low)
    waveforms = {**tof, **charge}
    values = header_field_values(empty, waveforms)  # TOFMAX/TOFMIN from the waveforms
    events = events_dataset(waveforms, values, np.zeros(n, dtype=np.uint16))
    events = finalize_events(events, compress=False, start_sequence=0)
    truth = _truth_dataset(events["epoch"].values, params, lines, {**tof_truth, **charge_truth})
    _log.info("simulated %d events with %d TOF lines", n, lines["line_event"].size)
    return SimulatedEvents(events=events, truth=truth)


def finalize_events(events: xr.Dataset, *, compress: bool, start_sequence: int) -> xr.Dataset:
    """Set the per-packet fields of ``events`` to what its header packets will carry.

    TYPE = 1, FRAG = 0, FRAGOFF = 0, COMP = ``compress`` and the header packet's
    CRC, as written by :func:`idexdask.simulate.write_packets` with these options.

    Returns
    -------
    xarray.Dataset
        A copy of ``events`` with those variables replaced.
    """
    return encode_and_finalize(events, compress=compress, start_sequence=start_sequence)[0]


def encode_and_finalize(
    events: xr.Dataset, *, compress: bool, start_sequence: int
) -> tuple[xr.Dataset, EncodedPackets]:
    """Encode ``events`` once and return the finalized dataset with the packets.

    See :func:`finalize_events`.
    """
    encoded = encode_events(events, compress=compress, start_sequence=start_sequence)
    out = events.copy()
    n = out.sizes["epoch"]
    for name, value in (
        ("idx__sci0type", 1),
        ("idx__sci0frag", 0),
        ("idx__sci0fragoff", 0),
        ("idx__sci0comp", int(compress)),
    ):
        out[name] = ("epoch", np.full(n, value, dtype=out[name].dtype))
    out["idx__crcsci0pkt"] = ("epoch", encoded.header_crc.astype(np.uint16))
    return out, encoded
