"""The instrument state of every event, in engineering units.

Every IDEX event header carries the state of the instrument at the impact:
high voltages, HVPS currents, low-voltage buses, temperatures (two 12-bit
fields packed in each 32-bit housekeeping word), the trigger mode and threshold
of each TOF gain, which source triggered, and the event's dead time.  This
module unpacks and converts them with the table of
:mod:`idexdask.analysis.instrument_table`, for all events at once (a loop over
the table's 32 quantities, each vectorised over every event: no per-event
Python loop).

Public functions
----------------
:func:`instrument_state`
    The state of a decoded event dataset, as an ``xarray.Dataset``.
:func:`instrument_state_variables`
    The same variables as bare ``xarray.Variable`` (what :func:`idexdask.analyze`
    adds to its products, hence to every store and export).
:func:`physical_waveforms`
    The waveforms in mA / pC, computed on demand (lazily for Dask-backed data).
:func:`event_readings`
    One event's quantities with units, ranges and whether each is in range
    (what an event view shows).

Events are grouped by high-voltage setting in :mod:`idexdask.analysis.hv_settings`.

Damaged headers never raise: an event whose header words are absent or fill
gets fill values (NaN, ``""``, -1) and ``HEADER_MISSING``; an event whose header
packet failed its CRC keeps its values and gets ``HEADER_SUSPECT``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntFlag
from typing import Any

import numpy as np
import xarray as xr

from idexdask._logging import get_logger
from idexdask.analysis.instrument_table import (
    HousekeepingQuantity,
    InstrumentTable,
    TableLike,
    TriggerGain,
    load_instrument_table,
)
from idexdask.errors import AnalysisError
from idexdask.packets.quality import QualityFlag

__all__ = [
    "InstrumentReading",
    "InstrumentStateFlag",
    "event_readings",
    "instrument_products",
    "instrument_state",
    "instrument_state_variables",
    "physical_waveforms",
]

_log = get_logger(__name__)

_WORD_MAX = 0xFFFFFFFF  # header words are unsigned 32-bit at most


class InstrumentStateFlag(IntFlag):
    """Bits of ``instrument_state_flags`` (0: the state is complete and nominal)."""

    OUT_OF_RANGE = 1
    """A housekeeping quantity lies outside its valid range (which: ``instrument_range_mask``)."""
    HEADER_MISSING = 2
    """Header words are absent or fill: the quantities they carry are fill (NaN, "", -1)."""
    HEADER_SUSPECT = 4
    """The event header packet failed its CRC: values are as decoded, but suspect."""
    UNKNOWN_TRIGGER_MODE = 8
    """A gain's trigger mode number is not in the table (its label is "unknown")."""

    @classmethod
    def meanings(cls) -> str:
        """CF ``flag_meanings``: the lower-case names in bit order."""
        return " ".join(str(f.name).lower() for f in cls)


@dataclass(frozen=True)
class _Word:
    """One raw header word of every event: its values (0 where missing) and where it is missing."""

    values: np.ndarray  # int64, (events,)
    missing: np.ndarray  # bool, (events,)


def _raw_word(events: xr.Dataset, name: str, n_events: int) -> _Word:
    """The header word ``name`` as int64, with the events where it is absent or fill.

    Absent variable: missing everywhere.  Missing per event: non-finite, negative,
    non-integral, wider than 32 bits, or equal to the variable's ``FILLVAL``/
    ``_FillValue`` (a concatenation with header-less events gives NaN; an
    official CDF gives its fill value).
    """
    if name not in events.variables:
        return _Word(np.zeros(n_events, np.int64), np.ones(n_events, dtype=bool))
    variable = events.variables[name]
    if variable.dims != ("epoch",):
        raise AnalysisError(f"header word {name!r} must run along epoch only, has {variable.dims}")
    raw = np.asarray(variable.values)
    if raw.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            missing = ~np.isfinite(raw) | (raw < 0) | (raw > _WORD_MAX) | (raw != np.floor(raw))
    elif raw.dtype.kind in "iu":
        missing = (raw < 0) | (raw > _WORD_MAX)
    else:
        raise AnalysisError(f"header word {name!r} is not numeric ({raw.dtype})")
    # fill declared on raw values only: a fill in ``encoding`` was already masked
    # to NaN by xarray's decoding (and Zarr's own storage fill_value is no fill)
    for key in ("FILLVAL", "_FillValue"):
        fill = variable.attrs.get(key)
        if fill is not None and np.ndim(fill) == 0 and np.isfinite(float(fill)):
            missing |= raw == fill
    values = np.where(missing, 0, raw).astype(np.int64)
    return _Word(values, np.asarray(missing, dtype=bool))


def _field(values: np.ndarray, shift: int | np.ndarray, bits: int | np.ndarray) -> np.ndarray:
    """Unsigned bit field ``(values >> shift) & (2**bits - 1)`` (int64 in, int64 out)."""
    return (values >> shift) & ((np.int64(1) << bits) - 1)


def _horner(coefficients: tuple[float, ...], dn: np.ndarray) -> np.ndarray:
    """Polynomial in ascending ``coefficients`` at every ``dn`` (float64).

    Horner's scheme from the highest power, as every polynomial evaluator does;
    its own degree per quantity (most are linear: two array operations).
    """
    x = dn.astype(np.float64)
    out = np.full(x.shape, coefficients[-1])
    for c in coefficients[-2::-1]:
        out *= x
        out += c
    return out


@dataclass(frozen=True)
class _Housekeeping:
    """The housekeeping quantities of every event, each (events, quantities)."""

    values: np.ndarray  #: engineering units, NaN where missing
    missing: np.ndarray  #: the quantity's header word is absent or fill
    out_of_range: np.ndarray  #: outside the quantity's valid range (missing is not)


def _housekeeping(events: xr.Dataset, table: InstrumentTable, n_events: int) -> _Housekeeping:
    """Engineering values, missing and out-of-range masks of the table's quantities.

    A loop over the table's quantities (32), each one vectorised over all events.
    """
    quantities = table.housekeeping
    words: dict[str, _Word] = {}
    values = np.empty((len(quantities), n_events))
    missing = np.empty((len(quantities), n_events), dtype=bool)
    for i, q in enumerate(quantities):
        if q.word not in words:
            words[q.word] = _raw_word(events, q.word, n_events)
        word = words[q.word]
        values[i] = _horner(q.coefficients, _field(word.values, q.shift, q.bits))
        missing[i] = word.missing
    values[missing] = np.nan
    low = np.array([q.valid_min for q in quantities])[:, None]
    high = np.array([q.valid_max for q in quantities])[:, None]
    out_of_range = (values < low) | (values > high)  # NaN compares False: missing is not "out"
    return _Housekeeping(values=values.T, missing=missing.T, out_of_range=out_of_range.T)


def _quantity_attrs(q: HousekeepingQuantity) -> dict[str, Any]:
    return {
        "units": q.units,
        "long_name": q.long_name,
        "valid_min": q.valid_min,
        "valid_max": q.valid_max,
        "valid_range_basis": q.basis,
        "source_word": q.word,
        "source_bits": f"{q.shift}-{q.shift + q.bits - 1}",
        "polynomial": list(q.coefficients),
    }


def instrument_state_variables(
    events: xr.Dataset, table: TableLike = None
) -> dict[str, xr.Variable]:
    """The instrument-state variables of every event (bare Variables on ``epoch``).

    Parameters
    ----------
    events : xarray.Dataset
        Decoded events (``epoch`` dimension) with the raw ``idx__txhdr...``
        header words of :func:`idexdask.read_l0` (or an official L1a read back).
        Absent words give fill values and ``HEADER_MISSING``, never an error.
    table : InstrumentTable, path, mapping or None
        Conversion table (:func:`~idexdask.analysis.instrument_table.load_instrument_table`);
        None: the shipped ``configs/instrument_state.yaml``.

    Returns
    -------
    dict of str to xarray.Variable
        In order: the housekeeping quantities (float64, engineering units, NaN
        where missing); per gain ``g`` of the table, ``trigger_mode_g`` (str,
        e.g. ``"HGThreshold"``, ``""`` when the gain is not armed),
        ``trigger_mode_g_code`` (int8, 0 not armed, -1 missing) and
        ``trigger_level_g`` (float64, the threshold in the gain's waveform units,
        mA; NaN when not armed); ``trigger_origin`` (str), ``trigger_origin_bits``
        (int16, -1 missing); ``dead_time`` (float64, s);
        ``instrument_range_mask`` (one bit per housekeeping quantity outside its
        valid range); ``instrument_state_flags`` (:class:`InstrumentStateFlag`).

    Raises
    ------
    ConfigError
        If the table is invalid.
    AnalysisError
        If ``events`` has no ``epoch`` dimension or a header word is not a
        numeric variable along ``epoch``.
    """
    if "epoch" not in events.dims:
        raise AnalysisError("instrument_state needs an event dataset with an 'epoch' dimension")
    tab = load_instrument_table(table)
    n = int(events.sizes["epoch"])
    flags = np.zeros(n, dtype=np.uint8)
    out: dict[str, xr.Variable] = {}

    housekeeping = _housekeeping(events, tab, n)
    for i, q in enumerate(tab.housekeeping):
        out[q.name] = xr.Variable(("epoch",), housekeeping.values[:, i], attrs=_quantity_attrs(q))
    any_missing = housekeeping.missing.any(axis=1)
    for gain in tab.trigger_gains:
        any_missing |= _add_trigger_gain(out, events, tab, gain, flags)
    any_missing |= _add_trigger_origin(out, events, tab)
    any_missing |= _add_dead_time(out, events, tab)
    _add_range_mask(out, tab, housekeeping.out_of_range)
    flags[housekeeping.out_of_range.any(axis=1)] |= np.uint8(InstrumentStateFlag.OUT_OF_RANGE)
    flags[any_missing] |= np.uint8(InstrumentStateFlag.HEADER_MISSING)
    flags[_header_suspect(events, n)] |= np.uint8(InstrumentStateFlag.HEADER_SUSPECT)
    out["instrument_state_flags"] = xr.Variable(
        ("epoch",),
        flags,
        attrs={
            "units": "1",
            "long_name": "instrument state quality (0: complete and in range)",
            "flag_masks": np.array([int(f) for f in InstrumentStateFlag], dtype=np.uint8),
            "flag_meanings": InstrumentStateFlag.meanings(),
        },
    )
    bad = int(np.count_nonzero(flags))
    if bad:
        _log.info(
            "instrument state: %d of %d events flagged (%d out of range, %d header missing)",
            bad,
            n,
            int(np.count_nonzero(flags & InstrumentStateFlag.OUT_OF_RANGE)),
            int(np.count_nonzero(flags & InstrumentStateFlag.HEADER_MISSING)),
        )
    return out


def _add_trigger_gain(
    out: dict[str, xr.Variable],
    events: xr.Dataset,
    tab: InstrumentTable,
    gain: TriggerGain,
    flags: np.ndarray,
) -> np.ndarray:
    """Add ``gain``'s trigger mode (label and number) and threshold level to ``out``.

    Flags events whose mode number the table does not know
    (``UNKNOWN_TRIGGER_MODE``, in ``flags`` in place); returns the events whose
    mode or control word is missing.
    """
    n = flags.size
    mode = _raw_word(events, gain.mode_word, n)
    control = _raw_word(events, gain.control_word, n)
    code = mode.values
    lost = mode.missing | control.missing
    known = np.isin(code, np.array(list(tab.trigger_modes), dtype=np.int64))
    unknown = ~lost & (code != 0) & ~known
    flags[unknown] |= np.uint8(InstrumentStateFlag.UNKNOWN_TRIGGER_MODE)
    # labels by lookup: slot 0 "" (not armed or missing), then the table's modes,
    # last "unknown"; a fixed-width str array (object -> str costs ~1 µs per event)
    numbers = list(tab.trigger_modes)
    lookup = np.array(
        ["", *(f"{gain.gain.upper()}{m}" for m in tab.trigger_modes.values()),
         f"{gain.gain.upper()}unknown"]
    )  # fmt: skip
    slot = np.zeros(n, dtype=np.int64)
    for position, number in enumerate(numbers, start=1):
        slot[~lost & (code == number)] = position
    slot[unknown] = len(numbers) + 1
    names = lookup[slot]
    scale = tab.waveforms[gain.waveform]
    threshold = _field(control.values, tab.threshold_shift, tab.threshold_bits)
    level = np.where(~lost & (code != 0), threshold.astype(np.float64) * scale.scale, np.nan)
    out[f"trigger_mode_{gain.gain}"] = xr.Variable(
        ("epoch",),
        names,
        attrs={
            "long_name": f"{gain.gain.upper()} trigger mode ('' when the gain is not armed)",
            "source_word": gain.mode_word,
        },
    )
    out[f"trigger_mode_{gain.gain}_code"] = xr.Variable(
        ("epoch",),
        np.where(lost, -1, np.minimum(code, 127)).astype(np.int8),
        attrs={
            "units": "1",
            "long_name": f"{gain.gain.upper()} trigger mode number (0 not armed, -1 missing)",
            "flag_values": np.array([0, *tab.trigger_modes], dtype=np.int8),
            "flag_meanings": " ".join(
                ["not_armed", *(m.lower() for m in tab.trigger_modes.values())]
            ),
        },
    )
    out[f"trigger_level_{gain.gain}"] = xr.Variable(
        ("epoch",),
        level,
        attrs={
            "units": scale.units,
            "long_name": f"{gain.gain.upper()} trigger threshold ({gain.waveform} units; "
            "NaN when the gain is not armed)",
            "source_word": gain.control_word,
            "source_bits": f"{tab.threshold_shift}-"
            f"{tab.threshold_shift + tab.threshold_bits - 1}",
            "dn_scale": scale.scale,
        },
    )
    return lost


def _add_trigger_origin(
    out: dict[str, xr.Variable], events: xr.Dataset, tab: InstrumentTable
) -> np.ndarray:
    """Add which source(s) triggered each event (labels and bits); returns where missing."""
    n = int(events.sizes["epoch"])
    origin = _raw_word(events, tab.trigger_origin.word, n)
    bits = _field(origin.values, 0, tab.trigger_origin.bits)
    # one label per distinct bit pattern (at most 2**bits), then a lookup
    patterns, which = np.unique(bits, return_inverse=True)
    names_of = [
        ", ".join(label for bit, label in tab.trigger_origin.labels.items() if (p >> bit) & 1)
        or tab.trigger_origin.none_label
        for p in patterns.tolist()
    ]
    labels = np.array([*names_of, ""])[np.where(origin.missing, len(names_of), which.reshape(-1))]
    out["trigger_origin"] = xr.Variable(
        ("epoch",),
        labels,
        attrs={
            "long_name": "which source(s) triggered the event ('' when the header is missing)",
            "source_word": tab.trigger_origin.word,
        },
    )
    out["trigger_origin_bits"] = xr.Variable(
        ("epoch",),
        np.where(origin.missing, -1, bits).astype(np.int16),
        attrs={
            "units": "1",
            "long_name": "trigger origin bits (-1 missing)",
            "flag_masks": np.array([1 << b for b in tab.trigger_origin.labels], dtype=np.int16),
            "flag_meanings": " ".join(
                "_".join(label.lower().replace("(", "").replace(")", "").replace("/", "").split())
                for label in tab.trigger_origin.labels.values()
            ),
        },
    )
    return origin.missing


def _add_dead_time(
    out: dict[str, xr.Variable], events: xr.Dataset, tab: InstrumentTable
) -> np.ndarray:
    """Add each event's dead time, s; returns where its word is missing."""
    dead = tab.dead_time
    blocks = _raw_word(events, dead.word, int(events.sizes["epoch"]))
    base = _field(blocks.values, dead.base_shift, dead.base_bits).astype(np.float64)
    exponent = _field(blocks.values, dead.exponent_shift, dead.exponent_bits).astype(np.float64)
    dead_time = np.where(blocks.missing, np.nan, base * np.power(2.0, exponent) * dead.block_s)
    out["dead_time"] = xr.Variable(
        ("epoch",),
        dead_time,
        attrs={
            "units": "s",
            "long_name": "event dead time = base * 2**exponent * one low-rate block",
            "source_word": dead.word,
            "block_s": dead.block_s,
        },
    )
    return blocks.missing


def _add_range_mask(
    out: dict[str, xr.Variable], tab: InstrumentTable, out_of_range: np.ndarray
) -> None:
    """Add the mask of housekeeping quantities outside their valid range, one bit each."""
    n_q = len(tab.housekeeping)
    mask_dtype = np.uint32 if n_q <= 32 else np.uint64
    weights = (np.uint64(1) << np.arange(n_q, dtype=np.uint64)).astype(mask_dtype)
    mask = (out_of_range.astype(mask_dtype) * weights).sum(axis=1, dtype=mask_dtype)
    out["instrument_range_mask"] = xr.Variable(
        ("epoch",),
        mask,
        attrs={
            "units": "1",
            "long_name": "housekeeping quantities outside their valid range, one bit each",
            "flag_masks": weights,
            "flag_meanings": " ".join(q.name for q in tab.housekeeping),
        },
    )


def _header_suspect(events: xr.Dataset, n_events: int) -> np.ndarray:
    """Events whose header packet failed its CRC (``quality_flags``; none without it)."""
    suspect = np.zeros(n_events, dtype=bool)
    if "quality_flags" in events.variables:
        quality = np.asarray(events.variables["quality_flags"].values)
        if quality.dtype.kind == "f":  # concatenated with flag-less events: NaN there
            quality = np.where(np.isfinite(quality), quality, 0).astype(np.int64)
        if quality.dtype.kind in "iu":
            suspect = (quality & int(QualityFlag.HEADER_CRC_MISMATCH)) != 0
    return suspect


def instrument_products(events: xr.Dataset, table: TableLike = None) -> dict[str, xr.Variable]:
    """What :func:`idexdask.analyze` adds: the instrument state of IDEX telemetry events.

    :func:`instrument_state_variables` when ``events`` carry at least one header
    word of the table (decoded or simulated IDEX events, a store, an official
    L1a); nothing for sources without an IDEX event header (LeCroy captures),
    which would otherwise get 46 variables of fill.
    """
    tab = load_instrument_table(table)
    words = {q.word for q in tab.housekeeping} | {tab.trigger_origin.word, tab.dead_time.word}
    words |= {w for g in tab.trigger_gains for w in (g.mode_word, g.control_word)}
    if not any(word in events.variables for word in words):
        _log.debug("no IDEX event header words: no instrument-state products")
        return {}
    return instrument_state_variables(events, tab)


def instrument_state(events: xr.Dataset, table: TableLike = None) -> xr.Dataset:
    """The instrument state of every event of a decoded dataset, in engineering units.

    Parameters
    ----------
    events : xarray.Dataset
        Decoded events (:func:`idexdask.read_l0`, a store, an official L1a).
    table : InstrumentTable, path, mapping or None
        Conversion table; None: ``configs/instrument_state.yaml``.

    Returns
    -------
    xarray.Dataset
        On ``epoch`` (the input's coordinate): the variables of
        :func:`instrument_state_variables` (32 housekeeping quantities named
        as in the official L1b -- ``reflectron_voltage`` V, ``temperature_1`` C,
        ``current_3p3v_bus`` A, ... --, trigger modes and thresholds per gain,
        trigger origin, dead time, range mask and flags).  Documented with
        units and ranges in ``docs/products.md``.

    Raises
    ------
    ConfigError, AnalysisError
        As :func:`instrument_state_variables`.

    Examples
    --------
    >>> state = idexdask.instrument_state(idexdask.read_l0("events.pkts"))  # doctest: +SKIP
    >>> state["reflectron_voltage"].values  # doctest: +SKIP
    """
    variables = instrument_state_variables(events, table)
    coords = {"epoch": events.variables["epoch"]} if "epoch" in events.variables else None
    return xr.Dataset(
        variables, coords=coords, attrs={"table": load_instrument_table(table).source}
    )


def physical_waveforms(
    events: xr.Dataset,
    names: Iterable[str] | None = None,
    table: TableLike = None,
) -> xr.Dataset:
    """Waveforms in physical units (TOF in mA, target and ion grid in pC), on demand.

    Multiplies the stored DN by the table's factor; nothing is stored: on a
    Dask-backed dataset (a store opened lazily) the result is lazy too.  Fill
    samples (``FILLVAL``, 65535) become NaN.

    Parameters
    ----------
    events : xarray.Dataset
        Events with waveforms in DN.
    names : iterable of str, optional
        Waveforms to convert; default every waveform of the table present.
    table : InstrumentTable, path, mapping or None
        Conversion table; None: ``configs/instrument_state.yaml``.

    Returns
    -------
    xarray.Dataset
        One float64 variable per waveform with ``units`` and ``dn_scale``.

    Raises
    ------
    AnalysisError
        If a requested waveform is absent, has no factor in the table, or is
        not in DN (a LeCroy capture is already in volts).
    """
    tab = load_instrument_table(table)
    wanted = list(names) if names is not None else [w for w in tab.waveforms if w in events]
    out = {}
    for name in wanted:
        if name not in events.variables:
            raise AnalysisError(f"no waveform {name!r} in the events")
        if name not in tab.waveforms:
            raise AnalysisError(f"no DN-to-physical factor for {name!r} in {tab.source}")
        wave = events[name]
        unit = str(wave.attrs.get("units", "DN"))
        if unit != "DN":
            raise AnalysisError(f"{name} is in {unit}, not DN: no conversion applies")
        factor = tab.waveforms[name]
        fill = wave.attrs.get("FILLVAL", 65535)
        physical = wave.where(wave != fill).astype(np.float64) * factor.scale
        physical.attrs = {
            "units": factor.units,
            "long_name": f"{name} in {factor.units}",
            "dn_scale": factor.scale,
        }
        out[name] = physical
    return xr.Dataset(out)


@dataclass(frozen=True)
class InstrumentReading:
    """One housekeeping quantity of one event, ready to display.

    Attributes
    ----------
    name, long_name, units : str
        As in the table (``reflectron_voltage``, ..., ``V``).
    value : float
        Engineering value; NaN when the header is missing.
    valid_min, valid_max : float
        Valid range, in ``units``.
    out_of_range : bool
        The value lies outside the valid range (False for NaN).
    """

    name: str
    long_name: str
    units: str
    value: float
    valid_min: float
    valid_max: float
    out_of_range: bool


def event_readings(
    dataset: xr.Dataset, index: int, table: TableLike = None
) -> list[InstrumentReading]:
    """The housekeeping quantities of event ``index``, in table order, with their ranges.

    Reads the stored quantities of an analysed dataset or a campaign store (one
    event's values only: cheap on a lazily opened store); computes them from the
    header words when they are absent.

    Parameters
    ----------
    dataset : xarray.Dataset
        Events (``epoch`` dimension): analysed, stored or decoded.
    index : int
        Position along ``epoch``.
    table : InstrumentTable, path, mapping or None
        Conversion table (ranges, units, order); None: ``configs/instrument_state.yaml``.

    Returns
    -------
    list of InstrumentReading

    Raises
    ------
    AnalysisError
        If ``index`` is outside the dataset.
    """
    tab = load_instrument_table(table)
    n = int(dataset.sizes.get("epoch", 0))
    if not -n <= index < n:
        raise AnalysisError(f"event {index} is outside the {n} events")
    one = dataset.isel(epoch=[index])
    names = [q.name for q in tab.housekeeping]
    if all(name in one.variables for name in names):
        values = [float(np.asarray(one.variables[name].values)[0]) for name in names]
    else:
        state = instrument_state_variables(one, tab)
        values = [float(state[name].values[0]) for name in names]
    return [
        InstrumentReading(
            name=q.name,
            long_name=q.long_name,
            units=q.units,
            value=v,
            valid_min=q.valid_min,
            valid_max=q.valid_max,
            out_of_range=bool(v < q.valid_min or v > q.valid_max),
        )
        for q, v in zip(tab.housekeeping, values, strict=True)
    ]
