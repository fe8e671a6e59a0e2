"""Writing single-sweep LeCroy ``.trc`` files (for tests and the simulator)."""

from __future__ import annotations

import datetime as _dt
import struct
from pathlib import Path
from typing import Any

import numpy as np

from idexdask.io.trc.format import WAVEDESC_LENGTH

__all__ = ["write_trc"]


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
