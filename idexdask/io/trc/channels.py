"""Impacts and channels of a directory of captures: file names, settings, polarities."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from idexdask._logging import get_logger
from idexdask.errors import TraceFileError

__all__ = [
    "TRC_NAME_PATTERN",
    "channel_map",
    "channel_variable_name",
    "default_polarity",
    "parse_trc_filename",
    "read_settings",
]

_log = get_logger(__name__)


TRC_NAME_PATTERN = re.compile(r"(?<![A-Za-z0-9])C(?P<channel>\d+)\D(?:.*?\D)?(?P<impact>\d+)\.trc$")
"""Channel number after a ``C`` that does not continue a word; impact = trailing number."""


_KNOWN_NAMES = {
    "tof high": "TOF_High",
    "tof low": "TOF_Low",
    "tof mid": "TOF_Mid",
    "target high": "Target_High",
    "target low": "Target_Low",
    "ion grid": "Ion_Grid",
}


_DEFAULT_POLARITY_NEGATIVE = ("TOF_High", "TOF_Low", "TOF_Mid")
"""Variables whose signal is negative-going in the lab captures (``signal_polarity`` -1)."""


def parse_trc_filename(name: str | Path) -> tuple[int, int] | None:
    """``(channel, impact)`` from a trace file name, or None if it does not match.

    Examples
    --------
    >>> parse_trc_filename("C1--Trace--00003.trc"), parse_trc_filename("C2Fe00003.trc")
    ((1, 3), (2, 3))
    >>> parse_trc_filename("peridot_C4_00006.trc")
    (4, 6)
    """
    m = TRC_NAME_PATTERN.search(os.path.basename(name) if isinstance(name, str) else name.name)
    if m is None:
        return None
    return int(m.group("channel")), int(m.group("impact"))


def channel_variable_name(name: str) -> str:
    """Dataset variable for a channel name (``"TOF High"`` -> ``TOF_High``).

    IDEX channel names map to the telemetry decoder's variables (``TOF_High``,
    ``TOF_Low``, ``TOF_Mid``, ``Target_High``, ``Target_Low``, ``Ion_Grid``);
    any other name is sanitized (``"QD 1"`` -> ``QD_1``).
    """
    key = " ".join(re.split(r"[\s_\-]+", name.strip().lower()))
    if key in _KNOWN_NAMES:
        return _KNOWN_NAMES[key]
    out = re.sub(r"\W+", "_", name.strip()).strip("_")
    if not out:
        raise ValueError(f"empty channel name {name!r}")
    return out if out[0].isalpha() else f"ch_{out}"


def read_settings(path: str | Path) -> dict[int, str]:
    """Channel names from a settings text file: line *n* names channel C\\ *n*.

    Blank lines leave their channel unnamed (it is then called ``C<n>``).

    Raises
    ------
    TraceFileError
        If the file cannot be read.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise TraceFileError(f"{path}: cannot read settings file: {exc}") from exc
    return {n: line.strip() for n, line in enumerate(lines, start=1) if line.strip()}


def _find_settings(directory: Path, trace_names: Iterable[str]) -> Path | None:
    found = sorted(directory.glob("*settings*.txt"))
    if not found:
        return None
    if len(found) > 1:
        # prefer the one sharing its prefix with the traces (peridot_settings.txt)
        names = list(trace_names)
        for cand in found:
            prefix = cand.name.split("settings")[0]
            if prefix and all(n.startswith(prefix) for n in names):
                return cand
        _log.warning("%s: several settings files %s; using %s",
                     directory, [f.name for f in found], found[0].name)
    return found[0]


def channel_map(
    settings: str | Path | Mapping[int, Any] | None, directory: Path, trace_names: list[str]
) -> tuple[dict[int, str], dict[int, int], str | None]:
    """Channel number -> (variable name, polarity override) and the settings source."""
    source: str | None = None
    if settings is None:
        found = _find_settings(directory, trace_names)
        raw_map: Mapping[int, Any] = read_settings(found) if found else {}
        source = found.name if found else None
    elif isinstance(settings, (str, Path)):
        raw_map = read_settings(settings)
        source = Path(settings).name
    else:
        raw_map = settings
        source = "mapping"
    names: dict[int, str] = {}
    polarity: dict[int, int] = {}
    for ch, value in raw_map.items():
        ch = int(ch)
        if isinstance(value, Mapping):
            names[ch] = str(value.get("name", f"C{ch}"))
            if "polarity" in value:
                polarity[ch] = int(value["polarity"])
        else:
            names[ch] = str(value)
    return names, polarity, source


def default_polarity() -> dict[str, int]:
    """``channels.polarity`` of ``configs/scope.yaml``, else -1 for ``TOF_*`` only."""
    from idexdask.config import file_key

    return dict(_polarity_table(*file_key("scope.yaml")))


@functools.lru_cache(maxsize=4)
def _polarity_table(path: str, mtime_ns: int) -> tuple[tuple[str, int], ...]:
    """:func:`default_polarity` of one version of the file (a campaign reads it once)."""
    from idexdask.config import load_yaml
    from idexdask.errors import ConfigError

    table = {v: -1 for v in _DEFAULT_POLARITY_NEGATIVE}
    try:
        cfg = load_yaml(path) or {}
        table.update({str(k): int(v) for k, v in
                      (cfg.get("channels", {}).get("polarity") or {}).items()})
    except (ConfigError, AttributeError, TypeError, ValueError) as exc:
        _log.warning("configs/scope.yaml polarity table unusable (%s); TOF_* = -1", exc)
    return tuple(table.items())
