"""Events grouped by high-voltage setting (reflectron and target voltages within a tolerance).

A time-of-flight mass scale belongs to one high-voltage setting: the campaign-level
calibration fits one scale per group of :func:`group_by_high_voltage`.  The
voltages come from the instrument state (:mod:`idexdask.analysis.instrument`),
stored by ``analyze`` or computed from the header words.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import xarray as xr

from idexdask._logging import get_logger
from idexdask.analysis.instrument import instrument_state_variables
from idexdask.analysis.instrument_table import TableLike, load_instrument_table
from idexdask.errors import AnalysisError

__all__ = ["HighVoltageGroups", "group_by_high_voltage", "split_groups_by_high_voltage"]

_log = get_logger(__name__)


@dataclass(frozen=True)
class HighVoltageGroups:
    """Events grouped by high-voltage setting.

    Attributes
    ----------
    group : numpy.ndarray of int64
        (events,) group index of each event, -1 where a voltage is missing (NaN).
    voltages : tuple of str
        The quantities compared (e.g. ``reflectron_voltage``, ``target_voltage``).
    setting : numpy.ndarray of float64
        (groups, voltages) median of each voltage over the group's events, V.
    spread : numpy.ndarray of float64
        (groups, voltages) max - min of each voltage in the group, V.
    count : numpy.ndarray of int64
        (groups,) events per group.
    tolerance_v : float
        The tolerance used, V.
    """

    group: np.ndarray
    voltages: tuple[str, ...]
    setting: np.ndarray
    spread: np.ndarray
    count: np.ndarray
    tolerance_v: float

    @property
    def n_groups(self) -> int:
        """Number of settings found."""
        return int(self.count.size)

    def members(self, index: int) -> np.ndarray:
        """Event indices (into ``epoch``) of group ``index``."""
        return np.flatnonzero(self.group == index)


def _gap_clusters(values: np.ndarray, tolerance: float) -> np.ndarray:
    """1-D clusters: sorted values split where neighbours differ by more than ``tolerance``."""
    order = np.argsort(values, kind="stable")
    new = np.concatenate([[0], np.diff(values[order]) > tolerance]).astype(np.int64)
    labels = np.empty(values.size, dtype=np.int64)
    labels[order] = np.cumsum(new)
    return labels


def group_by_high_voltage(
    events: xr.Dataset,
    tolerance_v: float | None = None,
    voltages: Iterable[str] | None = None,
    table: TableLike = None,
) -> HighVoltageGroups:
    """Group events by high-voltage setting (reflectron and target voltages by default).

    Two events share a setting when, for every compared voltage, they are linked
    by a chain of events each within ``tolerance_v`` of the next (single linkage
    per voltage; gaps wider than the tolerance separate settings).  Readout
    noise (1.47 V per DN) stays within one setting; the ``spread`` of each group
    shows a slow drift that chains through.

    Parameters
    ----------
    events : xarray.Dataset
        A dataset holding the voltages (an :func:`instrument_state` result, an
        analysed dataset or a campaign store), or decoded events (the state is
        then computed from their header words).
    tolerance_v : float, optional
        Largest gap within one setting, V; default the table's
        ``high_voltage_groups.tolerance_v`` (25 V).
    voltages : iterable of str, optional
        Quantities compared; default the table's (``reflectron_voltage``,
        ``target_voltage``).
    table : InstrumentTable, path, mapping or None
        Conversion table; None: ``configs/instrument_state.yaml``.

    Returns
    -------
    HighVoltageGroups
        Groups numbered by increasing setting (first voltage, then the next);
        events with a missing voltage get group -1.

    Raises
    ------
    AnalysisError
        If the tolerance is not positive.
    """
    tab = load_instrument_table(table)
    names = tuple(voltages) if voltages is not None else tab.high_voltage_groups.voltages
    tol = float(tolerance_v if tolerance_v is not None else tab.high_voltage_groups.tolerance_v)
    if not np.isfinite(tol) or tol <= 0:
        raise AnalysisError(f"tolerance_v must be a positive number of volts, got {tolerance_v!r}")
    if not all(name in events.variables for name in names):
        state = instrument_state_variables(events, tab)
        columns = [np.asarray(state[name].values, dtype=np.float64) for name in names]
    else:
        columns = [np.asarray(events.variables[name].values, dtype=np.float64) for name in names]
    n = int(events.sizes.get("epoch", columns[0].size if columns else 0))
    values = np.stack(columns, axis=1) if n else np.zeros((0, len(names)))
    usable = np.all(np.isfinite(values), axis=1)
    group = np.full(n, -1, dtype=np.int64)
    if not usable.any():
        empty = np.zeros((0, len(names)))
        return HighVoltageGroups(group, names, empty, empty.copy(), np.zeros(0, np.int64), tol)
    good = values[usable]
    keys = np.stack([_gap_clusters(good[:, j], tol) for j in range(len(names))], axis=1)
    _, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    group[usable] = inverse
    n_groups = int(inverse.max()) + 1
    count = np.bincount(inverse, minlength=n_groups).astype(np.int64)
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(count)[:-1]])
    sorted_values = good[order]
    setting = np.empty((n_groups, len(names)))
    spread = np.empty((n_groups, len(names)))
    for j in range(len(names)):  # per voltage: reduce over the groups' contiguous slices
        col = sorted_values[:, j]
        setting[:, j] = [np.median(part) for part in np.split(col, starts[1:])]
        spread[:, j] = np.maximum.reduceat(col, starts) - np.minimum.reduceat(col, starts)
    _log.info(
        "%d events in %d high-voltage settings (tolerance %g V)", int(usable.sum()), n_groups, tol
    )
    return HighVoltageGroups(group, names, setting, spread, count, tol)


def split_groups_by_high_voltage(labels: np.ndarray, events: xr.Dataset) -> np.ndarray:
    """Calibration group labels: each group split by high-voltage setting.

    A time-of-flight mass scale belongs to one high-voltage setting, so events of
    one group (an input file) recorded at two settings (:func:`group_by_high_voltage`)
    never share one.  A group whose events are all of one setting, or whose
    voltages are missing (lab captures, a lost header packet), keeps its label; the
    parts of a split group are labelled ``"<label>:hv<k>"`` (``"<label>:hv-"`` for
    the events without voltages), ``k`` the setting number over all of ``events``.

    Parameters
    ----------
    labels : numpy.ndarray
        (E,) group label of each event (any type; compared as text).
    events : xarray.Dataset
        The same E events, with their voltages or header words (as
        :func:`group_by_high_voltage` takes them).

    Returns
    -------
    numpy.ndarray
        (E,) str labels.
    """
    labels = np.asarray(labels).astype(str)
    setting = group_by_high_voltage(events).group
    if setting.max(initial=-1) < 0:
        return labels
    setting_label = np.where(setting >= 0, np.char.add(":hv", setting.astype(str)), ":hv-")
    for label in np.unique(labels):
        members = labels == label
        if np.unique(setting[members]).size > 1:
            labels[members] = np.char.add(label, setting_label[members])
    return labels
