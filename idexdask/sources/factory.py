"""Which source reads an input: the factory that refuses what none or several claim.

:class:`SourceFactory` asks every source of a registry whether it reads a path
(:meth:`~idexdask.sources.Source.is_source_for`), as sunpy's ``Map`` factory asks
its map sources: exactly one must claim an input.  A directory is one input when
a directory source claims it (a LeCroy capture directory), else the files in it
are the inputs, and a file in a directory that no source claims is left out
(an XTCE definition beside the telemetry).  :data:`sources` is the factory of
every registered source.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idexdask.errors import InputError
from idexdask.sources.base import Source

__all__ = ["SourceFactory", "SourceInput", "sources"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceInput:
    """One input of a run and the source that reads it.

    Attributes
    ----------
    source : type[Source]
        The source class.
    path : pathlib.Path
        The input file or directory (absolute).
    """

    source: type[Source]
    path: Path

    @property
    def kind(self) -> str:
        """The source's :attr:`~idexdask.sources.Source.kind`."""
        return self.source.kind


class SourceFactory:
    """Detects the source of inputs among those of ``registry``.

    Parameters
    ----------
    registry : mapping of str to type[Source]
        Sources by kind; read when asked, so that sources registered later
        (a plug-in's) take part.
    """

    def __init__(self, registry: Mapping[str, type[Source]]) -> None:
        self._registry = registry

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds of the registered sources."""
        return tuple(self._registry)

    def claims(self, path: Path) -> list[type[Source]]:
        """Every source that says it reads ``path``."""
        return [source for source in self._registry.values() if source.is_source_for(path)]

    def source_for(self, path: str | Path) -> type[Source]:
        """The one source that reads the input ``path``.

        Raises
        ------
        InputError
            If ``path`` does not exist, no source reads it, or several claim it.
        """
        path = Path(path)
        if not path.exists():
            raise InputError(f"input not found: {path}")
        claimed = self.claims(path)
        if not claimed:
            raise InputError(
                f"{path}: no source reads this input (known: "
                + "; ".join(f"{s.kind}: {s.description}" for s in self._registry.values())
                + ")"
            )
        if len(claimed) > 1:
            raise InputError(f"{path}: several sources claim this input: "
                             + ", ".join(f"{s.kind} ({s.__name__})" for s in claimed))
        return claimed[0]

    def by_kind(self, kind: str) -> type[Source]:
        """The source of ``kind`` (a unit's or a store's).

        Raises
        ------
        InputError
            If no registered source has that kind.
        """
        try:
            return self._registry[kind]
        except KeyError:
            raise InputError(f"no source of kind {kind!r} (have {sorted(self._registry)})") \
                from None

    def of_dataset(
        self, attrs: Mapping[str, Any], variables: Collection[str] = ()
    ) -> type[Source] | None:
        """The source an event dataset came from (by its attributes), or None if none says."""
        found = [s for s in self._registry.values() if s.is_source_of(attrs, variables)]
        return found[0] if len(found) == 1 else None

    def detect(self, inputs: Sequence[str | Path]) -> list[SourceInput]:
        """The inputs of a run, each with its source, in the order given.

        A directory that a directory source claims is one input; any other
        directory contributes the files in it (sorted) that a source claims.
        An input given twice is kept once.

        Raises
        ------
        InputError
            If an input does not exist, is claimed by no source or by several,
            is in a form its source cannot plan, nothing is found, or the inputs
            mix families (lab captures and telemetry cannot share a store).
        """
        found: list[SourceInput] = []
        for item in inputs:
            path = Path(item).resolve()
            if path.is_dir() and not any(s.directories for s in self.claims(path)):
                found.extend(self._files_of(path))
                continue
            source = self.source_for(path)
            source.check_input(path)
            found.append(SourceInput(source, path))
        found = list(dict.fromkeys(found))
        if not found:
            raise InputError("no input files found")
        families = {f.source.family for f in found}
        if len(families) > 1:
            raise InputError(
                "the inputs mix families that cannot share a store ("
                + ", ".join(sorted({f"{f.source.family}: {f.source.description}"
                                    for f in found}))
                + "); submit them to separate stores"
            )
        return found

    def _files_of(self, directory: Path) -> list[SourceInput]:
        found = []
        for file in sorted(p for p in directory.iterdir() if p.is_file()):
            claimed = [s for s in self.claims(file) if not s.directories]
            if len(claimed) > 1:
                raise InputError(f"{file}: several sources claim this input: "
                                 + ", ".join(f"{s.kind} ({s.__name__})" for s in claimed))
            if claimed:
                found.append(SourceInput(claimed[0], file))
            else:
                logger.debug("%s: no source reads it; left out", file)
        return found


sources = SourceFactory(Source.registry)
"""The factory of every registered source."""
