"""LeCroy oscilloscope captures of lab impacts, read by :func:`~idexdask.io.trc.read_trc`.

A capture directory is one input: an impact is several ``.trc`` files (one per
channel), grouped by the impact number of their names
(:func:`~idexdask.io.trc.parse_trc_filename`), and the channel names come from
the ``*settings*.txt`` beside them.  Every impact is one event and one unit.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import xarray as xr

from idexdask.errors import IdexDaskError
from idexdask.io.trc import parse_trc_filename, read_trc
from idexdask.sources.base import Source, SourceDefaults
from idexdask.sources.unit import Unit, digest_files

__all__ = ["LAZY_VOLTS", "LecroyCaptures"]

logger = logging.getLogger(__name__)

#: Waveforms a campaign's reads leave as their recorded codes, volts decoded only
#: where asked (``read_trc(lazy_volts=...)``): the pickup channels, which the
#: store writes as codes and the pickup reads as codes
#: (:func:`idexdask.adccodes.recorded_codes`); each one's volts cost ~0.2 ms of
#: CPU per impact to write (4 MB per 16-impact pack) where none asks for them.
LAZY_VOLTS = ("QD_1", "QD_2")


class LecroyCaptures(Source):
    """LeCroy captures of lab impacts: a directory of ``.trc`` files is one input."""

    kind = "trc"
    source_kind = "lecroy_trc"
    family = "lab"
    description = "LeCroy captures (.trc)"
    directories = True
    heavy_events = True
    suffixes: ClassVar[tuple[str, ...]] = (".trc",)

    @classmethod
    def is_source_for(cls, path: Path) -> bool:
        """A directory holding ``.trc`` files, or one ``.trc`` file."""
        if path.is_dir():
            return any(p.suffix.lower() in cls.suffixes for p in path.iterdir())
        return path.is_file() and path.suffix.lower() in cls.suffixes

    @classmethod
    def is_source_of(cls, attrs: Mapping[str, Any], variables: Collection[str] = ()) -> bool:
        """Scope captures: ``source_kind`` says so, or (a store that kept no
        attributes) ``source == "lecroy_trc"`` or a ``vertical_gain`` variable."""
        kind = attrs.get("source_kind")
        if isinstance(kind, str) and kind:
            return kind == cls.source_kind
        return attrs.get("source") == "lecroy_trc" or "vertical_gain" in variables

    @classmethod
    def plan(cls, path: Path, batch_events: int, input_index: int = 0, *,
             first_row: int = 0, align: int | None = None) -> list[Unit]:
        """One unit per impact of the directory (``batch_events`` and ``align``
        do not apply: an impact is one event)."""
        groups: dict[int, list[Path]] = {}
        for file in sorted(path.iterdir()):
            if file.suffix.lower() not in cls.suffixes or not file.is_file():
                continue
            parsed = parse_trc_filename(file.name)
            if parsed is None:
                logger.warning("%s: not an impact capture name; skipped", file)
                continue
            groups.setdefault(parsed[1], []).append(file)
        if not groups:
            raise IdexDaskError(f"no impact captures in {path}")
        settings = sorted(path.glob("*settings*.txt"))
        settings_bytes = b"".join(p.read_bytes() for p in settings)
        units = []
        for impact, files in sorted(groups.items()):
            try:
                digest = digest_files(settings_bytes, files)
            except OSError as exc:
                raise IdexDaskError(f"cannot read the captures of impact {impact}: {exc}") from exc
            units.append(
                Unit(
                    uid=f"{path}#impact{impact}",
                    kind=cls.kind,
                    path=str(path),
                    input_index=input_index,
                    n_events=1,
                    input_hash=digest,
                    files=tuple(str(f) for f in files),
                    impact=impact,
                )
            )
        return units

    @classmethod
    def read_unit(cls, unit: Unit) -> xr.Dataset:
        """One impact's captures (its files alone, with the directory's settings)."""
        # read whole (only the time axes stay formulas), the codes kept for the store
        dataset = read_trc(unit.files, keep_codes=True, lazy_volts=LAZY_VOLTS)
        dataset.attrs["source_path"] = str(Path(unit.path))
        return dataset

    @classmethod
    def read_units(cls, units: Sequence[Unit]) -> xr.Dataset | None:
        """The impacts of several units of one capture directory in one read.

        None (read them one by one, so that an unreadable impact fails alone)
        unless there are several units, all impacts of one directory, every
        file reads, and the impacts come back in unit order.
        """
        if len(units) < 2 or any(u.kind != cls.kind for u in units):
            return None
        if len({u.path for u in units}) != 1 or any(u.n_events != 1 for u in units):
            return None
        try:
            dataset = read_trc([f for u in units for f in u.files], keep_codes=True,
                               lazy_volts=LAZY_VOLTS)
        except IdexDaskError as exc:
            logger.info("a pack of %d impacts read one by one (%s)", len(units), exc)
            return None
        if dataset["impact_number"].values.tolist() != [u.impact for u in units]:
            return None  # not in plan order: one by one
        dataset.attrs["source_path"] = str(Path(units[0].path))
        return dataset

    @classmethod
    def read(cls, path: Path) -> xr.Dataset:
        return read_trc(path)

    @classmethod
    def defaults(cls) -> SourceDefaults:
        return SourceDefaults(
            calibration_preset="lab_peridot",
            channel_map="the *settings*.txt beside the captures (line n names channel Cn); "
            "polarities from configs/scope.yaml",
        )
