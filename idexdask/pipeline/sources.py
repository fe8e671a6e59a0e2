"""Input kinds: which inputs a campaign takes, and how each is recognised.

One small class per kind, each saying how it recognises its inputs (a file, or
a directory of them); :func:`detect_inputs` turns the paths a user gives into
``(kind, path)`` pairs and refuses what no kind claims or what cannot share a
store.  The planner (:mod:`idexdask.pipeline.plan`) cuts each kind into units;
:func:`idexdask.pipeline.units.decode_unit` decodes them.

==========  ====================================================  =================
kind        inputs                                                 decoded by
==========  ====================================================  =================
``l0``      IDEX L0 packet files (``.pkts``, ``.bin``, no suffix)  ``read_l0``
``cdf``     official IMAP SDC IDEX L1a science CDFs (``.cdf``)     ``read_cdf``
``trc``     directories of LeCroy captures (``.trc``)              ``read_trc``
==========  ====================================================  =================

``l0`` and ``cdf`` inputs decode to the same event dataset and may share a
store; lab captures have other products and may not.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from idexdask.errors import IdexDaskError

__all__ = ["SOURCES", "L0Files", "L1aCdfFiles", "TrcCaptures", "detect_inputs"]


class L0Files:
    """IDEX L0 telemetry: packet files."""

    kind: ClassVar[str] = "l0"
    suffixes: ClassVar[tuple[str, ...]] = (".pkts", ".bin", "")
    family: ClassVar[str] = "events"

    @classmethod
    def claims_file(cls, path: Path) -> bool:
        return path.suffix.lower() in cls.suffixes and not path.name.startswith(".")


class L1aCdfFiles:
    """Official IDEX L1a science CDFs (checked when planned: :func:`~idexdask.read_cdf`)."""

    kind: ClassVar[str] = "cdf"
    suffixes: ClassVar[tuple[str, ...]] = (".cdf",)
    family: ClassVar[str] = "events"

    @classmethod
    def claims_file(cls, path: Path) -> bool:
        return path.suffix.lower() in cls.suffixes and not path.name.startswith(".")


class TrcCaptures:
    """LeCroy captures of lab impacts: a directory is one input (an impact is several files)."""

    kind: ClassVar[str] = "trc"
    suffixes: ClassVar[tuple[str, ...]] = (".trc",)
    family: ClassVar[str] = "lab"

    @classmethod
    def claims_directory(cls, path: Path) -> bool:
        return any(p.suffix.lower() in cls.suffixes for p in path.iterdir())


SOURCES = (L0Files, L1aCdfFiles, TrcCaptures)
"""Every input kind, by :attr:`kind`."""

_FILE_KINDS = (L1aCdfFiles, L0Files)  # CDF first: L0 also takes files without suffix


def _file_kind(path: Path) -> str | None:
    if path.suffix.lower() in TrcCaptures.suffixes:
        return TrcCaptures.kind
    return next((k.kind for k in _FILE_KINDS if k.claims_file(path)), None)


def detect_inputs(inputs: Sequence[str | Path]) -> list[tuple[str, Path]]:
    """Inputs -> ``[(kind, path)]``, in the order given (files of a directory sorted).

    A directory holding ``.trc`` files is one capture directory; any other
    directory contributes its L0 files and L1a CDFs.

    Raises
    ------
    IdexDaskError
        If an input does not exist, nothing is found, or lab captures are mixed
        with telemetry (they have different products and cannot share a store).
    """
    found: list[tuple[str, Path]] = []
    for item in inputs:
        path = Path(item).resolve()
        if path.is_dir():
            if TrcCaptures.claims_directory(path):
                found.append((TrcCaptures.kind, path))
                continue
            for file in sorted(p for p in path.iterdir() if p.is_file()):
                kind = _file_kind(file)
                if kind in (L0Files.kind, L1aCdfFiles.kind):
                    found.append((kind, file))
        elif path.is_file():
            # a file named explicitly is telemetry unless it says otherwise: the
            # planner then tells whether it is (and fails that input alone if not)
            found.append((_file_kind(path) or L0Files.kind, path))
        else:
            raise IdexDaskError(f"input not found: {item}")
    found = list(dict.fromkeys(found))
    if not found:
        raise IdexDaskError("no input files found")
    families = {next(s.family for s in SOURCES if s.kind == kind) for kind, _ in found}
    if len(families) > 1:
        raise IdexDaskError(
            "the inputs mix telemetry (L0 or L1a CDF) and LeCroy captures; "
            "submit them to separate stores"
        )
    if any(kind == TrcCaptures.kind and p.is_file() for kind, p in found):
        raise IdexDaskError("give LeCroy captures as directories (one impact = several files)")
    return found
