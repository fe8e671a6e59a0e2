"""Official IMAP SDC IDEX L1a science CDFs, read by :func:`~idexdask.io.l1a_cdf.read_cdf`.

They decode to the event dataset of :func:`~idexdask.packets.reader.read_l0`
(the same instrument and products): they may share a store with L0 files and
are calibrated with the flight preset.  Records are independent events, so a
file is cut every ``batch_events`` records.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

import xarray as xr

from idexdask.errors import IdexDaskError
from idexdask.io.l1a_cdf import inspect_l1a_cdf, read_cdf
from idexdask.packets.layout import CHANNELS
from idexdask.sources.base import Source, SourceDefaults, next_cut
from idexdask.sources.unit import Unit, digest_bytes, read_checked

__all__ = ["L1aCdf", "plan_cdf_file"]

logger = logging.getLogger(__name__)


class L1aCdf(Source):
    """Official IDEX L1a science CDFs (``.cdf``; checked when planned)."""

    kind = "cdf"
    # the same instrument as the telemetry: read_l0's datasets and presets
    source_kind = "idex_l0"
    family = "events"
    description = "official IDEX L1a science CDFs"
    suffixes: ClassVar[tuple[str, ...]] = (".cdf",)

    @classmethod
    def is_source_for(cls, path: Path) -> bool:
        return (path.is_file() and not path.name.startswith(".")
                and path.suffix.lower() in cls.suffixes)

    @classmethod
    def is_source_of(cls, attrs, variables=()) -> bool:
        # its datasets are read_l0's (source_kind idex_l0): the L0 source claims them
        return False

    @classmethod
    def plan(cls, path: Path, batch_events: int, input_index: int = 0, *,
             first_row: int = 0, align: int | None = None) -> list[Unit]:
        return plan_cdf_file(path, batch_events, input_index, first_row=first_row, align=align)

    @classmethod
    def read_unit(cls, unit: Unit) -> xr.Dataset:
        read_checked(unit)  # the file as planned (the reader opens it again)
        dataset = read_cdf(unit.path, records=unit.records)
        dataset.attrs["source"] = Path(unit.path).name
        return dataset

    @classmethod
    def read(cls, path: Path) -> xr.Dataset:
        return read_cdf(path)

    @classmethod
    def defaults(cls) -> SourceDefaults:
        return SourceDefaults(
            calibration_preset="flight",
            channel_map="the product's variables, named as read_l0's: "
            + ", ".join(c.name for c in CHANNELS),
        )


def plan_cdf_file(
    path: str | Path,
    batch_events: int,
    input_index: int = 0,
    *,
    first_row: int = 0,
    align: int | None = None,
) -> list[Unit]:
    """Cut an official L1a science CDF into units of about ``batch_events`` records.

    Records are independent events, so a unit may end anywhere: at store chunk
    boundaries (``align``) where ``align <= batch_events``.  Every unit carries the
    digest of the whole file (a unit reads its records of that file).

    Raises
    ------
    IdexDaskError
        (:class:`~idexdask.errors.CdfInputError`) If the file is not a readable
        IDEX L1a science CDF or lacks a variable the reader needs.
    """
    path = Path(path).resolve()
    info = inspect_l1a_cdf(path)
    if info.n_events == 0:
        logger.info("%s: no events", path.name)
        return []
    try:
        digest = digest_bytes(path.read_bytes())
    except OSError as exc:
        raise IdexDaskError(f"cannot read {path}: {exc}") from exc
    bounds = [0]
    while bounds[-1] < info.n_events:
        bounds.append(min(info.n_events, next_cut(bounds[-1], batch_events, first_row, align)))
    return [
        Unit(uid=f"{path}#{start}-{stop}", kind=L1aCdf.kind, path=str(path),
             input_index=input_index, n_events=stop - start, input_hash=digest,
             byte_range=None, records=(start, stop))
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True)
    ]
