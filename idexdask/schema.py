"""The configuration model: every key of ``configs/default.yaml``, its type and range.

One table, :data:`SCHEMA`, maps each dotted key to a :class:`Spec` that checks a
value and returns it normalised (an int for an integer, a float for a number,
a tuple for a list).  Adding a key to ``default.yaml`` is one line here (a test
checks that every key of ``default.yaml`` has one).  :func:`validate` runs on
every configuration :func:`idexdask.config.load_config` returns, so an unknown
key, a value of the wrong type or out of range, or an unknown preset or
reference file stops the run with a :class:`~idexdask.errors.ConfigError`
naming the dotted key and what is allowed, before any work starts.

Keys whose allowed values live in a reference file (calibration presets, RSF
presets, the species and mineral libraries, the CDF attributes) and the few
rules between keys are :data:`CROSS_CHECKS`: named functions of the stage that
owns the file, imported when a configuration is validated (the configuration
layer sits below the stages and imports none of them at import time).

:func:`freeze` turns a validated configuration into :class:`Settings`: frozen,
read-only mappings (attribute access too) that the stages receive.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from idexdask.errors import ConfigError

__all__ = [
    "CROSS_CHECKS",
    "SCHEMA",
    "Bool",
    "Choice",
    "Float",
    "Int",
    "ListOf",
    "Settings",
    "Spec",
    "Str",
    "Table",
    "Window",
    "freeze",
    "thaw",
    "validate",
]


# --------------------------------------------------------------------------- specs


class Spec:
    """How one configuration value is checked; subclasses implement :meth:`check`."""

    nullable: bool = False

    def check(self, value: Any, key: str) -> Any:
        """The value, normalised; raise :class:`ConfigError` naming ``key`` if invalid."""
        raise NotImplementedError

    def __call__(self, value: Any, key: str) -> Any:
        if value is None:
            if self.nullable:
                return None
            raise ConfigError(f"{key}: a value is required ({self.allowed()}), got null")
        return self.check(value, key)

    def allowed(self) -> str:
        """What the key accepts, in words (quoted by error messages)."""
        raise NotImplementedError

    def fail(self, key: str, value: Any) -> ConfigError:
        return ConfigError(f"{key}: expected {self.allowed()}, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _range_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    return " and ".join(parts)


@dataclass(frozen=True)
class Int(Spec):
    """An integer (a float with an integral value is accepted), optionally bounded."""

    min: int | None = None
    max: int | None = None
    nullable: bool = False

    def allowed(self) -> str:
        bounds = _range_text(self.min, self.max, False, False)
        text = "an integer" + (f" {bounds}" if bounds else "")
        return text + (" or null" if self.nullable else "")

    def check(self, value: Any, key: str) -> int:
        if not _is_number(value) or (isinstance(value, float) and not value.is_integer()):
            raise self.fail(key, value)
        out = int(value)
        if (self.min is not None and out < self.min) or (self.max is not None and out > self.max):
            raise self.fail(key, value)
        return out


@dataclass(frozen=True)
class Float(Spec):
    """A finite number, optionally bounded (open or closed at each end)."""

    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False
    nullable: bool = False

    def allowed(self) -> str:
        bounds = _range_text(self.min, self.max, self.min_open, self.max_open)
        return "a number" + (f" {bounds}" if bounds else "") + (" or null" if self.nullable else "")

    def check(self, value: Any, key: str) -> float:
        if not _is_number(value) or not math.isfinite(value):
            raise self.fail(key, value)
        v = float(value)
        if self.min is not None and (v < self.min or (self.min_open and v == self.min)):
            raise self.fail(key, value)
        if self.max is not None and (v > self.max or (self.max_open and v == self.max)):
            raise self.fail(key, value)
        return v


@dataclass(frozen=True)
class Bool(Spec):
    """true or false (not 0/1, not "yes")."""

    def allowed(self) -> str:
        return "true/false"

    def check(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, value)
        return value


@dataclass(frozen=True)
class Str(Spec):
    """A string; ``nonempty`` refuses "", ``pattern`` (a regular expression) must match."""

    nonempty: bool = False
    nullable: bool = False
    description: str = ""
    pattern: str = ""

    def allowed(self) -> str:
        text = self.description or ("a non-empty string" if self.nonempty else "a string")
        return text + (" or null" if self.nullable else "")

    def check(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or (self.nonempty and not value):
            raise self.fail(key, value)
        if self.pattern and re.fullmatch(self.pattern, value) is None:
            raise self.fail(key, value)
        return value


@dataclass(frozen=True)
class Choice(Spec):
    """One of a fixed set of values."""

    choices: tuple[Any, ...]

    def allowed(self) -> str:
        return "one of " + ", ".join(str(c) for c in self.choices)

    def check(self, value: Any, key: str) -> Any:
        # bool is an int: true must not pass for 1
        if isinstance(value, bool) != any(isinstance(c, bool) for c in self.choices) or (
            value not in self.choices
        ):
            raise self.fail(key, value)
        return value


@dataclass(frozen=True)
class Window(Spec):
    """A time window ``[start, stop]`` in µs, finite, start < stop."""

    nullable: bool = False

    def allowed(self) -> str:
        text = "a list [start_us, stop_us] of numbers with start < stop"
        return text + (" or null" if self.nullable else "")

    def check(self, value: Any, key: str) -> tuple[float, float]:
        if (not isinstance(value, list | tuple) or len(value) != 2
                or not all(_is_number(v) and math.isfinite(v) for v in value)
                or not value[0] < value[1]):
            raise self.fail(key, value)
        return (float(value[0]), float(value[1]))


@dataclass(frozen=True)
class ListOf(Spec):
    """A list of values of one spec; ``nonempty``, ``unique`` as named."""

    item: Spec
    nonempty: bool = False
    unique: bool = False

    def allowed(self) -> str:
        return (f"a{' non-empty' if self.nonempty else ''} list"
                f"{' without repeats' if self.unique else ''} of {self.item.allowed()}")

    def check(self, value: Any, key: str) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple) or (self.nonempty and not value):
            raise self.fail(key, value)
        out = tuple(self.item(v, f"{key}[{i}]") for i, v in enumerate(value))
        if self.unique and len(set(out)) != len(out):
            raise self.fail(key, value)
        return out


@dataclass(frozen=True)
class Table(Spec):
    """A mapping with free keys (channel names, Dask settings) and checked values.

    An empty YAML entry (null) is the empty table.
    """

    value: Spec

    def __call__(self, value: Any, key: str) -> Any:
        return {} if value is None else self.check(value, key)

    def allowed(self) -> str:
        return f"a mapping of names to {self.value.allowed()}"

    def check(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(key, value)
        return {str(k): self.value(v, f"{key}.{k}") for k, v in value.items()}


@dataclass(frozen=True)
class Scalar(Spec):
    """A string, number or true/false (a Dask setting's value); null allowed."""

    nullable: bool = True

    def allowed(self) -> str:
        return "a string, number or true/false (null: the library's default)"

    def check(self, value: Any, key: str) -> Any:
        if not isinstance(value, str | int | float | bool):
            raise self.fail(key, value)
        return value


# --------------------------------------------------------------------------- the model

_POLARITY = Choice((-1, 0, 1))
_MEMORY = Str(description='a size such as "4GiB", "auto" or "0" (no limit)',
              pattern=r"auto|0|\d.*")


def _curve(prefix: str) -> dict[str, Spec]:
    return {
        f"{prefix}.provenance": Str(nonempty=True),
        f"{prefix}.log_a": Float(),
        f"{prefix}.a1": Float(),
        f"{prefix}.a2": Float(),
        f"{prefix}.a3": Float(),
        f"{prefix}.vb": Float(min=0, min_open=True),
        f"{prefix}.vc": Float(min=0, min_open=True),
        f"{prefix}.k": Float(min=0, min_open=True),
        f"{prefix}.v_range": Window(),
    }


#: Every key of ``configs/default.yaml`` (dotted) and how its value is checked.
#: Mappings of the file not listed here are sections: their keys are listed.
SCHEMA: dict[str, Spec] = {
    # decode
    "decode.keep_samples_high": Int(min=1),
    "decode.keep_samples_low": Int(min=1),
    "decode.verify_crc": Bool(),
    # calibration (preset names: CROSS_CHECKS)
    "calibration.preset": Str(nonempty=True),
    "calibration.source_presets": Table(Str(nonempty=True)),
    "calibration.settings_file": Str(nonempty=True),
    # analysis.quality
    "analysis.quality.baseline_window_us": Window(),
    "analysis.quality.baseline_window_by_channel": Table(Window()),
    "analysis.quality.baseline_fallback_fraction": Float(min=0, max=1, min_open=True),
    "analysis.quality.min_baseline_samples": Int(min=1),
    "analysis.quality.min_valid_samples": Int(min=3),
    "analysis.quality.saturation_min_run": Int(min=1),
    "analysis.quality.flat_top_min_run": Int(min=2),
    "analysis.quality.flat_top_sigma": Float(min=0, max=1e9),
    "analysis.quality.polarity": Table(_POLARITY),
    "analysis.quality.noise.window_us": Window(nullable=True),
    "analysis.quality.noise.welch_nperseg": Int(min=4),
    "analysis.quality.noise.max_lag": Int(min=1),
    "analysis.quality.noise.histogram_max_bins": Int(min=8),
    "analysis.quality.noise.histogram_range_sigma": Float(min=1, max=1e3),
    # analysis.tof
    "analysis.tof.nominal_gain.TOF_High": Float(min=0, min_open=True),
    "analysis.tof.nominal_gain.TOF_Mid": Float(min=0, min_open=True),
    "analysis.tof.nominal_gain.TOF_Low": Float(min=0, min_open=True),
    "analysis.tof.overlap_sigma": Float(min=0, min_open=True),
    "analysis.tof.min_overlap_samples": Int(min=1),
    "analysis.tof.saturation_guard": Int(min=0),
    "analysis.tof.baseline_stop_us": Float(),
    "analysis.tof.polarity": Table(_POLARITY),
    # analysis.fitting
    "analysis.fitting.device": Choice(("cpu", "gpu")),
    "analysis.fitting.engine": Choice(("compiled", "auto", "xp")),
    # analysis.peaks
    "analysis.peaks.smooth_us": Float(min=0),
    "analysis.peaks.height_sigma": Float(min=0),
    "analysis.peaks.prominence_sigma": Float(min=0),
    "analysis.peaks.min_distance_us": Float(min=0),
    "analysis.peaks.baseline_stop_us": Float(),
    "analysis.peaks.max_peaks_per_event": Int(min=1),
    "analysis.peaks.window_left_us": Float(min=0, min_open=True),
    "analysis.peaks.window_right_us": Float(min=0, min_open=True),
    "analysis.peaks.max_iterations": Int(min=1),
    "analysis.peaks.min_line_snr": Float(min=0),
    "analysis.peaks.ringing_sigma": Float(min=0),
    "analysis.peaks.joint_blends": Bool(),
    "analysis.peaks.residual_lines": Bool(),
    "analysis.peaks.residual_max_pvalue": Float(min=0, max=1),
    # analysis.impact
    "analysis.impact.dn_to_pc.Target_Low": Float(min=0, min_open=True),
    "analysis.impact.dn_to_pc.Target_High": Float(min=0, min_open=True),
    "analysis.impact.dn_to_pc.Ion_Grid": Float(min=0, min_open=True),
    "analysis.impact.polarity": Table(_POLARITY),
    "analysis.impact.baseline_stop_default_us": Float(),
    "analysis.impact.baseline_stop_us": Table(Float()),
    "analysis.impact.smooth_us": Float(min=0),
    "analysis.impact.onset_sigma": Float(min=0, min_open=True),
    "analysis.impact.min_snr": Float(min=0),
    "analysis.impact.min_valid_samples": Int(min=3),
    "analysis.impact.saturation_guard": Int(min=0),
    "analysis.impact.tau_min_us": Float(min=0, min_open=True),
    "analysis.impact.tau_max_us": Float(min=0, min_open=True),
    "analysis.impact.decay_max_us": Float(min=0, min_open=True),
    "analysis.impact.max_iterations": Int(min=1),
    "analysis.impact.second_start.enabled": Bool(),
    "analysis.impact.second_start.time_us": Float(),
    "analysis.impact.second_start.rise_time_us": Float(min=0, min_open=True),
    "analysis.impact.second_start.decay_time_us": Float(min=0, min_open=True),
    # analysis.velocity
    "analysis.velocity.channels": ListOf(
        Choice(("Target_High", "Target_Low", "Ion_Grid")), nonempty=True, unique=True),
    **_curve("analysis.velocity.rise_time_curve"),
    **_curve("analysis.velocity.yield_curve"),
    # analysis.calibration
    "analysis.calibration.enabled": Bool(),
    "analysis.calibration.max_fit_status": Int(min=0),
    "analysis.calibration.campaign.enabled": Bool(),
    "analysis.calibration.campaign.min_event_matches": Int(min=1),
    "analysis.calibration.campaign.shift_window_us": Float(min=0, min_open=True),
    # cluster
    "cluster.workers": Int(min=1),
    "cluster.threads_per_worker": Int(min=1),
    "cluster.memory_limit": _MEMORY,
    "cluster.address": Str(nullable=True, description="a scheduler address (tcp://host:8786) "
                           'or scheduler file (.json); null or "" for the embedded cluster'),
    "cluster.dashboard": Str(description='a dashboard address (":8787", ":0" any free port, '
                             '"" none)'),
    "cluster.profile": Bool(),
    "cluster.dask_config": Table(Scalar()),
    "cluster.worker_start": Choice(("forkserver", "spawn")),
    # pipeline
    "pipeline.batch_events": Int(min=1),
    "pipeline.analyze": Bool(),
    "pipeline.retries": Int(min=0, max=20),
    "pipeline.chunk_events": Int(min=1),
    "pipeline.lab_batch_events": Int(min=1),
    "pipeline.max_peaks_per_event": Int(min=1),
    "pipeline.compressor": Choice(("zstd", "zstd-bitshuffle", "lz4-bitshuffle", "gzip",
                                   "blosc-lz4", "none")),
    "pipeline.lab_compressor": Choice(("zstd", "zstd-bitshuffle", "lz4-bitshuffle",
                                       "lz4-bitshuffle-f32", "lz4-bitshuffle-raw-f32", "gzip",
                                       "blosc-lz4", "none")),
    "pipeline.lab_uncompressed_waveforms": ListOf(Str(nonempty=True), unique=True),
    "pipeline.compression_level": Int(min=0, max=22),
    # export
    "export.formats": ListOf(Choice(("hdf5", "cdf")), unique=True),
    "export.cdf_attributes": Str(nonempty=True),
    "export.cdf_compression": Int(min=0, max=9),
    # composition (preset and file contents: CROSS_CHECKS)
    "composition.rsf_preset": Str(nonempty=True),
    "composition.rsf_file": Str(nonempty=True),
    "composition.species_file": Str(nonempty=True),
    "composition.minerals_file": Str(nonempty=True),
    "composition.mass_tolerance_u": Float(min=0, min_open=True),
    "composition.mass_sigma_u": Float(min=0, min_open=True),
    "composition.elements": ListOf(Str(nonempty=True), nonempty=True, unique=True),
    "composition.isotope_rel_sigma": Float(min=0),
    "composition.model_sigma": Float(min=0),
    "composition.olivine_ratio_tolerance": Float(min=0),
    "composition.include_rsf_uncertainty": Bool(),
    "composition.targeted_species": ListOf(Str(nonempty=True), unique=True),
    "composition.targeted_min_significance": Float(min=0, min_open=True),
}

#: Checks that need a reference file or several keys: (key named in the error,
#: "module:function").  Each function takes the whole validated configuration
#: (plain mappings) and raises ConfigError naming the key and the allowed values.
#: They run in this order, after every key has passed :data:`SCHEMA`.
CROSS_CHECKS: tuple[tuple[str, str], ...] = (
    ("analysis", "idexdask.analysis.settings:check_analysis_config"),
    ("calibration", "idexdask.calibration.settings:check_calibration_config"),
    ("composition", "idexdask.composition.settings:check_composition_config"),
    ("cluster, export", "idexdask.pipeline.settings:check_pipeline_config"),
)


# --------------------------------------------------------------------------- validation


def _walk(value: Any, default: Any, key: str, out: dict[str, Any]) -> None:
    spec = SCHEMA.get(key)
    if spec is not None:
        out_value = spec(value, key)
        _set(out, key, out_value)
        return
    if isinstance(default, Mapping):  # a section: its keys are the known ones
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping (a section with keys "
                              f"{', '.join(map(str, default))}), got {value!r}")
        for sub, sub_value in value.items():
            dotted = f"{key}.{sub}" if key else str(sub)
            if sub not in default and dotted not in SCHEMA:
                known = ", ".join(map(str, default)) or "(none)"
                raise ConfigError(f"unknown configuration key {dotted!r} "
                                  f"(known in {key or 'the top level'}: {known})")
            _walk(sub_value, default.get(sub), dotted, out)
        return
    # a key of default.yaml without a spec (a test keeps this from happening):
    # at least the default's type
    if default is not None and value is not None and not isinstance(value, type(default)):
        if not (_is_number(default) and _is_number(value)):
            raise ConfigError(f"{key}: expected a {type(default).__name__}, got {value!r}")
    _set(out, key, value)


def _set(out: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = out
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _plain(value: Any) -> Any:
    """Normalised values as YAML-like plain data (tuples back to lists)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _resolve(reference: str) -> Callable[[Mapping[str, Any]], None]:
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def validate(config: Mapping[str, Any], defaults: Mapping[str, Any], *,
             complete: bool = True) -> dict[str, Any]:
    """Check ``config`` against the model; return it normalised (plain dicts and lists).

    Parameters
    ----------
    config : mapping
        A configuration (``complete``) or an override of one (any subset of keys).
    defaults : mapping
        ``configs/default.yaml``: its sections are the model's sections.
    complete : bool
        Also run :data:`CROSS_CHECKS` (they need every key).

    Raises
    ------
    ConfigError
        Naming the dotted key and what it allows.
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"a configuration must be a mapping, got {type(config).__name__}")
    out: dict[str, Any] = {}
    _walk(config, defaults, "", out)
    out = _plain(out)
    if complete:
        for _, reference in CROSS_CHECKS:
            _resolve(reference)(out)
    return out


def missing_specs(defaults: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Keys of ``defaults`` (leaves, or mappings that are not sections) without a spec."""
    missing = []
    for key, value in defaults.items():
        dotted = f"{prefix}{key}"
        if dotted in SCHEMA:
            continue
        if isinstance(value, Mapping) and value:
            missing += missing_specs(value, dotted + ".")
        else:
            missing.append(dotted)
    return missing


# --------------------------------------------------------------------------- settings


class Settings(Mapping[str, Any]):
    """A validated configuration section, frozen: item and attribute access, no writes.

    Lists are tuples, sections are :class:`Settings`; :func:`thaw` gives plain
    data back (for YAML, JSON, digests).
    """

    __slots__ = ("_data", "_key")

    def __init__(self, data: Mapping[str, Any], key: str = "") -> None:
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_data", {
            str(k): _frozen(v, f"{key}.{k}" if key else str(k)) for k, v in data.items()
        })

    def __getitem__(self, name: str) -> Any:
        return self._data[name]

    def __getattr__(self, name: str) -> Any:
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(f"no configuration key {self._key + '.' if self._key else ''}"
                                 f"{name}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("configuration settings are frozen")

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(tuple(self._data.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and thaw(self) == thaw(other)

    def __repr__(self) -> str:
        return f"Settings({self._key or 'config'}: {thaw(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:  # copy, deepcopy and pickle (Dask tasks)
        return (Settings, (thaw(self), self._key))


def _frozen(value: Any, key: str) -> Any:
    if isinstance(value, Mapping):
        return Settings(value, key)
    if isinstance(value, list | tuple):
        return tuple(_frozen(v, key) for v in value)
    return value


def freeze(config: Mapping[str, Any]) -> Settings:
    """The frozen :class:`Settings` of a validated configuration."""
    return config if isinstance(config, Settings) else Settings(config)


def thaw(value: Any) -> Any:
    """Plain dicts and lists of a :class:`Settings` (or of any nested mapping)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    return value
