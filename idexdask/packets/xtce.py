"""Decode the non-science APIDs (housekeeping, event messages, catalog lists) via XTCE.

These packets are few and not on the hot path, so they go through
space-packet-parser, which interprets the official XTCE definitions.  Each APID
gets its own dimension ``packet_<apid>`` in the event dataset; parameter names are
the XTCE names in lower case with the container prefix joined by ``__``
(``IDX_EVT.ELID_EVTPKT`` -> ``idx_evt__elid_evtpkt``).  Packets that no given
definition describes are counted in the attribute ``undecoded_apid_counts``.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np
import space_packet_parser as spp
import xarray as xr

from idexdask.errors import XtceError
from idexdask.packets.framing import index_packets
from idexdask.packets.layout import SCIENCE_APID

__all__ = ["decode_other_apids", "load_definitions"]

logger = logging.getLogger(__name__)


def load_definitions(xtce: str | os.PathLike | Sequence[str | os.PathLike]) -> list:
    """Load one or several XTCE documents.

    Parameters
    ----------
    xtce : path or sequence of paths
        The XTCE files (the official IDEX definitions: ``idex-l0/*.xml`` of the data).

    Returns
    -------
    list
        One space-packet-parser packet definition per file.

    Raises
    ------
    XtceError
        If a file is missing or is not a readable XTCE document.
    """
    paths = [xtce] if isinstance(xtce, str | os.PathLike) else list(xtce)
    definitions = []
    for path in paths:
        try:
            definitions.append(spp.load_xtce(path))
        except Exception as exc:  # spp raises many types for a bad document
            raise XtceError(f"cannot load XTCE definition {path}: {exc}") from exc
    return definitions


def _value(parsed) -> int | float | None:
    raw = getattr(parsed, "raw_value", parsed)
    if isinstance(raw, bool | int | float | np.integer | np.floating):
        return raw
    return None  # binary blobs and strings stay out of the table


def decode_other_apids(
    buffer: np.ndarray,
    dataset: xr.Dataset,
    xtce: str | os.PathLike | Sequence[str | os.PathLike],
) -> xr.Dataset:
    """Add the decoded non-science packets of ``buffer`` to ``dataset``.

    Parameters
    ----------
    buffer : numpy.ndarray of uint8
        The file contents.
    dataset : xarray.Dataset
        The science events decoded from the same buffer.
    xtce : path or sequence of paths
        XTCE definitions to try, in order, for each packet.

    Returns
    -------
    xarray.Dataset
        ``dataset`` with variables on ``packet_<apid>`` dimensions.
    """
    definitions = load_definitions(xtce)
    index = index_packets(buffer)
    data = buffer.tobytes()
    rows: dict[int, list[dict]] = defaultdict(list)
    undecoded: Counter[int] = Counter()
    for start, length, apid in zip(index.start, index.length, index.apid, strict=True):
        if apid == SCIENCE_APID:
            continue
        packet = data[start : start + length]
        for definition in definitions:
            try:
                parsed = definition.parse_bytes(packet)
            except Exception:  # noqa: BLE001 - any failure means "not this definition"
                continue
            rows[int(apid)].append(
                {key: value for key, item in parsed.items() if (value := _value(item)) is not None}
            )
            break
        else:
            undecoded[int(apid)] += 1
    new_variables = {}
    for apid, records in sorted(rows.items()):
        dim = f"packet_{apid}"
        names = list(dict.fromkeys(key for record in records for key in record))
        for key in names:
            values = [record.get(key) for record in records]
            if any(v is None for v in values):
                column = np.array([np.nan if v is None else v for v in values], dtype=float)
            else:
                column = np.asarray(values)
            name = key.lower().replace(".", "__")
            if name in dataset.variables or name in new_variables:
                name = f"apid{apid}__{name}"
            new_variables[name] = xr.Variable(
                (dim,), column, attrs={"xtce_name": key, "apid": apid}
            )
    if undecoded:
        logger.warning(
            "no XTCE definition given describes APID(s) %s; packets counted, not decoded",
            ", ".join(f"{a} ({n})" for a, n in sorted(undecoded.items())),
        )
    out = dataset.assign(new_variables)
    out.attrs["decoded_apid_counts"] = json.dumps({str(a): len(r) for a, r in sorted(rows.items())})
    out.attrs["undecoded_apid_counts"] = json.dumps(
        {str(a): n for a, n in sorted(undecoded.items())}
    )
    return out
