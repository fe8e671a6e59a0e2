"""Planning: inputs -> units of work, each with an exact event count.

The store is laid out before any unit runs (every task writes its own region of a
store of the full size), so the planner must know how many events each unit will
return.  Every input's source (:mod:`idexdask.sources`) finds that out cheaply
and cuts the input into units (:meth:`idexdask.sources.Source.plan`): L0 files
at header packets between whole events, L1a CDFs every ``batch_events``
records, LeCroy capture directories one unit per impact.  Each unit carries a
digest of its input bytes, so that a re-run can tell whether the unit done
before is still the same work.

Units are what the manifest journals; tasks are *packs* of consecutive units
(:func:`pack_units`): the small units of short files (a day of telemetry may
hold a dozen events; a lab impact is one) are processed together, so that every
task amortises the per-call costs of decoding, analysis and the region write
over about ``batch_events`` events, and packs end on chunk boundaries of the
store wherever the units allow it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from idexdask.errors import IdexDaskError
from idexdask.sources import Unit, sources

__all__ = [
    "Plan", "PlanFailure", "Unit", "balanced_rows", "batch_sizes", "heavy_events", "pack_units",
    "plan_inputs",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanFailure:
    """An input that could not even be planned (unreadable, no events)."""

    path: str
    input_index: int
    reason: str

    @property
    def uid(self) -> str:
        return f"{self.path}@plan"


@dataclass
class Plan:
    """The units of a run, in store order, and the inputs that failed planning.

    ``empty`` lists valid inputs without science events (housekeeping files).
    """

    inputs: list[str]
    units: list[Unit] = field(default_factory=list)
    failures: list[PlanFailure] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)

    @property
    def n_events(self) -> int:
        """Total events of all units (rows of the store)."""
        return self.units[-1].region[1] if self.units else 0

    @property
    def kinds(self) -> list[str]:
        """Source kinds of the units, sorted (:attr:`idexdask.sources.Source.kind`)."""
        return sorted({u.kind for u in self.units})

    @property
    def kind(self) -> str:
        """The units' source kind; kinds joined by ``+`` when inputs of several
        sources share the store (``cdf+l0``)."""
        return "+".join(self.kinds)


def batch_sizes(
    plan: Plan, batch_events: int, chunk_events: int, lab_batch_events: int
) -> tuple[int, int]:
    """Events per task (pack) and per store chunk for ``plan``.

    Lab impacts hold ~80 flight events' worth of samples each: their packs and
    chunks are at most ``lab_batch_events`` (and ``batch_events``), so that a
    campaign of a few hundred impacts is spread over the workers and a task's
    memory stays near that of a flight task.  The campaign's impacts are cut
    into as few packs as that allows, of sizes as equal as the count allows
    (:func:`balanced_rows`): the last chunk of the store holds at most one fill
    row per chunk, where the fill rows of a per-sample array stored without
    compression (the combined TOF, ``lz4-bitshuffle-raw-f32``) would take their
    full bytes, and no pack is left with a few impacts for one worker at the end.

    Returns
    -------
    (int, int)
        ``(batch_events, chunk_events)`` to use.
    """
    if heavy_events(plan):
        n = balanced_rows(plan.n_events, min(int(batch_events), int(lab_batch_events)))
        return n, n
    return int(batch_events), int(chunk_events)


def balanced_rows(n_events: int, most: int) -> int:
    """Events per chunk that cut ``n_events`` into the fewest chunks of at most
    ``most`` events, the chunks as full as possible.

    ``ceil(n / ceil(n / most))``: 384 impacts in chunks of at most 16 give 16
    (24 full chunks), 17 give 9 (two chunks, one fill row), 3 give 3.
    """
    most = max(1, int(most))
    n_events = max(1, int(n_events))
    chunks = -(-n_events // most)
    return -(-n_events // chunks)


def heavy_events(plan: Plan) -> bool:
    """Whether ``plan`` holds lab impacts (a source whose events are heavy):
    they get the lab pack size and the lab compressor."""
    return any(sources.by_kind(kind).heavy_events for kind in plan.kinds)


def pack_units(
    units: Sequence[Unit], batch_events: int, align: int | None = None
) -> list[tuple[Unit, ...]]:
    """Group consecutive units into packs of about ``batch_events`` events, one task each.

    A pack holds units whose store regions follow each other without a gap (the
    units still to do of a resumed run may not), in plan order.  It is closed
    once it holds at least ``batch_events`` events and either ends on a
    multiple of ``align`` (a chunk boundary of the store: the pack then shares
    no chunk with the next one), or would exceed ``2 * batch_events`` with the
    next unit.  A unit larger than that is a pack of its own.

    Parameters
    ----------
    units : sequence of Unit
        Planned units (``region`` assigned), in store order.
    batch_events : int
        Target events per pack.
    align : int, optional
        Store events per chunk.

    Returns
    -------
    list of tuple of Unit
        Every unit exactly once, in the given order.
    """
    target = max(1, int(batch_events))
    align = int(align) if align and align > 1 else 1
    packs: list[tuple[Unit, ...]] = []
    current: list[Unit] = []
    events = 0
    for index, unit in enumerate(units):
        if current and unit.region[0] != current[-1].region[1]:
            packs.append(tuple(current))  # a gap (units done before): never bridged
            current, events = [], 0
        current.append(unit)
        events += unit.n_events
        following = units[index + 1] if index + 1 < len(units) else None
        if events < target:
            continue
        aligned = unit.region[1] % align == 0
        too_big = following is None or events + following.n_events > 2 * target
        if aligned or too_big:
            packs.append(tuple(current))
            current, events = [], 0
    if current:
        packs.append(tuple(current))
    return packs


# --------------------------------------------------------------------------- plan


def plan_inputs(
    inputs: Sequence[str | Path], batch_events: int, *, align: int | None = None
) -> Plan:
    """Plan a run: every input's units with their exact event counts and store regions.

    Parameters
    ----------
    inputs : sequence of path
        Inputs of any registered source, or directories of them
        (:meth:`idexdask.sources.SourceFactory.detect`).
    batch_events : int
        Target events per unit.
    align : int, optional
        Store events per chunk: units are cut at chunk boundaries where their
        source can (:meth:`idexdask.sources.Source.plan`).

    Returns
    -------
    Plan
        Units in store order (by input, then by position in the input), each with
        its ``region``; inputs that cannot be read or hold no event are listed in
        ``failures``; valid inputs without events in ``empty``.

    Raises
    ------
    InputError
        If an input is missing, no source or several claim it, or the inputs
        cannot share a store.
    """
    found = sources.detect(inputs)
    plan = Plan(inputs=[str(f.path) for f in found])
    row = 0
    for input_index, item in enumerate(found):
        try:
            units = item.source.plan(item.path, batch_events, input_index, first_row=row,
                                     align=align)
        except IdexDaskError as exc:
            plan.failures.append(PlanFailure(str(item.path), input_index, str(exc)))
            continue
        if not units:
            plan.empty.append(str(item.path))
            continue
        for unit in units:
            plan.units.append(replace(unit, region=(row, row + unit.n_events)))
            row += unit.n_events
    logger.info(
        "planned %d events in %d units from %d inputs (%d failed)",
        row, len(plan.units), len(found), len(plan.failures),
    )
    return plan
