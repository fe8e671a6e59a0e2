"""``read_cdf``: an official IMAP IDEX L1a science CDF -> the event dataset of ``read_l0``.

Many IDEX users never see L0 packets: they download the SDC's L1a science
product (imap-processing's ``imap_idex_l1a_sci*``).  It holds what ``read_l0``
decodes, in other types: waveforms as int64, 8189 of the 8192 high-rate samples
(the official decoder drops the last three), header fields as int64 and a few
as their XTCE enumeration labels (``EN``/``DS``, ``POS``/``NEG``, ``ENA``/``DIS``),
the sample times as float64 arrays.  :func:`read_cdf` returns the dataset
``read_l0`` returns for the same events, variable for variable, with:

* the high-rate waveforms padded to 8192 samples with the fill value 65535, and
  the bit ``QualityFlag.SOURCE_TRUNCATED`` in ``channel_status`` (those channels)
  and ``quality_flags``: the analysis ignores fill samples, as for any
  incomplete record;
* epoch and sample times computed from the header fields with ``read_l0``'s own
  formulas (exact integers; the product's float TT2000 conversion differs by up
  to ~0.2 µs), after checking that the product's own values agree (1 ms, and
  1 ns for the sample times), so that a bad product stops here;
* ``compressed`` from the event header's ``idx__sci0comp`` for all six channels
  (the product keeps one flag per event), and ``idx__sci0aid``, which the
  product does not carry, as fill (all ones).

A file that is not a CDF, is truncated, is not an IDEX L1a science product or
lacks a variable needed gives :class:`~idexdask.errors.CdfInputError` naming the
file and the problem.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from idexdask.errors import CdfInputError
from idexdask.packets.layout import (
    CHANNELS,
    EVENT_HEADER_FIELDS,
    HIGH_RATE_MSPS,
    HIGH_RATE_SAMPLES,
    LOW_RATE_MSPS,
    LOW_RATE_SAMPLES,
    RENAMED_FIELDS,
    SCIENCE_HEADER_FIELDS,
    TRAILER_FIELD_NAMES,
)
from idexdask.packets.quality import QualityFlag
from idexdask.packets.timing import epoch_from_header, pretrigger_times, sample_times_variable

__all__ = ["L1A_LOGICAL_SOURCE", "L1aCdfInfo", "inspect_l1a_cdf", "read_cdf"]

logger = logging.getLogger(__name__)

L1A_LOGICAL_SOURCE = "imap_idex_l1a_sci"
"""Logical_source of the official product (``imap_idex_l1a_sci-10days``, ...) starts so."""

HIGH_DIM = "time_high_sample_rate_index"
LOW_DIM = "time_low_sample_rate_index"
# Enumeration labels of the XTCE definition (idex_science_packet_definition.xml):
# SCI0PACK/FRAG/COMP DS=0 EN=1, TXHDRPOLSTAT/POLCTRL POS=0 NEG=1,
# TXHDRCOINENA/LSTRIGMODE DIS=0 ENA=1.
_ENUM_CODES = {"DS": 0, "EN": 1, "POS": 0, "NEG": 1, "DIS": 0, "ENA": 1}
_NOT_IN_PRODUCT = ("idx__sci0aid",)
_TIMING = ("idx__txhdrtimesec1", "idx__txhdrtimesec2", "idx__txhdrtimesubs",
           "idx__txhdrblocks", "idx__txhdrtrigid", "idx__txhdrsampdelay")
_EPOCH_TOLERANCE_NS = 1_000_000  # a sanity check of the product, not a precision claim
_TIME_TOLERANCE_US = 1e-3  # 1 ns: the product computes the same formula in float64


def _header_names() -> list[tuple[str, np.dtype]]:
    names = [(f.name, f.dtype) for f in SCIENCE_HEADER_FIELDS]
    names += [(RENAMED_FIELDS.get(f.name, f.name), f.dtype) for f in EVENT_HEADER_FIELDS]
    names += [(name, np.dtype(np.uint16)) for name in TRAILER_FIELD_NAMES]
    return names


def _required() -> list[str]:
    names = ["epoch", *(c.name for c in CHANNELS)]
    names += [n for n, _ in _header_names() if n not in _NOT_IN_PRODUCT]
    return names


@dataclass(frozen=True)
class L1aCdfInfo:
    """What the planner needs of an official L1a CDF (:func:`inspect_l1a_cdf`).

    Attributes
    ----------
    path : pathlib.Path
        The file.
    n_events : int
        Records of ``epoch``.
    logical_source : str
        Its global attribute Logical_source.
    """

    path: Path
    n_events: int
    logical_source: str


def _open(path: Path):
    import cdflib

    if not path.is_file():
        raise CdfInputError(f"{path}: no such file")
    try:
        return cdflib.CDF(str(path))
    except Exception as exc:  # cdflib raises OSError, ValueError, struct errors...
        raise CdfInputError(f"{path}: not a readable CDF ({type(exc).__name__}: {exc})") from exc


def _check_product(path: Path, cdf) -> tuple[str, int]:
    try:
        globals_ = cdf.globalattsget()
        variables = set(cdf.cdf_info().zVariables)
        source = str((globals_.get("Logical_source") or [""])[0])
    except Exception as exc:  # noqa: BLE001 - a damaged file fails in many ways
        raise CdfInputError(f"{path}: cannot read its CDF metadata, truncated or damaged "
                            f"({type(exc).__name__}: {exc})") from exc
    if not source.startswith(L1A_LOGICAL_SOURCE):
        raise CdfInputError(
            f"{path}: not an IDEX L1a science product (Logical_source {source or 'missing'!r}, "
            f"expected {L1A_LOGICAL_SOURCE}*)")
    missing = [n for n in _required() if n not in variables]
    if missing:
        raise CdfInputError(f"{path}: missing variable(s) {', '.join(missing[:8])}"
                            + (f" and {len(missing) - 8} more" if len(missing) > 8 else ""))
    try:
        n_events = int(cdf.varinq("epoch").Last_Rec) + 1
    except Exception as exc:  # noqa: BLE001
        raise CdfInputError(f"{path}: cannot read the epoch variable ({exc})") from exc
    return source, max(n_events, 0)


def inspect_l1a_cdf(path: str | os.PathLike) -> L1aCdfInfo:
    """Check that ``path`` is an official IDEX L1a science CDF and count its events.

    Parameters
    ----------
    path : path
        The CDF file.

    Returns
    -------
    L1aCdfInfo
        The file, its number of events and its logical source.

    Raises
    ------
    CdfInputError
        If it is not a readable CDF, not an IDEX L1a science product, or lacks a
        variable :func:`read_cdf` needs.
    """
    path = Path(path)
    cdf = _open(path)
    source, n_events = _check_product(path, cdf)
    return L1aCdfInfo(path, n_events, source)


def _get(path: Path, cdf, name: str, records: tuple[int, int], n: int) -> np.ndarray:
    try:
        values = cdf.varget(name, startrec=records[0], endrec=records[1] - 1) if n else None
    except Exception as exc:  # noqa: BLE001 - truncated data raise many types
        raise CdfInputError(f"{path}: cannot read variable {name} "
                            f"({type(exc).__name__}: {exc}); truncated?") from exc
    if n == 0:
        return np.zeros(0)
    values = np.asarray(values)
    if n == 1 and (values.ndim == 0 or values.shape[0] != 1):  # cdflib drops the record axis
        values = values.reshape(1, *values.shape)
    if values.shape[:1] != (n,):
        raise CdfInputError(f"{path}: variable {name} has {values.shape[:1]} records, "
                            f"epoch {n}; truncated?")
    return values


def _as_dtype(path: Path, name: str, values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if values.dtype.kind in "OUS":
        labels = values.astype(str)
        codes = np.array([_ENUM_CODES.get(v.strip(), -1) for v in labels.ravel()], np.int64)
        if (codes < 0).any():
            bad = sorted({v for v in labels.ravel() if v.strip() not in _ENUM_CODES})
            raise CdfInputError(f"{path}: variable {name} holds unknown labels {bad[:4]}")
        values = codes.reshape(labels.shape)
    info = np.iinfo(dtype)
    if values.size and (values.min() < info.min or values.max() > info.max):
        raise CdfInputError(f"{path}: variable {name} holds values outside "
                            f"{info.min}..{info.max} (fill or corrupt records)")
    return values.astype(dtype)


def read_cdf(path: str | os.PathLike, *, records: tuple[int, int] | None = None) -> xr.Dataset:
    """Read an official IDEX L1a science CDF into ``read_l0``'s event dataset.

    Parameters
    ----------
    path : path
        ``imap_idex_l1a_sci*`` CDF (imap-processing's writer).
    records : (int, int), optional
        ``[start, stop)`` records (events) to read; default all.

    Returns
    -------
    xarray.Dataset
        The variables, dtypes, dimensions and attributes of
        :func:`idexdask.read_l0` (see the module's notes on the three missing
        high-rate samples, epoch and ``idx__sci0aid``).

    Raises
    ------
    CdfInputError
        Not a CDF, truncated, not an IDEX L1a science product, a variable missing
        or inconsistent.
    """
    path = Path(path)
    cdf = _open(path)
    source, n_total = _check_product(path, cdf)
    start, stop = records if records is not None else (0, n_total)
    if not 0 <= start <= stop <= n_total:
        raise CdfInputError(f"{path}: records {start}-{stop} outside its {n_total} events")
    n = stop - start

    variables: dict[str, xr.Variable] = {}
    status = np.zeros((n, len(CHANNELS)), dtype=np.uint16)
    for index, spec in enumerate(CHANNELS):
        samples = HIGH_RATE_SAMPLES if spec.high_rate else LOW_RATE_SAMPLES
        values = _get(path, cdf, spec.name, (start, stop), n)
        values = values.reshape(n, -1) if n else np.zeros((0, 0), np.int64)
        if values.shape[1] > samples:
            raise CdfInputError(f"{path}: {spec.name} holds {values.shape[1]} samples per "
                                f"event, more than the instrument's {samples}")
        data = np.full((n, samples), spec.fill_value, dtype=np.uint16)
        valid = (values >= 0) & (values < spec.fill_value)  # the product's fill is int64 min
        data[:, : values.shape[1]] = np.where(valid, values, spec.fill_value)
        if values.shape[1] < samples:
            status[:, index] |= np.uint16(QualityFlag.SOURCE_TRUNCATED)
        variables[spec.name] = xr.Variable(
            ("epoch", HIGH_DIM if spec.high_rate else LOW_DIM), data,
            attrs={"units": "DN", "long_name": f"{spec.name.replace('_', ' ')} waveform",
                   "FILLVAL": spec.fill_value, "VALIDMIN": 0, "VALIDMAX": (1 << spec.bits) - 1,
                   "sample_rate_msps": spec.rate_msps, "adc_bits": spec.bits})

    header: dict[str, np.ndarray] = {}
    for name, dtype in _header_names():
        if name in _NOT_IN_PRODUCT:
            header[name] = np.full(n, np.iinfo(dtype).max, dtype=dtype)
            continue
        header[name] = _as_dtype(path, name, _get(path, cdf, name, (start, stop), n), dtype)

    epoch = epoch_from_header(header["idx__txhdrtimesec1"], header["idx__txhdrtimesec2"],
                              header["idx__txhdrtimesubs"])
    stated = _get(path, cdf, "epoch", (start, stop), n).astype(np.int64) if n else epoch
    if n and np.abs(stated - epoch).max() > _EPOCH_TOLERANCE_NS:
        raise CdfInputError(f"{path}: epoch disagrees with the header's time fields by up to "
                            f"{np.abs(stated - epoch).max() / 1e9:.3f} s")
    t_high, t_low = pretrigger_times(header["idx__txhdrblocks"], header["idx__txhdrtrigid"],
                                     header["idx__txhdrsampdelay"])
    time_high = sample_times_variable(t_high, HIGH_RATE_SAMPLES, HIGH_RATE_MSPS,
                                      ("epoch", HIGH_DIM),
                                      {"units": "µs",
                                       "long_name": "high-rate sample time from trigger"})
    time_low = sample_times_variable(t_low, LOW_RATE_SAMPLES, LOW_RATE_MSPS, ("epoch", LOW_DIM),
                                     {"units": "µs",
                                      "long_name": "low-rate sample time from trigger"})
    _check_times(path, cdf, "time_high_sample_rate", time_high, (start, stop), n)
    _check_times(path, cdf, "time_low_sample_rate", time_low, (start, stop), n)
    variables["time_high_sample_rate"] = time_high
    variables["time_low_sample_rate"] = time_low
    for name, values in header.items():
        variables[name] = xr.Variable(("epoch",), values)

    meanings = " ".join(f"{flag.name}={int(flag)}" for flag in QualityFlag)
    variables["channel_status"] = xr.Variable(
        ("epoch", "channel"), status,
        attrs={"flag_meanings": meanings, "long_name": "per-channel decode quality"})
    variables["quality_flags"] = xr.Variable(
        ("epoch",), np.bitwise_or.reduce(status, axis=1).astype(np.uint16),
        attrs={"flag_meanings": meanings, "long_name": "event decode quality"})
    variables["compressed"] = xr.Variable(
        ("epoch", "channel"),
        np.repeat(header["idx__sci0comp"].astype(bool)[:, np.newaxis], len(CHANNELS), axis=1))
    coords = {
        "epoch": xr.Variable(("epoch",), epoch,
                             attrs={"units": "ns",
                                    "long_name": "event time, TT2000 (ns since J2000 TT)"}),
        "channel": ("channel", np.array([c.name for c in CHANNELS], dtype=object)),
    }
    # source_kind: flight telemetry as read_l0's (the same instrument, calibration presets)
    attrs: dict[str, Any] = {"source": path.name, "source_kind": "idex_l0",
                             "source_product": source, "source_records": f"{start}-{stop}"}
    logger.info("%s: read %d events of %s", path.name, n, source)
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def _check_times(path: Path, cdf, name: str, computed: xr.Variable, records: tuple[int, int],
                 n: int) -> None:
    """The product's sample times agree with the header's (on the samples it holds)."""
    if not n or name not in cdf.cdf_info().zVariables:
        return
    stated = np.asarray(_get(path, cdf, name, records, n), dtype=np.float64).reshape(n, -1)
    ours = computed.values[:, : stated.shape[1]]
    if stated.shape[1] > computed.shape[1] or np.abs(stated - ours).max() > _TIME_TOLERANCE_US:
        raise CdfInputError(f"{path}: {name} disagrees with the header's trigger fields")
