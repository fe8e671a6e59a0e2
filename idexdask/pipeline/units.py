"""The unit function: planned units of input -> one event dataset.

:func:`process_units` is what every pipeline task runs, on a pack of
consecutive units (:func:`~idexdask.pipeline.plan.pack_units`);
:func:`process_unit` is the same for one unit.  It decodes each unit's
input with the unit's source (:meth:`idexdask.sources.Source.read_unit`: an L0
byte range, records of an official L1a CDF, one lab impact) and applies the science
analysis (:func:`idexdask.analysis.analysis_products`, unless the configuration
has ``pipeline.analyze: false``); the store takes whatever variables the first
unit returns as its schema.

The units of a pack are decoded one by one (a unit whose input cannot be read
or decoded fails alone), their events concatenated, and analysed together: the
analysis is per event, so an event's products do not depend on the events it is
analysed with (the cluster tests compare with ``analyze`` of whole files).

The dataset returned is normalised for the store (:func:`normalise_for_store`):
fixed-width strings become variable-length strings, uniform time axes given by
formula are replaced by their terms (:mod:`idexdask.timeaxis`), and
``input_index`` records which input each event came from.

A Dask worker keeps the memory of the merged TOF spectrum between the packs it
analyses (:class:`AnalysisBuffers`, one
:class:`~idexdask.analysis.tof.MergeBuffers` per thread): a lab pack's 64 MB
is then faulted in once per worker, not once per pack.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from idexdask.adccodes import recorded_codes
from idexdask.compat.lazy import lazy_selection
from idexdask.errors import ConfigError, IdexDaskError
from idexdask.pipeline.ragged import event_major_peaks
from idexdask.schema import freeze
from idexdask.sources import Unit, sources
from idexdask.timeaxis import compact_axes, concat_axis, is_formula_axis

if TYPE_CHECKING:
    from idexdask.analysis.tof import MergeBuffers
    from idexdask.workflow.analyze import AnalysisProducts

__all__ = ["BUFFERS_PLUGIN", "LEVEL_ATTR", "AnalysisBuffers", "ProcessedUnits",
           "normalise_for_store", "process_unit", "process_units", "worker_buffers"]

logger = logging.getLogger(__name__)

LEVEL_ATTR = "product_level"
"""Variable attribute saying which product a stored variable belongs to: ``l1a``
(decoded by the reader) or ``l2a`` (made by the analysis); the CDF exports
split on it."""


#: name under which a Dask worker keeps its :class:`AnalysisBuffers` (``worker.plugins``)
BUFFERS_PLUGIN = "idexdask-analysis-buffers"


class AnalysisBuffers:
    """The memory a Dask worker keeps between the packs it analyses.

    A worker plugin (duck-typed: no hooks): :func:`worker_buffers` places one
    in ``worker.plugins`` when a worker analyses its first pack, and it lives
    as long as the worker.  Each of the worker's threads gets buffers of its
    own (a thread analyses one pack at a time: the merged spectrum of a pack
    is dead once its analysis returns).  ~64 MB per thread for lab packs of
    16 impacts, the size of one pack's merged spectrum.
    """

    name = BUFFERS_PLUGIN

    def __init__(self) -> None:
        self._threads = threading.local()

    def merge(self) -> MergeBuffers:
        """This thread's buffers of the TOF gain merge (made on first use)."""
        buffers = getattr(self._threads, "merge", None)
        if buffers is None:
            from idexdask.analysis.tof import MergeBuffers  # noqa: PLC0415 - the analysis's

            buffers = self._threads.merge = MergeBuffers()
        return buffers


def worker_buffers() -> MergeBuffers | None:
    """The calling thread's merge buffers kept by its Dask worker; None outside a
    worker (the analysis then allocates afresh)."""
    try:
        from distributed import get_worker  # noqa: PLC0415 - only within a worker

        worker = get_worker()
    except (ImportError, ValueError):  # no distributed, or not in a Dask worker
        return None
    kept = worker.plugins.get(BUFFERS_PLUGIN)
    if not isinstance(kept, AnalysisBuffers):
        kept = worker.plugins[BUFFERS_PLUGIN] = AnalysisBuffers()
    return kept.merge()


def decode_unit(unit: Unit) -> xr.Dataset:
    """Decode the unit's input (no analysis); every variable tagged ``l1a`` (:data:`LEVEL_ATTR`).

    Raises
    ------
    IdexDaskError
        If the input cannot be read or decoded.
    """
    dataset = sources.by_kind(unit.kind).read_unit(unit)
    for variable in dataset.variables.values():
        variable.attrs[LEVEL_ATTR] = "l1a"
    return dataset


@dataclass
class ProcessedUnits:
    """What :func:`process_units` made of a pack of units.

    Attributes
    ----------
    dataset : xarray.Dataset or None
        The events of the units in ``done``, in that order (None if none).
    done : tuple of Unit
        Units whose events are in ``dataset``, in pack order.
    failures : dict
        ``{uid: reason}`` of the units that could not be processed.
    attrs : dict
        ``{uid: attributes}``: each decoded unit's scalar dataset attributes
        (packet counts, source name, ...), for the manifest.
    overrides_hash : dict
        ``{uid: digest}`` of the override rows applied to each decoded unit's
        events (:func:`idexdask.analysis.overrides.override_digest`; ``""``: none).
    """

    dataset: xr.Dataset | None
    done: tuple[Unit, ...] = ()
    failures: dict[str, str] = field(default_factory=dict)
    attrs: dict[str, dict[str, Any]] = field(default_factory=dict)
    overrides_hash: dict[str, str] = field(default_factory=dict)


def _scalar_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k): v for k, v in attrs.items() if isinstance(v, str | int | float)}


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(np.all(a == b))
    except (TypeError, ValueError):
        return False


def concat_events(parts: Sequence[xr.Dataset]) -> xr.Dataset:
    """Concatenate event datasets of the same variables along ``epoch``.

    What ``xr.concat(parts, "epoch", data_vars="minimal", coords="minimal",
    compat="override", join="override", combine_attrs="drop_conflicts")`` gives,
    in a third of its time (one ``numpy.concatenate`` per variable): variables
    without ``epoch`` come from the first part; dataset attributes are those all
    parts share.  Event times may repeat (two files holding the same events).

    Raises
    ------
    IdexDaskError
        If the parts do not hold the same variables.
    """
    first = parts[0]
    if len(parts) == 1:
        return first
    names = list(first.variables)
    for part in parts[1:]:
        if list(part.variables) != names:
            raise IdexDaskError("units of one task decode to different variables")
    variables: dict[str, xr.Variable] = {}
    axes = []
    for name, variable in first.variables.items():
        if is_formula_axis(variable):
            axes.append(str(name))  # rebuilt over the concatenated terms below
            variables[str(name)] = variable
        elif "epoch" in variable.dims:
            axis = variable.dims.index("epoch")
            values = np.concatenate([p.variables[name].values for p in parts], axis=axis)
            variables[str(name)] = xr.Variable(variable.dims, values, attrs=variable.attrs,
                                               encoding=variable.encoding)
        else:
            variables[str(name)] = variable
    for name in axes:
        variables[name] = concat_axis(variables[name], variables)
    attrs = {
        k: v for k, v in first.attrs.items()
        if all(k in p.attrs and _same(p.attrs[k], v) for p in parts[1:])
    }
    return _in_order(variables, first, attrs)


def _in_order(
    variables: Mapping[str, xr.Variable],
    like: xr.Dataset,
    attrs: Mapping[str, Any],
    dropped: Collection[str] = (),
    coord_names: Collection[str] = (),
) -> xr.Dataset:
    """One Dataset of ``variables`` in their order, ``like``'s coordinates kept as such.

    One constructor call (each ``assign`` or ``drop_vars`` copies and re-merges
    all ~270 variables): a variable named after its dimension becomes that
    index again; ``like``'s other coordinates, except ``dropped``, and
    ``coord_names`` are marked.
    """
    out = xr.Dataset(variables, attrs=attrs)
    others = [k for k in like.coords if k not in like.dims and k not in dropped]
    others += [k for k in coord_names if k in variables and k not in others]
    return out.set_coords(others) if others else out


@dataclass
class _Events:
    """The variables of one event Dataset, before they are assembled into it."""

    variables: dict[str, xr.Variable]
    like: xr.Dataset  #: the decoded events (their coordinates and attributes)
    coord_names: tuple[str, ...]  #: further non-index coordinates
    attrs: dict[str, Any]

    @classmethod
    def of(cls, dataset: xr.Dataset) -> _Events:
        """A Dataset's own variables, coordinates and attributes."""
        return cls({str(k): v for k, v in dataset.variables.items()}, dataset, (),
                   dict(dataset.attrs))


def _analysis_products(
    dataset: xr.Dataset, config: Mapping[str, Any], overrides: xr.Dataset | None = None,
    *, defer_targeted: bool = False, buffers: MergeBuffers | None = None,
) -> AnalysisProducts:
    """:func:`idexdask.analysis.analysis_products` (imported when first needed)."""
    from idexdask.workflow.analyze import analysis_products  # noqa: PLC0415

    return analysis_products(dataset, config, overrides=overrides,
                             defer_targeted=defer_targeted, buffers=buffers)


def _analysed(
    dataset: xr.Dataset, config: Mapping[str, Any], n_events: int,
    overrides: xr.Dataset | None = None, buffers: MergeBuffers | None = None,
) -> _Events:
    """The analysis of ``dataset`` (when enabled), checked to keep every event.

    The products are not assembled into a Dataset here: :func:`_normalised`
    builds the one Dataset of the result (each assembly of ~270 variables
    costs ~15 ms).
    """
    if not bool(config.get("pipeline", {}).get("analyze", True)):
        return _Events.of(dataset)
    if overrides is not None and overrides.sizes.get("override", 0):
        from idexdask.analysis.overrides import overrides_for  # noqa: PLC0415

        # the rows of these events only: the campaign's others would each be logged
        overrides = overrides_for(overrides, dataset.variables["epoch"].values)
    from idexdask.pipeline.campaign_config import pack_config, recalibrates  # noqa: PLC0415

    # each event calibrated on its own here; the campaign step of the run
    # (idexdask.pipeline.recalibrate) calibrates every input's events together
    # and searches the targeted species at the times of that calibration, so
    # the pack leaves that search's values to it (their layout is kept)
    # the run's configuration is validated (process_units' contract): frozen as it
    # is, the analysis does not validate it again (~4 ms per pack)
    products = _analysis_products(dataset, freeze(pack_config(config)), overrides,
                                  defer_targeted=recalibrates(config), buffers=buffers)
    for name, variable in products.variables.items():
        if "epoch" in variable.dims and variable.sizes["epoch"] != n_events:
            raise IdexDaskError(
                f"the analysis returned {variable.sizes['epoch']} events of {n_events} "
                f"({name})"
            )
    return _Events(
        products.merged_with(dataset),
        dataset,
        tuple(products.coord_names),
        {**dataset.attrs, **products.attrs},
    )


def process_units(
    units: Sequence[Unit], config: Mapping[str, Any], overrides: xr.Dataset | None = None,
    *, buffers: MergeBuffers | None = None,
) -> ProcessedUnits:
    """Decode a pack of units, analyse their events together, normalise for the store.

    Parameters
    ----------
    units : sequence of Unit
        Consecutive planned units (one task's pack).
    config : mapping
        The validated run configuration (:func:`idexdask.config.load_config`).
    overrides : xarray.Dataset, optional
        The store's override table (rows in force); each event gets its rows.
    buffers : MergeBuffers, optional
        Memory kept between packs for the merged TOF spectrum; by default the
        Dask worker's (:func:`worker_buffers`), none outside a worker.

    Returns
    -------
    ProcessedUnits
        The events of every unit that could be processed, and why the others
        could not (unreadable or changed input, an event count other than
        planned).  Should the analysis of the whole pack raise, each unit is
        analysed alone, so that only the unit at fault fails.
    """
    max_peaks = int(config.get("pipeline", {}).get("max_peaks_per_event", 64))
    buffers = worker_buffers() if buffers is None else buffers
    result = ProcessedUnits(dataset=None)
    # (unit, its events); of a joint read, the unit's row (its events, a view
    # made only if the pack fails together: ~0.5 ms each)
    decoded: list[tuple[Unit, xr.Dataset | int]] = []
    joint = _read_jointly(units)
    if joint is not None:  # every impact of the pack in one read: no copy to concatenate
        attrs = _scalar_attrs(joint.attrs)
        epochs = joint.variables["epoch"].values
        for index, unit in enumerate(units):
            result.attrs[unit.uid] = dict(attrs)
            result.overrides_hash[unit.uid] = _overrides_hash(overrides,
                                                              epochs[index : index + 1])
            decoded.append((unit, index))
    for unit in units if joint is None else ():
        try:
            dataset = decode_unit(unit)
        except IdexDaskError as exc:
            result.failures[unit.uid] = str(exc)
            continue
        n_decoded = dataset.sizes.get("epoch", 0)
        if n_decoded != unit.n_events:
            result.failures[unit.uid] = (
                f"{unit.uid}: decoded {n_decoded} events where the plan counted {unit.n_events}"
            )
            continue
        result.attrs[unit.uid] = _scalar_attrs(dataset.attrs)
        result.overrides_hash[unit.uid] = _overrides_hash(overrides,
                                                          dataset.variables["epoch"].values)
        decoded.append((unit, dataset))
    if not decoded:
        return result
    try:
        events = joint if joint is not None else concat_events(
            [d for _, d in decoded if isinstance(d, xr.Dataset)])
        analysed = _analysed(events, config, sum(u.n_events for u, _ in decoded), overrides,
                             buffers)
        done = [u for u, _ in decoded]
        result.dataset = _normalised(analysed, _input_indices(done), max_peaks=max_peaks)
        result.done = tuple(done)
        return result
    except ConfigError:
        raise  # the same for every unit: a configuration mistake, not a unit's data
    except IdexDaskError as exc:
        if len(decoded) == 1:
            result.failures[decoded[0][0].uid] = str(exc)
            return result
        logger.warning("a pack of %d units failed together (%s); processing them one by one",
                       len(decoded), exc)
    parts, done = [], []
    for unit, dataset in decoded:  # one by one: only the unit at fault fails
        if joint is not None:  # the unit's row of the joint read
            dataset = joint.isel(epoch=slice(int(dataset), int(dataset) + 1))
        try:
            analysed = _analysed(dataset, config, unit.n_events, overrides, buffers)
            parts.append(_normalised(analysed, unit.input_index, max_peaks=max_peaks))
            done.append(unit)
        except ConfigError:
            raise
        except IdexDaskError as exc:
            result.failures[unit.uid] = str(exc)
    if parts:
        try:
            result.dataset = concat_events(parts)
            result.done = tuple(done)
        except IdexDaskError as exc:  # analysed alone, they differ in schema
            result.failures.update({u.uid: str(exc) for u in done})
    return result


def _read_jointly(units: Sequence[Unit]) -> xr.Dataset | None:
    """The units' events in one read of their source (:meth:`~idexdask.sources.Source.read_units`),
    or None: read one by one."""
    kinds = {u.kind for u in units}
    if len(kinds) != 1:
        return None
    return sources.by_kind(kinds.pop()).read_units(units)


def _overrides_hash(overrides: xr.Dataset | None, epochs: np.ndarray) -> str:
    """Digest of the override rows of a unit's events, their ``epochs`` (``""`` without any)."""
    if overrides is None or overrides.sizes.get("override", 0) == 0:
        return ""
    from idexdask.analysis.overrides import override_digest  # noqa: PLC0415

    return override_digest(overrides, epochs)


def _input_indices(units: Sequence[Unit]) -> np.ndarray:
    return np.repeat(
        np.array([u.input_index for u in units], dtype=np.int32),
        [u.n_events for u in units],
    )


def process_unit(unit: Unit, config: Mapping[str, Any]) -> xr.Dataset:
    """Decode one unit and apply the science analysis (:func:`process_units` of one unit).

    The analysis runs unless ``pipeline.analyze`` is false.

    Parameters
    ----------
    unit : Unit
        A planned unit (byte range of an L0 file, or one lab impact).
    config : mapping
        The validated run configuration (:func:`idexdask.config.load_config`).

    Returns
    -------
    xarray.Dataset
        ``unit.n_events`` events along ``epoch``, ready for the store.

    Raises
    ------
    IdexDaskError
        If the input cannot be decoded or the event count differs from the plan.
    """
    processed = process_units([unit], config)
    if unit.uid in processed.failures:
        raise IdexDaskError(processed.failures[unit.uid])
    assert processed.dataset is not None
    return processed.dataset


def normalise_for_store(
    dataset: xr.Dataset, input_index: int | np.ndarray, *, max_peaks: int = 64
) -> xr.Dataset:
    """Make a unit's dataset storable by region: variable-length strings, input index.

    Parameters
    ----------
    dataset : xarray.Dataset
        Event dataset (dimension ``epoch``).
    input_index : int or numpy.ndarray
        Index of the input the events come from (one, or one per event).
    max_peaks : int
        ``peak_slot`` capacity per event (config ``pipeline.max_peaks_per_event``).

    Returns
    -------
    xarray.Dataset
        The same data; ``U``/``S`` variables as object (variable-length UTF-8 in
        Zarr v3, so units with longer strings fit the store), the ragged
        ``peak`` products event-major (:mod:`idexdask.pipeline.ragged`), plus
        ``input_index`` (epoch,) int32; every variable's attribute
        :data:`LEVEL_ATTR` says whether the reader made it (``l1a``) or the
        analysis (``l2a``): a variable keeps its tag; untagged ones are ``l2a``
        where others are tagged, else (a reader's output) ``l1a``.
    """
    return _normalised(_Events.of(dataset), input_index, max_peaks=max_peaks)


def _lazy_codes(variable: xr.Variable) -> bool:
    """Whether ``variable`` is a waveform whose volts are still undecoded over the
    int16 codes its reader kept (:func:`idexdask.adccodes.recorded_codes`)."""
    return lazy_selection(variable) is not None and recorded_codes(variable) is not None


def _normalised(events: _Events, input_index: int | np.ndarray, *, max_peaks: int) -> xr.Dataset:
    """:func:`normalise_for_store` of ``events``, assembled into one Dataset."""
    n_events = events.like.sizes.get("epoch", 0)
    event_major = event_major_peaks(events.variables, n_events, max_peaks)
    dropped, added = event_major if event_major is not None else ([], {})
    skip = set(dropped)
    # every variable in its place (decoded, analysis products, event-major lines)
    # built into ONE Dataset: each assign or drop_vars re-merges all ~270 (~7 ms)
    # a variable's level is its tag (decode_unit tags what the readers return);
    # untagged variables beside tagged ones were added by the analysis, and a
    # dataset with no tag at all is a reader's output
    tagged = any(LEVEL_ATTR in v.attrs for v in events.variables.values())
    untagged = "l2a" if tagged else "l1a"
    variables: dict[str, xr.Variable] = {}
    for name, variable in events.variables.items():
        if name in skip:
            continue
        level = variable.attrs.get(LEVEL_ATTR, untagged)
        if is_formula_axis(variable) or _lazy_codes(variable):
            # kept lazy (``.data`` would materialise 4 MB per event of a scope
            # axis, or decode a waveform whose volts no one asked for):
            # compact_axes below stores an axis's terms, the store a waveform's
            # recorded codes, never their values
            lazy = variable.copy(deep=False)
            lazy.attrs = {**variable.attrs, LEVEL_ATTR: level}
            variables[name] = lazy
            continue
        values = variable.data
        if variable.dtype.kind in "US":
            values = variable.values.astype(str).astype(object)
        # the encoding travels too: a waveform's ADC-code scale (idexdask.adccodes)
        # is what makes the store keep its int16 codes
        variables[name] = xr.Variable(variable.dims, values,
                                      attrs={**variable.attrs, LEVEL_ATTR: level},
                                      encoding=variable.encoding)
    variables.update({name: xr.Variable(v.dims, v.data, attrs={**v.attrs, LEVEL_ATTR: "l2a"})
                      for name, v in added.items()})
    variables = compact_axes(variables)  # uniform time axes: stored as their terms
    variables["input_index"] = xr.Variable(
        ("epoch",),
        np.broadcast_to(np.asarray(input_index, dtype=np.int32), (n_events,)).copy(),
        attrs={"long_name": "index of the input file in the store attribute 'inputs'",
               LEVEL_ATTR: "l1a"},
    )
    return _in_order(variables, events.like, events.attrs, skip, events.coord_names)
