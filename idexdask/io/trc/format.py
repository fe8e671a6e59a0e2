"""The LeCroy ``.trc`` file format: the ``WAVEDESC`` header and the sample codes.

See :mod:`idexdask.io.trc` for the layout of a file.  :func:`read_trc_file`
reads one file's header and raw codes; :func:`read_trc_header` and
:func:`read_codes_into` read them in two steps, the codes into a caller's
scratch; :func:`volts_into` converts codes to volts in one pass.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np

from idexdask._logging import get_logger
from idexdask.errors import TraceFileError

__all__ = [
    "WAVEDESC_LENGTH",
    "TrcHeader",
    "TrcWaveform",
    "parse_header",
    "read_codes_into",
    "read_trc_file",
    "read_trc_header",
    "volts_into",
]

_log = get_logger(__name__)


WAVEDESC_LENGTH = 346
"""Length of the ``LECROY_2_3`` descriptor, bytes."""


_MAX_PREFIX_SEARCH = 64
"""``WAVEDESC`` must start within this many bytes (an SCPI header is 11-20 bytes)."""


_RECORD_TYPES = (
    "single_sweep", "interleaved", "histogram", "graph", "filter_coefficient",
    "complex", "extrema", "sequence_obsolete", "centered_RIS", "peak_detect",
)


_COUPLINGS = ("DC_50_Ohms", "ground", "DC_1MOhm", "ground", "AC_1MOhm")


@dataclass(frozen=True)
class TrcHeader:
    """The fields of a ``WAVEDESC`` descriptor that the reader uses.

    Attributes
    ----------
    path : str
        File the header came from.
    wavedesc_offset : int
        Byte offset of ``WAVEDESC`` in the file (0, or the SCPI header length).
    template_name : str
        ``LECROY_2_3`` for every scope since the 1990s.
    comm_type : int
        0: int8 samples, 1: int16 samples.
    byte_order : str
        ``"<"`` (``COMM_ORDER`` 1, LOFIRST) or ``">"`` (0, HIFIRST).
    wave_descriptor, user_text, res_desc1, trigtime_array : int
        Block lengths, bytes.
    ris_time_array, res_array1, wave_array_1 : int
        Block lengths, bytes.
    instrument_name : str
        E.g. ``LECROYWRHRO66Zi``.
    instrument_number : int
        Serial number.
    trace_label : str
        Free text label of the trace.
    wave_array_count : int
        Number of samples.
    subarray_count : int
        Number of segments (1 for a single sweep).
    vertical_gain : float
        Volts per count.
    vertical_offset : float
        Volts (subtracted).
    max_value, min_value : float
        Limits of the ADC range, counts.
    nominal_bits : int
        ADC resolution.
    horiz_interval : float
        Sampling interval, s.
    horiz_offset : float
        Time of the first sample relative to the trigger, s.
    vertical_unit, horizontal_unit : str
        Units (``V``, ``S``).
    trigger_time : datetime.datetime
        Scope clock at the trigger (naive; microsecond resolution).
    trigger_time_ns : int
        Nanoseconds beyond ``trigger_time``'s microseconds (0..999).
    record_type : str
        ``single_sweep``, ...
    vertical_coupling : str
        Input coupling.
    probe_attenuation : float
        Probe attenuation factor.
    wave_source : int
        Channel number 1-4 (``WAVE_SOURCE`` + 1), 0 if not a channel.
    """

    path: str
    wavedesc_offset: int
    template_name: str
    comm_type: int
    byte_order: str
    wave_descriptor: int
    user_text: int
    res_desc1: int
    trigtime_array: int
    ris_time_array: int
    res_array1: int
    wave_array_1: int
    instrument_name: str
    instrument_number: int
    trace_label: str
    wave_array_count: int
    subarray_count: int
    vertical_gain: float
    vertical_offset: float
    max_value: float
    min_value: float
    nominal_bits: int
    horiz_interval: float
    horiz_offset: float
    vertical_unit: str
    horizontal_unit: str
    trigger_time: _dt.datetime | None
    trigger_time_ns: int
    record_type: str
    vertical_coupling: str
    probe_attenuation: float
    wave_source: int

    @property
    def data_offset(self) -> int:
        """Byte offset of ``WAVE_ARRAY_1`` in the file."""
        return (
            self.wavedesc_offset + self.wave_descriptor + self.user_text + self.res_desc1
            + self.trigtime_array + self.ris_time_array + self.res_array1
        )

    @property
    def dtype(self) -> np.dtype:
        """Sample dtype with byte order."""
        return np.dtype(self.byte_order + ("i1" if self.comm_type == 0 else "i2"))


@dataclass
class TrcWaveform:
    """One channel of one capture: header, raw counts, volts and times.

    Attributes
    ----------
    header : TrcHeader
    raw : numpy.ndarray
        ADC counts (int8 or int16, native byte order).
    """

    header: TrcHeader
    raw: np.ndarray
    _volts: np.ndarray | None = field(default=None, repr=False)

    @property
    def volts(self) -> np.ndarray:
        """``VERTICAL_GAIN * raw - VERTICAL_OFFSET``, V, float64."""
        if self._volts is None:
            h = self.header
            self._volts = h.vertical_gain * self.raw.astype(np.float64) - h.vertical_offset
        return self._volts

    @property
    def time_s(self) -> np.ndarray:
        """``HORIZ_OFFSET + i * HORIZ_INTERVAL``, s, float64."""
        h = self.header
        return h.horiz_offset + np.arange(self.raw.size, dtype=np.float64) * h.horiz_interval


def _cstr(buf: bytes) -> str:
    return buf.split(b"\x00", 1)[0].decode("ascii", "replace").strip()


def _enum(table: Sequence[str], value: int) -> str:
    return table[value] if 0 <= value < len(table) else f"unknown({value})"


def _find_wavedesc(head: bytes, path: str) -> int:
    """Byte offset of ``WAVEDESC``; checks an SCPI ``#n`` block header before it."""
    pos = head.find(b"WAVEDESC", 0, _MAX_PREFIX_SEARCH + 8)
    if pos < 0:
        raise TraceFileError(f"{path}: not a LeCroy .trc file (no WAVEDESC marker)")
    if pos > 0:
        prefix = head[:pos]
        m = re.fullmatch(rb"#(\d)(\d+)", prefix)
        if m is None or int(m.group(1)) != len(m.group(2)):
            _log.warning("%s: %d unexpected bytes before WAVEDESC: %r", path, pos, prefix)
    return pos


_DESCRIPTOR_FIELDS = "16shH7i12x16si16s4xi24xi8x4fh2xfd8x48s48s4xdBBBBH6xh8xhf12xh"
"""The ``WAVEDESC`` fields the reader uses, from byte 16 of the descriptor to its
end (346): ``TEMPLATE_NAME`` (16), ``COMM_TYPE`` (32), ``COMM_ORDER`` (34), the
block lengths ``WAVE_DESCRIPTOR`` .. ``WAVE_ARRAY_1`` (36-60),
``INSTRUMENT_NAME`` (76), ``INSTRUMENT_NUMBER`` (92), ``TRACE_LABEL`` (96),
``WAVE_ARRAY_COUNT`` (116), ``SUBARRAY_COUNT`` (144), ``VERTICAL_GAIN``,
``VERTICAL_OFFSET``, ``MAX_VALUE``, ``MIN_VALUE`` (156-168), ``NOMINAL_BITS``
(172), ``HORIZ_INTERVAL`` (176), ``HORIZ_OFFSET`` (180), ``VERTUNIT`` (196),
``HORUNIT`` (244), ``TRIGGER_TIME`` (296: seconds, minutes, hours, days,
months, year), ``RECORD_TYPE`` (316), ``VERT_COUPLING`` (326),
``PROBE_ATT`` (328), ``WAVE_SOURCE`` (344)."""

_DESCRIPTORS = {bo: struct.Struct(bo + _DESCRIPTOR_FIELDS) for bo in "<>"}
"""One unpack per header (~25 separate ones cost ~10 µs more per file)."""


def _timestamp(seconds: float, minute: int, hour: int, day: int, month: int,
               year: int) -> tuple[_dt.datetime | None, int]:
    """``TRIGGER_TIME`` as a naive datetime (µs) and the nanoseconds beyond them."""
    whole = int(seconds) if np.isfinite(seconds) else 0
    frac_ns = int(round((seconds - whole) * 1e9)) if np.isfinite(seconds) else 0
    if frac_ns >= 1_000_000_000:  # rounding up to the next second
        whole, frac_ns = whole + 1, frac_ns - 1_000_000_000
    try:
        stamp = _dt.datetime(year, month, day, hour, minute) + _dt.timedelta(
            seconds=whole, microseconds=frac_ns // 1000
        )
    except (ValueError, OverflowError):
        return None, 0
    return stamp, frac_ns % 1000


def parse_header(head: bytes, path: str | Path = "<bytes>") -> TrcHeader:
    """Parse the ``WAVEDESC`` descriptor at the start of ``head``.

    Parameters
    ----------
    head : bytes
        At least the first ``WAVEDESC offset + 346`` bytes of the file.
    path : str or Path
        For error messages.

    Returns
    -------
    TrcHeader

    Raises
    ------
    TraceFileError
        No ``WAVEDESC`` marker, descriptor truncated, unknown ``COMM_TYPE`` or
        ``COMM_ORDER``, or inconsistent block lengths.
    """
    path = str(path)
    p = _find_wavedesc(head, path)
    if len(head) < p + WAVEDESC_LENGTH:
        raise TraceFileError(
            f"{path}: truncated descriptor ({len(head) - p} of {WAVEDESC_LENGTH} bytes)"
        )
    order_le = struct.unpack_from("<H", head, p + 34)[0]
    if order_le == 1:
        bo = "<"
    elif order_le == 0:
        bo = ">"
    else:
        raise TraceFileError(f"{path}: invalid COMM_ORDER bytes {head[p + 34:p + 36]!r}")
    (template, comm_type, _, wave_descriptor, user_text, res_desc1, trigtime, ris_time,
     res_array1, wave_array_1, instrument, instrument_number, label, count, subarrays,
     gain, offset, max_value, min_value, bits, interval, horiz_offset, vertical_unit,
     horizontal_unit, seconds, minute, hour, day, month, year, record_type, coupling,
     probe_att, source) = _DESCRIPTORS[bo].unpack_from(head, p + 16)
    if comm_type not in (0, 1):
        raise TraceFileError(f"{path}: unsupported COMM_TYPE {comm_type} (0: byte, 1: word)")
    if (wave_descriptor < WAVEDESC_LENGTH or min(wave_descriptor, user_text, res_desc1,
                                                 trigtime, ris_time, res_array1) < 0
            or wave_array_1 < 0):
        raise TraceFileError(
            f"{path}: corrupt descriptor block lengths (WAVE_DESCRIPTOR={wave_descriptor}, "
            f"USER_TEXT={user_text}, TRIGTIME={trigtime}, RIS_TIME={ris_time}, "
            f"WAVE_ARRAY_1={wave_array_1})"
        )
    width = 1 if comm_type == 0 else 2
    if count < 0 or count * width != wave_array_1:
        # WAVE_ARRAY_COUNT is authoritative only when it agrees with WAVE_ARRAY_1.
        raise TraceFileError(
            f"{path}: WAVE_ARRAY_COUNT={count} disagrees with WAVE_ARRAY_1={wave_array_1} "
            f"bytes for COMM_TYPE {comm_type}"
        )
    stamp, stamp_ns = _timestamp(seconds, minute, hour, day, month, year)
    return TrcHeader(
        path=path,
        wavedesc_offset=p,
        template_name=_cstr(template),
        comm_type=comm_type,
        byte_order=bo,
        wave_descriptor=wave_descriptor,
        user_text=user_text,
        res_desc1=res_desc1,
        trigtime_array=trigtime,
        ris_time_array=ris_time,
        res_array1=res_array1,
        wave_array_1=wave_array_1,
        instrument_name=_cstr(instrument),
        instrument_number=instrument_number,
        trace_label=_cstr(label),
        wave_array_count=count,
        subarray_count=subarrays,
        vertical_gain=float(gain),
        vertical_offset=float(offset),
        max_value=float(max_value),
        min_value=float(min_value),
        nominal_bits=bits,
        horiz_interval=float(interval),
        horiz_offset=float(horiz_offset),
        vertical_unit=_cstr(vertical_unit),
        horizontal_unit=_cstr(horizontal_unit),
        trigger_time=stamp,
        trigger_time_ns=stamp_ns,
        record_type=_enum(_RECORD_TYPES, record_type),
        vertical_coupling=_enum(_COUPLINGS, coupling),
        probe_attenuation=float(probe_att),
        wave_source=source + 1 if 0 <= source <= 3 else 0,
    )


def read_trc_header(path: str | Path) -> TrcHeader:
    """Read and check one ``.trc`` file's header (its samples are not read).

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    TrcHeader
        The header of a file that holds every sample it declares.

    Raises
    ------
    TraceFileError
        Unreadable, not a LeCroy file, truncated, or a segmented (sequence-mode)
        capture, which this reader does not support.
    """
    path = os.fspath(path)
    try:  # one descriptor per file of a read: the fewest calls (no buffered stream)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            size = os.fstat(fd).st_size
            head = os.pread(fd, _MAX_PREFIX_SEARCH + 8 + WAVEDESC_LENGTH, 0)
        finally:
            os.close(fd)
    except OSError as exc:
        raise TraceFileError(f"{path}: cannot read: {exc}") from exc
    header = parse_header(head, path)
    if header.subarray_count > 1 or header.trigtime_array > 0:
        raise TraceFileError(
            f"{path}: segmented (sequence-mode) capture with {header.subarray_count} "
            "segments is not supported"
        )
    if not np.isfinite(header.horiz_interval) or header.horiz_interval <= 0:
        raise TraceFileError(f"{path}: invalid HORIZ_INTERVAL {header.horiz_interval}")
    end = header.data_offset + header.wave_array_1
    if size < end:
        raise TraceFileError(
            f"{path}: truncated: data array declares {header.wave_array_1} bytes from offset "
            f"{header.data_offset}, but the file has only {max(size - header.data_offset, 0)}"
        )
    return header


def read_codes_into(header: TrcHeader, buffer: np.ndarray) -> np.ndarray:
    """Read the sample codes of ``header``'s file into the start of ``buffer``.

    One copy from the file (page cache) into memory the caller reuses for every
    file of a read, so that no fresh memory is faulted in per file.

    Parameters
    ----------
    header : TrcHeader
        The file's header (:func:`read_trc_header`).
    buffer : numpy.ndarray
        uint8 scratch of at least ``wave_array_count * itemsize`` bytes.

    Returns
    -------
    numpy.ndarray
        The codes (int8 or int16, native byte order), a view of ``buffer``.

    Raises
    ------
    TraceFileError
        The file cannot be read or holds fewer samples than its header declares.
    """
    native = header.dtype.newbyteorder("=")
    nbytes = header.wave_array_count * native.itemsize
    target = memoryview(buffer[:nbytes])
    done = 0
    try:
        with open(header.path, "rb", buffering=0) as stream:
            stream.seek(header.data_offset)
            while done < nbytes:
                got = stream.readinto(target[done:])
                if not got:
                    break
                done += got
    except OSError as exc:
        raise TraceFileError(f"{header.path}: cannot read: {exc}") from exc
    if done != nbytes:  # file shrank under us
        raise TraceFileError(f"{header.path}: truncated data array")
    codes = buffer[:nbytes].view(native)
    if not header.dtype.isnative:
        codes.byteswap(inplace=True)
    return codes


def read_trc_file(path: str | Path) -> TrcWaveform:
    """Read one ``.trc`` file (header and raw samples; volts computed on demand).

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    TrcWaveform

    Raises
    ------
    TraceFileError
        Unreadable, not a LeCroy file, truncated, or a segmented (sequence-mode)
        capture, which this reader does not support.
    """
    header = read_trc_header(path)
    raw = np.fromfile(header.path, dtype=header.dtype, count=header.wave_array_count,
                      offset=header.data_offset)
    if raw.size != header.wave_array_count:  # file shrank under us
        raise TraceFileError(f"{path}: truncated data array")
    return TrcWaveform(header=header, raw=raw.astype(raw.dtype.newbyteorder("="), copy=False))


@numba.njit(cache=True, nogil=True)
def volts_into(raw, gain, offset, fill_code, out):  # pragma: no cover - compiled
    """``out[i] = float32(gain * float64(raw[i]) - offset)``: one pass over the codes.

    The operations of :attr:`TrcWaveform.volts` (a float64 product and
    difference, each correctly rounded, then one rounding to float32), without
    its float64 array.  The same pass returns the smallest and largest code and
    whether ``fill_code`` occurs (the clipping and code-storage checks).
    """
    lo = raw[0]
    hi = raw[0]
    fill_seen = False
    for i in range(raw.size):
        v = raw[i]
        out[i] = np.float32(gain * np.float64(v) - offset)
        lo = min(lo, v)
        hi = max(hi, v)
        fill_seen |= v == fill_code
    return lo, hi, fill_seen
