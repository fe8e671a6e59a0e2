"""The source contract: one class per input kind, registered when it is defined.

A source is what the rest of the package knows of an input kind.  A subclass of
:class:`Source` that sets :attr:`Source.kind` is entered in
:attr:`Source.registry` as it is defined (as sunpy's map sources are); the
factory (:mod:`idexdask.sources.factory`) asks every registered source whether
it reads a path, and the planner, the unit function and the commands call the
source that does.  A new input kind is one new module with one subclass, and an
import in :mod:`idexdask.sources`.

What a source provides:

* detection: :meth:`Source.is_source_for` (a path) and
  :meth:`Source.is_source_of` (a decoded event dataset, by its attributes);
* planning: :meth:`Source.plan` cuts one input into units whose event counts
  are exact (the store is laid out before any unit runs);
* reading: :meth:`Source.read_unit` decodes one unit into the event dataset,
  :meth:`Source.read_units` several at once where that is cheaper, and
  :meth:`Source.read` a whole input (a command on one file);
* defaults: :meth:`Source.defaults`, what the source's data are calibrated
  and channel-mapped with unless the configuration says otherwise.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import xarray as xr

from idexdask.errors import InputError
from idexdask.sources.unit import Unit

__all__ = ["Source", "SourceDefaults", "next_cut"]


@dataclass(frozen=True)
class SourceDefaults:
    """What a source's data are processed with unless the configuration says otherwise.

    Attributes
    ----------
    calibration_preset : str
        Preset of ``configs/calibration.yaml`` for ``calibration.preset: auto``
        (overridden per source kind by ``calibration.source_presets``).
    channel_map : str
        Where the waveform channels' names and polarities come from.
    """

    calibration_preset: str
    channel_map: str


class Source:
    """Base class of the input kinds (see the module docstring).

    Attributes
    ----------
    kind : str
        Short name recorded in units, plans and store metadata (``l0``).
    source_kind : str
        The ``source_kind`` attribute of the datasets it decodes (``idex_l0``);
        the key of ``calibration.source_presets``.
    family : str
        Inputs of one family decode to the same variables and may share a
        store (``events``: telemetry; ``lab``: scope captures).
    description : str
        One line for error messages and the docs.
    directories : bool
        Its inputs are directories (a lab impact is several files), not files.
    heavy_events : bool
        An event holds many flight events' worth of samples: tasks and store
        chunks hold ``pipeline.lab_batch_events`` of them.
    registry : dict
        Every registered source by :attr:`kind` (shared by all subclasses).
    """

    kind: ClassVar[str] = ""
    source_kind: ClassVar[str] = ""
    family: ClassVar[str] = "events"
    description: ClassVar[str] = ""
    directories: ClassVar[bool] = False
    heavy_events: ClassVar[bool] = False
    registry: ClassVar[dict[str, type[Source]]] = {}

    def __init_subclass__(cls, register: bool = True, **kwargs: Any) -> None:
        """Enter a subclass that names its :attr:`kind` in :attr:`registry`.

        ``register=False`` keeps a subclass out (tests build ambiguous sources
        and give them to a :class:`~idexdask.sources.factory.SourceFactory` of
        their own).
        """
        super().__init_subclass__(**kwargs)
        if not register or not cls.kind:
            return
        if cls.kind in Source.registry and Source.registry[cls.kind] is not cls:
            raise TypeError(f"two sources of kind {cls.kind!r}: "
                            f"{Source.registry[cls.kind].__name__} and {cls.__name__}")
        Source.registry[cls.kind] = cls

    # ------------------------------------------------------------------ detection

    @classmethod
    def is_source_for(cls, path: Path) -> bool:
        """Whether this source reads the input ``path`` (a file or a directory)."""
        raise NotImplementedError

    @classmethod
    def is_source_of(cls, attrs: Mapping[str, Any], variables: Collection[str] = ()) -> bool:
        """Whether an event dataset (its attributes and variable names) came from this source."""
        return attrs.get("source_kind") == cls.source_kind

    # ------------------------------------------------------------------ planning

    @classmethod
    def plan(
        cls, path: Path, batch_events: int, input_index: int = 0, *,
        first_row: int = 0, align: int | None = None,
    ) -> list[Unit]:
        """Cut one input into units of about ``batch_events`` events.

        Parameters
        ----------
        path : pathlib.Path
            The input (absolute).
        batch_events : int
            Target events per unit.
        input_index : int
            Position of the input among the run's inputs.
        first_row : int
            Store row of the input's first event (with ``align``).
        align : int, optional
            Store events per chunk: units end on chunk boundaries where they can.

        Returns
        -------
        list of Unit
            In input order, ``region`` not yet assigned; empty if the input is
            valid but holds no event.

        Raises
        ------
        IdexDaskError
            If the input cannot be read or is not of this kind (the planner
            records it as a failed input).
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ reading

    @classmethod
    def read_unit(cls, unit: Unit) -> xr.Dataset:
        """Decode one planned unit into its events (no analysis).

        Raises
        ------
        IdexDaskError
            If the input cannot be read, changed since it was planned, or is bad.
        """
        raise NotImplementedError

    @classmethod
    def read_units(cls, units: Sequence[Unit]) -> xr.Dataset | None:
        """The events of several units in one read, in unit order, or None.

        None (the default) means: read them one by one with :meth:`read_unit`,
        so that a unit whose input is bad fails alone.
        """
        return None

    @classmethod
    def read(cls, path: Path) -> xr.Dataset:
        """Decode a whole input (every event of the file or directory)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ defaults

    @classmethod
    def defaults(cls) -> SourceDefaults:
        """The source's default calibration preset and channel map."""
        raise NotImplementedError

    @classmethod
    def check_input(cls, path: Path) -> None:
        """Refuse an input of this kind given in a form a campaign cannot plan.

        Raises
        ------
        InputError
            A directory source given a file.
        """
        if cls.directories and not path.is_dir():
            raise InputError(f"{path}: give {cls.description} as a directory "
                                "(one impact is several files)")


def next_cut(done: int, batch_events: int, first_row: int, align: int | None) -> int:
    """Events of an input before which the next unit should end.

    Parameters
    ----------
    done : int
        Events of the input already in units.
    batch_events : int
        Target events per unit.
    first_row : int
        Store row of the input's first event.
    align : int, optional
        Store events per chunk.

    Returns
    -------
    int
        ``done + batch_events``, or the last chunk boundary at or before it
        (the next one if there is none) where ``1 < align <= batch_events``.
    """
    want = done + max(1, int(batch_events))
    if not align or align <= 1 or align > batch_events:
        return want  # units smaller than a chunk share chunks whatever the cuts
    # the last chunk boundary at or before the target: an input starting inside
    # a chunk gets a short first unit up to the next boundary, which the
    # planner's pack_units joins to the previous input's last unit (one task,
    # one chunk)
    aligned = ((first_row + want) // align) * align - first_row
    while aligned <= done:
        aligned += align
    return aligned
