"""LeCroy ``.trc`` oscilloscope captures -> IDEX event datasets.

Lab captures of dust impacts (a LeCroy WaveRunner/WavePro recording the detector's
charge pickup, TOF and target channels) are read into the same kind of event
dataset as the telemetry decoder produces, so that the downstream waveform
analysis runs unchanged on them.

File format
-----------
A ``.trc`` file is an optional SCPI block header ``#<n><n digits>`` (present when
the waveform was saved over the remote interface; ``#9001000350`` announces 1000350
bytes), then the 346-byte ``WAVEDESC`` descriptor (template ``LECROY_2_3``), an
optional user text, optional trigger-time / RIS-time arrays, and the data array
``WAVE_ARRAY_1`` of signed bytes (``COMM_TYPE`` 0) or signed 16-bit words
(``COMM_TYPE`` 1) in the byte order given by ``COMM_ORDER`` (0 big-, 1
little-endian).  Sample ``i`` is ``VERTICAL_GAIN * raw[i] - VERTICAL_OFFSET`` volts
at ``HORIZ_OFFSET + i * HORIZ_INTERVAL`` seconds from the trigger.  Offsets below
are relative to the first byte of ``WAVEDESC``.

Impacts and channels
--------------------
Files of one impact share a trailing number and differ in channel: the channel
number follows a capital ``C`` that does not continue a word, the impact number is
the last run of digits before ``.trc``:

* ``C1--Trace--00003.trc`` (LeCroy default),
* ``C1Fe00003.trc`` (LeCroy auto-save with a title),
* ``peridot_C1_00003.trc`` (renamed),

are all channel 1 of impact 3.  Channel names come from a settings file whose line
*n* names channel C\\ *n* (``peridot_settings.txt``: ``QD 1``, ``TOF Low``, ``TOF High``,
``QD 2``) and are mapped to dataset variables by :func:`channel_variable_name`.

Output layout
-------------
One row per impact along ``epoch`` (TT2000 ns of the scope's trigger time stamp;
the scope clock is taken as UTC, which it is only if the lab set it so).  Waveform
variables are float32 volts at the native sampling; where a channel has one gain
and offset over the impacts read, its ``encoding`` holds them as CF
``scale_factor``/``add_offset`` of int16 codes (:mod:`idexdask.adccodes`), so that
stores keep the recorded codes.  Time axes are given by formula
(:mod:`idexdask.timeaxis`): ``(HORIZ_OFFSET + i * HORIZ_INTERVAL) * 1e6`` µs of the
axis's reference channel, from the per-event terms ``<axis>_start`` (s),
``<axis>_step`` (s) and ``<axis>_count``, computed when read.  Channels that share the
sampling interval and record length of the reference channel (``TOF_High``,
else ``TOF_Mid``, ``TOF_Low``, else the first channel) share the high-rate axis
``time_high_sample_rate`` (epoch, ``time_high_sample_rate_index``), float64 µs;
channels sampled differently go on ``time_low_sample_rate`` if they all agree with
each other, else each on its own ``time_<var>`` axis.  Every waveform variable
names its time variable in its ``time_variable`` attribute.

The scope interpolates the trigger per channel, so channels sharing an axis can
start a fraction of a sample apart (up to ~1 ns in the peridot captures).  The axis
holds the reference channel's exact times; ``channel_time_offset`` (epoch,
channel), µs, holds each channel's first-sample time minus the axis's, so that the
exact time of ``ds[var][e, i]`` is ``time[e, i] + channel_time_offset[e, var]``.

Examples
--------
>>> ds = read_trc("/work/shared/data/scope-trc")          # doctest: +SKIP
>>> ds.TOF_High.attrs["time_variable"]                     # doctest: +SKIP
'time_high_sample_rate'
"""

from __future__ import annotations

import datetime as _dt
import functools
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numba
import numpy as np
import xarray as xr

from idexdask._logging import get_logger
from idexdask.adccodes import CODE_FILL, code_encoding
from idexdask.errors import TraceFileError
from idexdask.timeaxis import AxisTerms, uniform_axis_variable

__all__ = [
    "TRC_NAME_PATTERN",
    "TrcHeader",
    "TrcWaveform",
    "channel_variable_name",
    "parse_trc_filename",
    "read_settings",
    "read_trc",
    "read_trc_file",
    "write_trc",
]

_log = get_logger(__name__)

TRC_NAME_PATTERN = re.compile(r"(?<![A-Za-z0-9])C(?P<channel>\d+)\D(?:.*?\D)?(?P<impact>\d+)\.trc$")
"""Channel number after a ``C`` that does not continue a word; impact = trailing number."""

WAVEDESC_LENGTH = 346
"""Length of the ``LECROY_2_3`` descriptor, bytes."""

_MAX_PREFIX_SEARCH = 64
"""``WAVEDESC`` must start within this many bytes (an SCPI header is 11-20 bytes)."""

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

_RECORD_TYPES = (
    "single_sweep", "interleaved", "histogram", "graph", "filter_coefficient",
    "complex", "extrema", "sequence_obsolete", "centered_RIS", "peak_detect",
)
_COUPLINGS = ("DC_50_Ohms", "ground", "DC_1MOhm", "ground", "AC_1MOhm")


# --------------------------------------------------------------------------- header


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


def _parse_timestamp(buf: bytes, at: int, bo: str) -> tuple[_dt.datetime | None, int]:
    seconds, minute, hour, day, month, year = struct.unpack_from(bo + "dBBBBH", buf, at)
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
    u = struct.unpack_from
    comm_type = u(bo + "h", head, p + 32)[0]
    if comm_type not in (0, 1):
        raise TraceFileError(f"{path}: unsupported COMM_TYPE {comm_type} (0: byte, 1: word)")
    lengths = u(bo + "7i", head, p + 36)  # WAVE_DESCRIPTOR .. RES_ARRAY1
    wave_array_1 = u(bo + "i", head, p + 60)[0]
    (wave_descriptor, user_text, res_desc1, trigtime, ris_time, res_array1, _) = lengths
    if wave_descriptor < WAVEDESC_LENGTH or min(lengths[:6]) < 0 or wave_array_1 < 0:
        raise TraceFileError(
            f"{path}: corrupt descriptor block lengths (WAVE_DESCRIPTOR={wave_descriptor}, "
            f"USER_TEXT={user_text}, TRIGTIME={trigtime}, RIS_TIME={ris_time}, "
            f"WAVE_ARRAY_1={wave_array_1})"
        )
    count = u(bo + "i", head, p + 116)[0]
    width = 1 if comm_type == 0 else 2
    if count < 0 or count * width != wave_array_1:
        # WAVE_ARRAY_COUNT is authoritative only when it agrees with WAVE_ARRAY_1.
        raise TraceFileError(
            f"{path}: WAVE_ARRAY_COUNT={count} disagrees with WAVE_ARRAY_1={wave_array_1} "
            f"bytes for COMM_TYPE {comm_type}"
        )
    stamp, stamp_ns = _parse_timestamp(head, p + 296, bo)
    source = u(bo + "h", head, p + 344)[0]
    return TrcHeader(
        path=path,
        wavedesc_offset=p,
        template_name=_cstr(head[p + 16:p + 32]),
        comm_type=comm_type,
        byte_order=bo,
        wave_descriptor=wave_descriptor,
        user_text=user_text,
        res_desc1=res_desc1,
        trigtime_array=trigtime,
        ris_time_array=ris_time,
        res_array1=res_array1,
        wave_array_1=wave_array_1,
        instrument_name=_cstr(head[p + 76:p + 92]),
        instrument_number=u(bo + "i", head, p + 92)[0],
        trace_label=_cstr(head[p + 96:p + 112]),
        wave_array_count=count,
        subarray_count=u(bo + "i", head, p + 144)[0],
        vertical_gain=float(u(bo + "f", head, p + 156)[0]),
        vertical_offset=float(u(bo + "f", head, p + 160)[0]),
        max_value=float(u(bo + "f", head, p + 164)[0]),
        min_value=float(u(bo + "f", head, p + 168)[0]),
        nominal_bits=u(bo + "h", head, p + 172)[0],
        horiz_interval=float(u(bo + "f", head, p + 176)[0]),
        horiz_offset=float(u(bo + "d", head, p + 180)[0]),
        vertical_unit=_cstr(head[p + 196:p + 244]),
        horizontal_unit=_cstr(head[p + 244:p + 292]),
        trigger_time=stamp,
        trigger_time_ns=stamp_ns,
        record_type=_enum(_RECORD_TYPES, u(bo + "h", head, p + 316)[0]),
        vertical_coupling=_enum(_COUPLINGS, u(bo + "h", head, p + 326)[0]),
        probe_attenuation=float(u(bo + "f", head, p + 328)[0]),
        wave_source=source + 1 if 0 <= source <= 3 else 0,
    )


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
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as stream:
            head = stream.read(_MAX_PREFIX_SEARCH + 8 + WAVEDESC_LENGTH)
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
    raw = np.fromfile(path, dtype=header.dtype, count=header.wave_array_count,
                      offset=header.data_offset)
    if raw.size != header.wave_array_count:  # file shrank under us
        raise TraceFileError(f"{path}: truncated data array")
    return TrcWaveform(header=header, raw=raw.astype(raw.dtype.newbyteorder("="), copy=False))


@numba.njit(cache=True, nogil=True)
def _volts_into(raw, gain, offset, fill_code, out):  # pragma: no cover - compiled
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


# --------------------------------------------------------------------------- writer


def write_trc(
    path: str | Path,
    raw: np.ndarray,
    *,
    horiz_interval: float = 1e-9,
    horiz_offset: float = 0.0,
    vertical_gain: float = 1e-4,
    vertical_offset: float = 0.0,
    trigger_time: _dt.datetime | None = None,
    instrument_name: str = "LECROYIDEXDASK",
    wave_source: int = 1,
    comm_type: int | None = None,
    byte_order: str = "<",
    scpi_header: bool = False,
    user_text: bytes = b"",
) -> Path:
    """Write a single-sweep ``.trc`` file (for tests and the simulator).

    Parameters
    ----------
    path : str or Path
        Output file.
    raw : numpy.ndarray
        ADC counts, int8 (written as ``COMM_TYPE`` 0) or int16 (``COMM_TYPE`` 1).
        Volts read back are ``vertical_gain * raw - vertical_offset``.
    horiz_interval : float
        Sampling interval, s.
    horiz_offset : float
        Time of the first sample relative to the trigger, s.
    vertical_gain : float
        V per count.
    vertical_offset : float
        V.
    trigger_time : datetime.datetime, optional
        Scope clock at the trigger; default 2021-01-13T17:48:58.5.
    instrument_name : str
        At most 15 characters.
    wave_source : int
        Channel number 1-4.
    comm_type : int, optional
        Force a ``COMM_TYPE`` value (even an invalid one, for tests); default from
        ``raw.dtype``.
    byte_order : {"<", ">"}
        Little (``COMM_ORDER`` 1) or big endian (0).
    scpi_header : bool
        Prefix the ``#9nnnnnnnnn`` block header of remote-interface transfers.
    user_text : bytes
        Optional ``USER_TEXT`` block.

    Returns
    -------
    pathlib.Path
    """
    raw = np.asarray(raw)
    if raw.dtype not in (np.int8, np.int16):
        raise TypeError("raw must be int8 or int16 ADC counts")
    ctype = (0 if raw.dtype == np.int8 else 1) if comm_type is None else comm_type
    bo = byte_order
    stamp = trigger_time or _dt.datetime(2021, 1, 13, 17, 48, 58, 500000)
    desc = bytearray(WAVEDESC_LENGTH)

    def put(fmt: str, at: int, *values: Any) -> None:
        struct.pack_into(bo + fmt, desc, at, *values)

    desc[0:8] = b"WAVEDESC"
    desc[16:26] = b"LECROY_2_3"
    put("h", 32, ctype)
    put("h", 34, 1 if bo == "<" else 0)
    put("i", 36, WAVEDESC_LENGTH)
    put("i", 40, len(user_text))
    put("i", 60, raw.nbytes)
    desc[76:76 + min(len(instrument_name), 15)] = instrument_name.encode("ascii")[:15]
    put("i", 116, raw.size)
    put("i", 120, raw.size)
    put("i", 128, max(raw.size - 1, 0))
    put("i", 144, 1)
    put("i", 148, 1)
    put("f", 156, vertical_gain)
    put("f", 160, vertical_offset)
    full = 127 if raw.dtype == np.int8 else 32767
    put("f", 164, full)
    put("f", 168, -full - 1)
    put("h", 172, 8 if raw.dtype == np.int8 else 12)
    put("f", 176, horiz_interval)
    put("d", 180, horiz_offset)
    desc[196:197] = b"V"
    desc[244:245] = b"S"
    seconds = stamp.second + stamp.microsecond * 1e-6
    put("dBBBBH", 296, seconds, stamp.minute, stamp.hour, stamp.day, stamp.month, stamp.year)
    put("f", 328, 1.0)
    put("h", 344, wave_source - 1)
    body = bytes(desc) + user_text + raw.astype(raw.dtype.newbyteorder(bo)).tobytes()
    if scpi_header:
        body = f"#9{len(body):09d}".encode("ascii") + body
    path = Path(path)
    path.write_bytes(body)
    return path


# --------------------------------------------------------------------------- naming


def parse_trc_filename(name: str | Path) -> tuple[int, int] | None:
    """``(channel, impact)`` from a trace file name, or None if it does not match.

    Examples
    --------
    >>> parse_trc_filename("C1--Trace--00003.trc"), parse_trc_filename("C2Fe00003.trc")
    ((1, 3), (2, 3))
    >>> parse_trc_filename("peridot_C4_00006.trc")
    (4, 6)
    """
    m = TRC_NAME_PATTERN.search(Path(name).name)
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


def _channel_map(
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


# --------------------------------------------------------------------------- dataset


def _default_polarity() -> dict[str, int]:
    """``channels.polarity`` of ``configs/scope.yaml``, else -1 for ``TOF_*`` only."""
    from idexdask.config import file_key

    return dict(_polarity_table(*file_key("scope.yaml")))


@functools.lru_cache(maxsize=4)
def _polarity_table(path: str, mtime_ns: int) -> tuple[tuple[str, int], ...]:
    """:func:`_default_polarity` of one version of the file (a campaign reads it once)."""
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


def _tt2000(stamp: _dt.datetime | None, extra_ns: int) -> int:
    """TT2000 ns of a naive datetime taken as UTC (cdflib handles leap seconds)."""
    import cdflib

    if stamp is None:
        return np.iinfo(np.int64).min  # CDF fill value
    us = stamp.microsecond
    value = cdflib.cdfepoch.compute_tt2000(
        [stamp.year, stamp.month, stamp.day, stamp.hour, stamp.minute, stamp.second,
         us // 1000, us % 1000, extra_ns]
    )
    return int(np.asarray(value).ravel()[0])


def _collect(
    path: Path | tuple[Path, ...], errors: str
) -> tuple[Path, dict[int, dict[int, TrcWaveform]], dict[int, list[str]]]:
    if isinstance(path, tuple):  # given files (one impact of a campaign), not a directory
        if not path:
            raise TraceFileError("no .trc files given")
        directory, files = path[0].parent, sorted(path)
        if any(f.parent != directory for f in files):
            raise TraceFileError(f"files of one read must share a directory: {files}")
    elif path.is_dir():
        directory = path
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".trc" and p.is_file())
    elif path.is_file():
        directory, files = path.parent, [path]
    else:
        raise TraceFileError(f"{path}: no such file or directory")
    impacts: dict[int, dict[int, TrcWaveform]] = {}
    bad: dict[int, list[str]] = {}
    for f in files:
        parsed = parse_trc_filename(f.name)
        if parsed is None:
            msg = f"{f}: name does not match <...>C<channel><sep>...<impact>.trc"
            if errors == "raise" and (isinstance(path, tuple) or path.is_file()):
                raise TraceFileError(msg)
            _log.warning("%s; skipped", msg)
            continue
        channel, impact = parsed
        try:
            wf = read_trc_file(f)
        except TraceFileError:
            if errors == "raise":
                raise
            _log.warning("skipping bad trace file %s", f, exc_info=True)
            bad.setdefault(impact, []).append(f.name)
            continue
        if channel in impacts.get(impact, {}):
            raise TraceFileError(
                f"{f}: channel {channel} of impact {impact} also in "
                f"{impacts[impact][channel].header.path}"
            )
        impacts.setdefault(impact, {})[channel] = wf
    if not impacts:
        raise TraceFileError(f"{path}: no readable .trc traces")
    return directory, impacts, bad


def read_trc(
    path: str | Path | Sequence[str | Path],
    *,
    settings: str | Path | Mapping[int, Any] | None = None,
    errors: Literal["raise", "skip"] = "raise",
    polarity: Mapping[str, int] | None = None,
) -> xr.Dataset:
    """Read LeCroy captures (one file or a directory of impacts) into an event dataset.

    Parameters
    ----------
    path : str, Path or sequence of them
        One ``.trc`` file, a directory of them, or files of one directory (the
        settings file is looked for beside them).  Files are grouped into impacts
        by :data:`TRC_NAME_PATTERN`.
    settings : str, Path or mapping, optional
        Channel names: a settings text file (line *n* names C\\ *n*) or a mapping
        ``{1: "QD 1", ...}`` whose values may also be ``{"name": ..., "polarity": ±1}``.
        Default: the ``*settings*.txt`` beside the traces; channels left unnamed are
        called ``C<n>``.
    errors : {"raise", "skip"}
        What a bad file (truncated, not LeCroy, ...) does: raise
        :class:`~idexdask.errors.TraceFileError`, or be logged and skipped (its
        impact keeps its other channels; the missing one is NaN).
    polarity : mapping of str to int, optional
        ``signal_polarity`` per variable name (±1), overriding the defaults
        (``channels.polarity`` of ``configs/scope.yaml``: -1 for ``TOF_*`` and the
        lab's ``QD_1``/``QD_2``; +1 for any other channel) and the settings.

    Returns
    -------
    xarray.Dataset
        Dimensions ``epoch`` (one per impact, sorted by impact number), ``channel``,
        and the time index dimension(s).  Variables: ``impact_number`` (epoch,),
        one float32 waveform per channel (V, attrs ``time_variable``,
        ``signal_polarity``, ``channel``, ``units``...), the float64 µs time axes,
        ``channel_missing`` (epoch,) bool, ``channel_present``, ``channel_clipped``,
        ``vertical_gain`` (V/count), ``vertical_offset`` (V) and
        ``channel_time_offset`` (µs) on (epoch, channel).

    Raises
    ------
    TraceFileError
        Bad input (see ``errors``), no traces, or duplicate channels of an impact.
    """
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', not {errors!r}")
    if isinstance(path, str | Path):
        path = Path(path)
        directory, impacts, bad = _collect(path, errors)
    else:
        directory, impacts, bad = _collect(tuple(Path(p) for p in path), errors)
        path = directory
    layout = _layout(impacts, settings, directory)
    arrays = _impact_arrays(impacts, layout)
    data_vars = {
        **_time_variables(layout, arrays),
        **_waveform_variables(layout, arrays, polarity),
        **_channel_variables(layout, arrays),
    }
    coords = {
        "epoch": ("epoch", arrays.epoch, {"units": "ns", "long_name": "TT2000 of the trigger",
                                          "time_scale": "TT2000 (scope clock taken as UTC)"}),
        "channel": ("channel", [layout.var_of[c] for c in layout.channels]),
    }
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs.update({
        "source": "lecroy_trc",
        "source_kind": "lecroy_trc",  # picks the per-source defaults (calibration preset)
        "instrument_name": ", ".join(sorted(arrays.instruments)),
        "source_path": str(path),
        "settings_source": layout.settings_source or "",
        "channel_map": ", ".join(f"C{c}={layout.var_of[c]}" for c in layout.channels),
        "skipped_files": ", ".join(f for v in bad.values() for f in v),
    })
    _log.info("read %d impacts x %d channels from %s", len(layout.numbers),
              len(layout.channels), path)
    return ds


@dataclass
class _Layout:
    """How a read's files map to variables: channels, names, time axes."""

    numbers: list[int]  #: impact numbers, sorted (the epoch order)
    channels: list[int]  #: scope channels present in some impact, sorted
    var_of: dict[int, str]  #: variable name per channel
    names: dict[int, str]  #: channel names of the settings (long names)
    polarity_of: dict[int, int]  #: polarities given by the settings
    settings_source: str | None
    length_of: dict[int, int]  #: samples per channel (its longest record)
    axis_of: dict[int, str]  #: time axis of each channel
    axis_ref: dict[str, int]  #: reference channel of each axis
    ref: int  #: the reference channel of the impact's time stamp (first TOF channel)


def _layout(
    impacts: dict[int, dict[int, TrcWaveform]],
    settings: str | Path | Mapping[int, Any] | None,
    directory: Path,
) -> _Layout:
    """Step 1: channel names and time axes.  Channels sampled like the first TOF
    channel share ``high_sample_rate``; the others share ``low_sample_rate`` when
    alike, else get an axis each."""
    trace_names = [Path(w.header.path).name for ch in impacts.values() for w in ch.values()]
    names, pol_override, settings_source = _channel_map(settings, directory, trace_names)
    channels = sorted({c for ch in impacts.values() for c in ch} | set(names))
    if settings is None and not names:
        _log.info("%s: no settings file; channels named C<n>", directory)
    var_of = {c: channel_variable_name(names.get(c, f"C{c}")) for c in channels}
    if len(set(var_of.values())) != len(var_of):
        raise TraceFileError(f"{directory}: channel names collide: {var_of}")
    # keep channels only if some impact has them (a settings file may name unused ones)
    present = [c for c in channels if any(c in ch for ch in impacts.values())]
    var_of = {c: var_of[c] for c in present}
    numbers = sorted(impacts)

    def signature(c: int) -> tuple[float, int]:  # (interval of its first impact, length)
        lengths = [impacts[i][c].header.wave_array_count for i in numbers if c in impacts[i]]
        first = next(impacts[i][c] for i in numbers if c in impacts[i])
        return (first.header.horiz_interval, max(lengths))

    def same(a: tuple[float, int], b: tuple[float, int]) -> bool:
        return a[1] == b[1] and abs(a[0] - b[0]) <= 1e-6 * abs(b[0])

    sigs = {c: signature(c) for c in present}
    order = ("TOF_High", "TOF_Mid", "TOF_Low")
    tof = sorted((c for c in present if var_of[c] in order), key=lambda c: order.index(var_of[c]))
    ref = tof[0] if tof else present[0]
    others = [c for c in present if not same(sigs[c], sigs[ref])]
    axis_of: dict[int, str] = {}
    for c in present:
        if c not in others:
            axis_of[c] = "high_sample_rate"
        elif all(same(sigs[o], sigs[others[0]]) for o in others):
            axis_of[c] = "low_sample_rate"
        else:
            axis_of[c] = var_of[c]
    axis_ref = {axis_of[ref]: ref}
    for c in present:
        axis_ref.setdefault(axis_of[c], c)
    return _Layout(numbers=numbers, channels=present, var_of=var_of, names=names,
                   polarity_of=pol_override, settings_source=settings_source,
                   length_of={c: sigs[c][1] for c in present}, axis_of=axis_of,
                   axis_ref=axis_ref, ref=ref)


@dataclass
class _ImpactArrays:
    """Per impact (and channel) values of a read, filled in place by :func:`_impact_arrays`."""

    waves: dict[int, np.ndarray]  #: (impacts, samples) float32 V per channel
    present: np.ndarray  #: (impacts, channels) bool
    clipped: np.ndarray
    gain: np.ndarray  #: V/count
    offset: np.ndarray  #: V
    time_offset: np.ndarray  #: µs, channel's first sample minus its axis's
    files: np.ndarray  #: file names, object
    epoch: np.ndarray  #: TT2000 of the trigger
    trigger_iso: list[str]
    axis_start: dict[str, np.ndarray]  #: s, HORIZ_OFFSET of the axis's reference
    axis_step: dict[str, np.ndarray]  #: s
    axis_count: dict[str, np.ndarray]
    fill_code_seen: set[int] = field(default_factory=set)  #: channels with a code = CODE_FILL
    instruments: set[str] = field(default_factory=set)


def _impact_arrays(impacts: dict[int, dict[int, TrcWaveform]], layout: _Layout) -> _ImpactArrays:
    """Step 2: every impact's volts (one pass over its codes) and header values."""
    n_ev, shape = len(layout.numbers), (len(layout.numbers), len(layout.channels))
    out = _ImpactArrays(
        # written in place below; NaN only where no sample is (missing channel, padding)
        waves={c: np.empty((n_ev, layout.length_of[c]), np.float32) for c in layout.channels},
        present=np.zeros(shape, bool), clipped=np.zeros(shape, bool),
        gain=np.full(shape, np.nan), offset=np.full(shape, np.nan),
        time_offset=np.full(shape, np.nan), files=np.full(shape, "", dtype=object),
        epoch=np.full(n_ev, np.iinfo(np.int64).min, dtype=np.int64), trigger_iso=[""] * n_ev,
        axis_start={a: np.full(n_ev, np.nan) for a in layout.axis_ref},
        axis_step={a: np.full(n_ev, np.nan) for a in layout.axis_ref},
        axis_count={a: np.zeros(n_ev, np.int64) for a in layout.axis_ref},
    )
    for e, number in enumerate(layout.numbers):
        chans = impacts[number]
        _axis_terms_of(out, e, chans, layout)
        for k, c in enumerate(layout.channels):
            if c in chans:
                _channel_of(out, e, k, c, chans[c], layout)
            else:
                out.waves[c][e] = np.nan
        h0 = (chans[layout.ref] if layout.ref in chans else next(iter(chans.values()))).header
        out.epoch[e] = _tt2000(h0.trigger_time, h0.trigger_time_ns)
        out.trigger_iso[e] = h0.trigger_time.isoformat() if h0.trigger_time else ""
        stamps = {w.header.trigger_time for w in chans.values()}
        if len(stamps) > 1:
            _log.warning("impact %d: channels carry different trigger times %s", number, stamps)
    return out


def _axis_terms_of(
    out: _ImpactArrays, e: int, chans: dict[int, TrcWaveform], layout: _Layout
) -> None:
    """Axis times of impact ``e`` from the axis's reference channel, else any on the axis."""
    for axis in layout.axis_ref:
        on_axis = [c for c in layout.channels if layout.axis_of[c] == axis and c in chans]
        if not on_axis:
            continue
        c0 = layout.axis_ref[axis] if layout.axis_ref[axis] in chans else on_axis[0]
        h = chans[c0].header
        out.axis_start[axis][e] = h.horiz_offset
        out.axis_step[axis][e] = h.horiz_interval
        out.axis_count[axis][e] = h.wave_array_count


def _channel_of(
    out: _ImpactArrays, e: int, k: int, c: int, wf: TrcWaveform, layout: _Layout
) -> None:
    """Channel ``c`` (column ``k``) of impact ``e``: V = gain * code - offset in float64,
    rounded once to float32, written in place in the same pass that finds the
    extreme codes (clipping) and the fill code."""
    h = wf.header
    n = h.wave_array_count
    out.present[e, k] = True
    if n:
        lo, hi, fill_seen = _volts_into(wf.raw, h.vertical_gain, h.vertical_offset,
                                        CODE_FILL, out.waves[c][e, :n])
        low, high = (-128, 127) if h.comm_type == 0 else (-32768, 32752)
        out.clipped[e, k] = bool(hi >= high or lo <= low)
        if fill_seen:
            out.fill_code_seen.add(c)
    out.waves[c][e, n:] = np.nan
    out.gain[e, k], out.offset[e, k] = h.vertical_gain, h.vertical_offset
    out.time_offset[e, k] = (h.horiz_offset * 1e6
                             - out.axis_start[layout.axis_of[c]][e] * 1e6)
    out.files[e, k] = Path(h.path).name
    out.instruments.add(h.instrument_name)


def _time_variables(layout: _Layout, arrays: _ImpactArrays) -> dict[str, Any]:
    """Step 3: each axis by formula, (HORIZ_OFFSET + i * HORIZ_INTERVAL) * 1e6 µs, and its terms."""
    data_vars: dict[str, Any] = {}
    for axis, ref in layout.axis_ref.items():
        tname, dim = f"time_{axis}", f"time_{axis}_index"
        terms = AxisTerms.for_axis(tname)
        length = max(layout.length_of[c] for c in layout.channels if layout.axis_of[c] == axis)
        start, step, count = arrays.axis_start[axis], arrays.axis_step[axis], \
            arrays.axis_count[axis]
        data_vars[tname] = uniform_axis_variable(
            ("epoch", dim), start, step, count, length, scale=1e6, terms=terms, attrs={
                "units": "us",
                "long_name": "time from the trigger of the axis's reference channel",
                "reference_channel": layout.var_of[ref],
            })
        data_vars[terms.start] = (("epoch",), start, {
            "units": "s", "long_name": f"{tname}: HORIZ_OFFSET of its reference channel"})
        data_vars[terms.step] = (("epoch",), step, {
            "units": "s", "long_name": f"{tname}: HORIZ_INTERVAL of its reference channel"})
        data_vars[terms.count] = (("epoch",), count, {
            "units": "1", "long_name": f"{tname}: samples recorded (NaN times beyond)"})
    return data_vars


def _waveform_variables(
    layout: _Layout, arrays: _ImpactArrays, polarity: Mapping[str, int] | None
) -> dict[str, xr.Variable]:
    """Step 4: one float32 waveform per channel, with its polarity and ADC scale."""
    data_vars: dict[str, xr.Variable] = {}
    pol_table = _default_polarity()
    for k, c in enumerate(layout.channels):
        var = layout.var_of[c]
        pol = layout.polarity_of.get(c, pol_table.get(var, 1))
        if polarity and var in polarity:
            pol = int(polarity[var])
        here = arrays.present[:, k]
        g, o = arrays.gain[here, k], arrays.offset[here, k]
        attrs = {
            "units": "V",
            "long_name": layout.names.get(c, f"C{c}"),
            "channel": f"C{c}",
            "time_variable": f"time_{layout.axis_of[c]}",
            "signal_polarity": pol,
            "vertical_gain": float(g[0]) if np.all(g == g[0]) else [float(x) for x in g],
            "vertical_offset": float(o[0]) if np.all(o == o[0]) else [float(x) for x in o],
            "source_files": [str(x) for x in arrays.files[:, k]],
        }
        waveform = xr.Variable(("epoch", f"time_{layout.axis_of[c]}_index"), arrays.waves[c],
                               attrs)
        if (g.size and np.all(g == g[0]) and np.all(o == o[0])
                and c not in arrays.fill_code_seen):
            # one gain and offset: the store keeps the codes (idexdask.adccodes)
            waveform.encoding = code_encoding(float(g[0]), -float(o[0]))
        data_vars[var] = waveform
    return data_vars


def _channel_variables(layout: _Layout, arrays: _ImpactArrays) -> dict[str, Any]:
    """Step 5: per impact and channel: presence, clipping, gain, offset, files."""
    present = arrays.present
    return {
        "impact_number": (("epoch",), np.asarray(layout.numbers, dtype=np.int64),
                          {"long_name": "trailing number of the trace file names"}),
        "channel_missing": (("epoch",), ~present.all(axis=1),
                            {"long_name": "some channel of this impact is missing (NaN)"}),
        "channel_present": (("epoch", "channel"), present),
        "channel_clipped": (("epoch", "channel"), arrays.clipped,
                            {"long_name": "ADC reached full scale"}),
        "vertical_gain": (("epoch", "channel"), arrays.gain, {"units": "V/count"}),
        "vertical_offset": (("epoch", "channel"), arrays.offset, {"units": "V"}),
        "channel_time_offset": (("epoch", "channel"), arrays.time_offset, {
            "units": "us",
            "long_name": "first-sample time of the channel minus that of its time axis",
        }),
        "source_file": (("epoch", "channel"), arrays.files.astype(str)),
        "trigger_time": (("epoch",), np.asarray(arrays.trigger_iso, dtype=str),
                         {"long_name": "scope clock at the trigger (ISO 8601)"}),
    }
