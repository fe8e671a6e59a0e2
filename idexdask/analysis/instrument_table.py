"""The instrument-state conversion table (``configs/instrument_state.yaml``), validated on load.

The table says how the raw event-header words of an IDEX event become the
instrument state in engineering units: for each housekeeping quantity, its
source word, bit field, polynomial, units and valid range; the trigger mode,
threshold and origin fields; the dead-time fields; the DN-to-physical factors
of the six waveforms; the voltages and tolerance that define a high-voltage
setting.  Its provenance (the official IDEX conversion table) is written in
the file.  :func:`load_instrument_table` checks every entry before any event
is touched, so a malformed table stops early with a :class:`ConfigError`.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idexdask.config import file_key, load_yaml
from idexdask.errors import ConfigError

__all__ = [
    "DEFAULT_TABLE",
    "DeadTimeField",
    "HighVoltageGrouping",
    "HousekeepingQuantity",
    "InstrumentTable",
    "TableLike",
    "TriggerGain",
    "TriggerOriginField",
    "WaveformUnits",
    "load_instrument_table",
]

DEFAULT_TABLE = "instrument_state.yaml"
"""The shipped table, a name inside ``configs/``."""

_WORD_BITS = 32  # every IDEX event header word is at most 32 bits wide
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class HousekeepingQuantity:
    """One housekeeping quantity: a bit field of a header word and its polynomial.

    Attributes
    ----------
    name : str
        Variable name (the official L1b's), e.g. ``reflectron_voltage``.
    units : str
        Engineering units (V, mA, A, C).
    word : str
        Header variable holding the raw field, e.g. ``idx__txhdrhvpshkch45``.
    shift, bits : int
        The raw value is ``(word >> shift) & (2**bits - 1)`` (DN).
    coefficients : tuple of float
        Polynomial in DN, ascending powers: ``value = sum_k c[k] * dn**k``.
    valid_min, valid_max : float
        Plausible range in ``units``; a value outside it is flagged.
    basis : str
        Why the range is what it is (a key explained in the table's header).
    long_name : str
        What the quantity is.
    """

    name: str
    units: str
    word: str
    shift: int
    bits: int
    coefficients: tuple[float, ...]
    valid_min: float
    valid_max: float
    basis: str
    long_name: str


@dataclass(frozen=True)
class TriggerGain:
    """Trigger mode and threshold fields of one TOF gain (``lg``, ``mg``, ``hg``)."""

    gain: str
    mode_word: str
    control_word: str
    waveform: str


@dataclass(frozen=True)
class TriggerOriginField:
    """Trigger-origin bits: bit k of the low ``bits`` bits of ``word`` is source ``labels[k]``."""

    word: str
    bits: int
    labels: dict[int, str]
    none_label: str


@dataclass(frozen=True)
class DeadTimeField:
    """Dead time = base * 2**exponent * block_s, base and exponent bit fields of ``word``."""

    word: str
    base_shift: int
    base_bits: int
    exponent_shift: int
    exponent_bits: int
    samples_per_block: int
    low_rate_hz: float

    @property
    def block_s(self) -> float:
        """Duration of one low-rate block, s."""
        return self.samples_per_block / self.low_rate_hz


@dataclass(frozen=True)
class WaveformUnits:
    """DN-to-physical factor of one waveform (``scale`` units per DN)."""

    waveform: str
    scale: float
    units: str


@dataclass(frozen=True)
class HighVoltageGrouping:
    """Voltages that define a high-voltage setting and the tolerance that joins events, V."""

    voltages: tuple[str, ...]
    tolerance_v: float


@dataclass(frozen=True)
class InstrumentTable:
    """The whole validated table (see the module docstring)."""

    housekeeping: tuple[HousekeepingQuantity, ...]
    trigger_modes: dict[int, str]
    threshold_shift: int
    threshold_bits: int
    trigger_gains: tuple[TriggerGain, ...]
    trigger_origin: TriggerOriginField
    dead_time: DeadTimeField
    waveforms: dict[str, WaveformUnits]
    high_voltage_groups: HighVoltageGrouping
    source: str

    def quantity(self, name: str) -> HousekeepingQuantity:
        """The housekeeping quantity called ``name``.

        Raises
        ------
        ConfigError
            If the table has no such quantity.
        """
        for q in self.housekeeping:
            if q.name == name:
                return q
        raise ConfigError(f"{self.source}: no housekeeping quantity {name!r}")


TableLike = InstrumentTable | str | Path | Mapping[str, Any] | None
"""What the functions taking a ``table`` accept (see :func:`load_instrument_table`)."""


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where}: {value!r} is not a finite number")
    return float(value)


def _integer(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{where}: {value!r} is not an integer in {low}..{high}")
    return int(value)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {value!r} is not a non-empty string")
    return value


def _only(entry: Mapping[str, Any], allowed: set[str], where: str) -> None:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(entry).__name__}")
    unknown = set(entry) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    missing = allowed - set(entry)
    if missing:
        raise ConfigError(f"{where}: missing keys {sorted(missing)}")


def _housekeeping(entry: Any, where: str) -> HousekeepingQuantity:
    keys = {
        "name", "units", "word", "shift", "bits", "coefficients",
        "valid_min", "valid_max", "basis", "long_name",
    }  # fmt: skip
    _only(entry, keys, where)
    name = _text(entry["name"], f"{where}.name")
    where = f"housekeeping {name}"
    if not _NAME.match(name):
        raise ConfigError(f"{where}: name must be lower-case letters, digits and _")
    bits = _integer(entry["bits"], f"{where}.bits", 1, _WORD_BITS)
    shift = _integer(entry["shift"], f"{where}.shift", 0, _WORD_BITS - bits)
    coefficients = entry["coefficients"]
    if not isinstance(coefficients, list) or not coefficients:
        raise ConfigError(f"{where}.coefficients: a non-empty list of numbers")
    coeffs = tuple(_number(c, f"{where}.coefficients[{k}]") for k, c in enumerate(coefficients))
    valid_min = _number(entry["valid_min"], f"{where}.valid_min")
    valid_max = _number(entry["valid_max"], f"{where}.valid_max")
    if not valid_min < valid_max:
        raise ConfigError(f"{where}: valid_min {valid_min} must be below valid_max {valid_max}")
    return HousekeepingQuantity(
        name=name,
        units=_text(entry["units"], f"{where}.units"),
        word=_text(entry["word"], f"{where}.word"),
        shift=shift,
        bits=bits,
        coefficients=coeffs,
        valid_min=valid_min,
        valid_max=valid_max,
        basis=_text(entry["basis"], f"{where}.basis"),
        long_name=_text(entry["long_name"], f"{where}.long_name"),
    )


def _parse(data: Any, source: str) -> InstrumentTable:
    """The table of a parsed YAML document, each section checked (``source`` names it)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    _only(
        data,
        {"housekeeping", "trigger", "trigger_origin", "dead_time", "waveforms",
         "high_voltage_groups"},
        source,
    )  # fmt: skip
    housekeeping = _parse_housekeeping(data["housekeeping"], source)
    trigger = _parse_trigger(data["trigger"], source)
    trigger_origin = _parse_trigger_origin(data["trigger_origin"], source)
    dead_time = _parse_dead_time(data["dead_time"], source)
    waveforms = _parse_waveforms(data["waveforms"], source)
    for g in trigger.gains:
        if g.waveform not in waveforms:
            raise ConfigError(f"{source}: trigger gain {g.gain}: no waveform {g.waveform!r}")
    groups = _parse_high_voltage_groups(
        data["high_voltage_groups"], [q.name for q in housekeeping], source
    )
    return InstrumentTable(
        housekeeping=housekeeping,
        trigger_modes=trigger.modes,
        threshold_shift=trigger.threshold_shift,
        threshold_bits=trigger.threshold_bits,
        trigger_gains=trigger.gains,
        trigger_origin=trigger_origin,
        dead_time=dead_time,
        waveforms=waveforms,
        high_voltage_groups=groups,
        source=source,
    )


def _parse_housekeeping(rows: Any, source: str) -> tuple[HousekeepingQuantity, ...]:
    """The ``housekeeping`` list: at most 64 quantities with distinct names."""
    if not isinstance(rows, list) or not rows:
        raise ConfigError(f"{source}: housekeeping must be a non-empty list")
    if len(rows) > 64:  # instrument_range_mask is one uint64 bit per quantity
        raise ConfigError(f"{source}: at most 64 housekeeping quantities, got {len(rows)}")
    housekeeping = tuple(
        _housekeeping(r, f"{source}: housekeeping[{i}]") for i, r in enumerate(rows)
    )
    names = [q.name for q in housekeeping]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: duplicate housekeeping names")
    return housekeeping


@dataclass(frozen=True)
class _TriggerSection:
    """The ``trigger`` section: the threshold field, the mode names and the gains."""

    threshold_shift: int
    threshold_bits: int
    modes: dict[int, str]
    gains: tuple[TriggerGain, ...]


def _parse_trigger(trig: Any, source: str) -> _TriggerSection:
    """The ``trigger`` section."""
    _only(trig, {"threshold_shift", "threshold_bits", "modes", "gains"}, f"{source}: trigger")
    threshold_bits = _integer(trig["threshold_bits"], "trigger.threshold_bits", 1, _WORD_BITS)
    threshold_shift = _integer(
        trig["threshold_shift"], "trigger.threshold_shift", 0, _WORD_BITS - threshold_bits
    )
    if not isinstance(trig["modes"], Mapping) or not trig["modes"]:
        raise ConfigError(f"{source}: trigger.modes must map mode numbers to names")
    modes = {
        _integer(k, "trigger.modes key", 1, 127): _text(v, f"trigger.modes[{k}]")
        for k, v in trig["modes"].items()
    }
    if not isinstance(trig["gains"], Mapping) or not trig["gains"]:
        raise ConfigError(f"{source}: trigger.gains must map gains to their fields")
    gains = []
    for gain, entry in trig["gains"].items():
        where = f"{source}: trigger.gains.{gain}"
        _only(entry, {"mode_word", "control_word", "waveform"}, where)
        gains.append(
            TriggerGain(
                gain=_text(gain, where),
                mode_word=_text(entry["mode_word"], f"{where}.mode_word"),
                control_word=_text(entry["control_word"], f"{where}.control_word"),
                waveform=_text(entry["waveform"], f"{where}.waveform"),
            )
        )
    return _TriggerSection(
        threshold_shift=threshold_shift,
        threshold_bits=threshold_bits,
        modes=modes,
        gains=tuple(gains),
    )


def _parse_trigger_origin(origin: Any, source: str) -> TriggerOriginField:
    """The ``trigger_origin`` section."""
    where = f"{source}: trigger_origin"
    _only(origin, {"word", "bits", "labels", "none_label"}, where)
    origin_bits = _integer(origin["bits"], f"{where}.bits", 1, 16)
    if not isinstance(origin["labels"], Mapping):
        raise ConfigError(f"{where}.labels: must map bit numbers to labels")
    labels = {
        _integer(k, f"{where}.labels key", 0, origin_bits - 1): _text(v, f"{where}.labels[{k}]")
        for k, v in origin["labels"].items()
    }
    return TriggerOriginField(
        word=_text(origin["word"], f"{where}.word"),
        bits=origin_bits,
        labels=dict(sorted(labels.items())),
        none_label=_text(origin["none_label"], f"{where}.none_label"),
    )


def _parse_dead_time(dead: Any, source: str) -> DeadTimeField:
    """The ``dead_time`` section."""
    where = f"{source}: dead_time"
    _only(
        dead,
        {"word", "base_shift", "base_bits", "exponent_shift", "exponent_bits",
         "samples_per_block", "low_rate_hz"},
        where,
    )  # fmt: skip
    base_bits = _integer(dead["base_bits"], f"{where}.base_bits", 1, _WORD_BITS)
    exponent_bits = _integer(dead["exponent_bits"], f"{where}.exponent_bits", 1, 6)
    low_rate_hz = _number(dead["low_rate_hz"], f"{where}.low_rate_hz")
    if low_rate_hz <= 0:
        raise ConfigError(f"{where}.low_rate_hz must be positive")
    return DeadTimeField(
        word=_text(dead["word"], f"{where}.word"),
        base_shift=_integer(dead["base_shift"], f"{where}.base_shift", 0, _WORD_BITS - base_bits),
        base_bits=base_bits,
        exponent_shift=_integer(
            dead["exponent_shift"], f"{where}.exponent_shift", 0, _WORD_BITS - exponent_bits
        ),
        exponent_bits=exponent_bits,
        samples_per_block=_integer(
            dead["samples_per_block"], f"{where}.samples_per_block", 1, 1 << 16
        ),
        low_rate_hz=low_rate_hz,
    )


def _parse_waveforms(entries: Any, source: str) -> dict[str, WaveformUnits]:
    """The ``waveforms`` section: each waveform's scale and units."""
    if not isinstance(entries, Mapping) or not entries:
        raise ConfigError(f"{source}: waveforms must map waveform names to scale and units")
    waveforms = {}
    for wave, entry in entries.items():
        where = f"{source}: waveforms.{wave}"
        _only(entry, {"scale", "units"}, where)
        scale = _number(entry["scale"], f"{where}.scale")
        if scale <= 0:
            raise ConfigError(f"{where}.scale must be positive")
        waveforms[str(wave)] = WaveformUnits(
            str(wave), scale, _text(entry["units"], f"{where}.units")
        )
    return waveforms


def _parse_high_voltage_groups(
    groups: Any, names: list[str], source: str
) -> HighVoltageGrouping:
    """The ``high_voltage_groups`` section; its voltages must be housekeeping ``names``."""
    where = f"{source}: high_voltage_groups"
    _only(groups, {"voltages", "tolerance_v"}, where)
    if not isinstance(groups["voltages"], list) or not groups["voltages"]:
        raise ConfigError(f"{where}.voltages: a non-empty list of housekeeping names")
    for v in groups["voltages"]:
        if v not in names:
            raise ConfigError(f"{where}.voltages: {v!r} is not a housekeeping quantity")
    tolerance = _number(groups["tolerance_v"], f"{where}.tolerance_v")
    if tolerance <= 0:
        raise ConfigError(f"{where}.tolerance_v must be positive")
    return HighVoltageGrouping(tuple(groups["voltages"]), tolerance)


@functools.lru_cache(maxsize=8)
def _cached(path: str, mtime_ns: int) -> InstrumentTable:
    return _parse(load_yaml(path), Path(path).name)


def load_instrument_table(
    table: InstrumentTable | str | Path | Mapping[str, Any] | None = None,
) -> InstrumentTable:
    """The validated instrument-state table.

    Parameters
    ----------
    table : InstrumentTable, path, mapping or None
        None: the shipped ``configs/instrument_state.yaml``; a path or a name
        inside ``configs/``; a mapping with the file's structure; or an
        already loaded table (returned as is).  Files are cached by path and
        modification time.

    Returns
    -------
    InstrumentTable

    Raises
    ------
    ConfigError
        If the file is missing, or any entry lacks a key, has an unknown key,
        a non-numeric coefficient, an impossible bit field, an empty valid
        range, or refers to an unknown quantity or waveform.
    """
    if isinstance(table, InstrumentTable):
        return table
    if isinstance(table, Mapping):
        return _parse(table, "instrument table")
    return _cached(*file_key(table if table is not None else DEFAULT_TABLE))
