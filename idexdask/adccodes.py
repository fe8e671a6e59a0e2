"""Waveforms kept as their recorded ADC codes, with CF ``scale_factor`` / ``add_offset``.

A LeCroy scope records 16-bit codes and a gain and offset per channel; its volts
are ``VERTICAL_GAIN * code - VERTICAL_OFFSET``.  Stored as float32 volts a
sample takes twice the bytes of its code and carries no more information, so
stores keep the codes (int16) with the CF attributes

    ``scale_factor`` = gain (V/count), ``add_offset`` = -offset (V),
    ``_FillValue`` = :data:`CODE_FILL` (a missing sample, NaN in volts),

and every reader decodes them to the float32 volts :func:`idexdask.read_trc`
gives, exactly: ``float32(code * scale_factor + add_offset)``, computed in
float64 (the same correctly rounded operations as ``gain * code - offset``).
xarray's own CF decoding (``xr.open_zarr`` with its defaults) gives the float64
values before that last rounding.

A dataset in memory keeps float32 volts for the analysis; the codes' attributes
are its variables' ``encoding`` (:func:`code_encoding`), which the store writes.
A reader that has the recorded codes at hand may keep them beside the volts
(:class:`RecordedCodes`, under :data:`RECORDED_CODES_KEY` of the encoding): the
store then writes them as they are instead of finding each value's code again
(:meth:`CodeScale.encode`, one pass over the volts: ~0.3 ms of CPU per
500,002-sample channel).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numba
import numpy as np
import xarray as xr

from idexdask.compat.lazy import in_memory, lazy_selection, lazy_variable
from idexdask.errors import IdexDaskError

__all__ = [
    "CODE_DTYPE",
    "CODE_FILL",
    "RECORDED_CODES_KEY",
    "CodeScale",
    "RecordedCodes",
    "code_encoding",
    "code_scale",
    "code_value",
    "decode_codes",
    "decode_code_variables",
    "encode_codes",
    "recorded_codes",
]

CODE_DTYPE = np.dtype(np.int16)
CODE_FILL = 32767
"""Code of a missing sample.  A 12-bit LeCroy ADC writes multiples of 16
(``32752`` at most); a capture that records this code is refused by
:func:`encode_codes` rather than read back as missing."""


RECORDED_CODES_KEY = "recorded_codes"
"""Key of a variable's ``encoding`` holding its :class:`RecordedCodes`.  Not a
CF or Zarr encoding: xarray's writers drop keys they do not know, and the
campaign store's schema leaves it out."""


class RecordedCodes:
    """The int16 codes that a read-only float32 volts array was decoded from.

    The reader that decoded ``volts`` from ``codes`` (``volts`` =
    :meth:`CodeScale.decode` of ``codes``, exactly, ``fill`` where NaN) keeps
    both; ``volts`` is made read-only, so that as long as an array's values lie
    in its memory they are still those of the codes.  :meth:`codes_of` gives
    the codes of such an array (``volts`` itself or a view of some of its rows).

    It travels in a variable's ``encoding`` (:data:`RECORDED_CODES_KEY`): a copy
    of the encoding shares it (a deep copy too: a copied volts array lies
    elsewhere, and :meth:`codes_of` refuses it), and it does not travel between
    processes (pickled, it holds nothing): a write elsewhere finds the codes
    again from the values.

    Parameters
    ----------
    volts : numpy.ndarray or None
        float32 values, C-contiguous, made read-only here; None for codes whose
        volts are decoded later (a lazy waveform: :meth:`attach`).
    codes : numpy.ndarray
        int16 codes of the same shape.
    scale : CodeScale
        The scale that decodes ``codes`` to ``volts``.
    """

    def __init__(self, volts: np.ndarray | None, codes: np.ndarray | None,
                 scale: CodeScale | None) -> None:
        self.volts: np.ndarray | None = None
        self.codes = codes
        self.scale = scale
        if volts is not None:
            self.attach(volts)

    def attach(self, volts: np.ndarray) -> None:
        """Give the volts decoded from :attr:`codes` (made read-only here), for
        codes recorded before their volts were decoded (a lazy waveform).

        Raises
        ------
        ValueError
            If ``volts`` and the codes are not of one C-contiguous shape,
            float32 and int16, or other volts were given before.
        """
        codes = self.codes
        if (codes is None or volts.shape != codes.shape or volts.dtype != np.float32
                or codes.dtype != CODE_DTYPE or not volts.flags.c_contiguous
                or not codes.flags.c_contiguous):
            raise ValueError("volts and codes of one C-contiguous shape, float32 and int16")
        if self.volts is not None and self.volts is not volts:
            raise ValueError("these codes' volts were given before")
        volts.flags.writeable = False
        self.volts = volts

    def __deepcopy__(self, memo: dict) -> RecordedCodes:
        return self  # read-only arrays; a deep copy of the volts lies elsewhere

    def __reduce__(self) -> tuple:
        return (RecordedCodes, (None, None, None))  # the codes stay in this process

    def codes_of(self, values: np.ndarray, scale: CodeScale) -> np.ndarray | None:
        """The codes of ``values`` if they are rows of :attr:`volts` (and ``scale``
        is the one they were decoded with), else None.

        ``values`` must be ``volts`` or a view of consecutive whole rows of it
        (``volts[a:b]``): same dtype, row shape and strides, its data starting
        at a row of ``volts``' memory.
        """
        volts, codes = self.volts, self.codes
        if volts is None or codes is None or self.scale is None:
            return None
        if (scale.scale, scale.offset, scale.fill) != (
                self.scale.scale, self.scale.offset, self.scale.fill):
            return None
        if (not isinstance(values, np.ndarray) or values.dtype != volts.dtype
                or values.ndim != volts.ndim or values.shape[1:] != volts.shape[1:]
                or values.strides[1:] != volts.strides[1:] or volts.ndim < 2):
            return None
        row_bytes = volts.itemsize * int(np.prod(volts.shape[1:]))
        if values.shape[0] > 1 and values.strides[0] != row_bytes:
            return None
        offset = values.__array_interface__["data"][0] - volts.__array_interface__["data"][0]
        if row_bytes <= 0 or offset < 0 or offset % row_bytes:
            return None
        first = offset // row_bytes
        if first + values.shape[0] > volts.shape[0]:
            return None
        return codes[first:first + values.shape[0]]


def recorded_codes(variable: xr.Variable, scale: CodeScale | None = None) -> np.ndarray | None:
    """The recorded codes of a waveform variable's values, without reading the values.

    For a variable carrying :class:`RecordedCodes` (:data:`RECORDED_CODES_KEY` of
    its ``encoding``) whose values are whole rows of those codes' volts: a
    pipeline read's waveform (:func:`idexdask.read_trc` with ``keep_codes``) or
    a selection of its events (``isel(epoch=...)``), its volts in memory or still
    lazy (``lazy_volts``: no volts are decoded here).

    Parameters
    ----------
    variable : xarray.Variable
        The waveform (float32 volts, events first).
    scale : CodeScale, optional
        The scale the codes must be of (a store's); default: theirs.

    Returns
    -------
    numpy.ndarray or None
        int16 codes of the variable's shape (a view of the recorded ones), or
        None where the variable carries none, holds other values (a copy,
        computed values, part of a row) or ``scale`` is another.
    """
    recorded = variable.encoding.get(RECORDED_CODES_KEY)
    if not isinstance(recorded, RecordedCodes) or recorded.codes is None or recorded.scale is None:
        return None
    if scale is not None and (scale.scale, scale.offset, scale.fill) != (
            recorded.scale.scale, recorded.scale.offset, recorded.scale.fill):
        return None
    selection = lazy_selection(variable)
    if selection is not None:
        source, key = selection
        if getattr(source, "recorded", None) is not recorded or len(key) != recorded.codes.ndim:
            return None
        rows, *others = key
        whole = all(isinstance(k, slice) and k.indices(n) == (0, n, 1)
                    for k, n in zip(others, recorded.codes.shape[1:], strict=True))
        if not (whole and isinstance(rows, slice) and rows.step in (None, 1)):
            return None
        return recorded.codes[rows]
    values = in_memory(variable)
    return None if values is None else recorded.codes_of(values, recorded.scale)


class CodeScale:
    """The scale of one waveform variable: volts = code * scale + offset.

    Parameters
    ----------
    scale : float
        ``scale_factor``, units per count.
    offset : float
        ``add_offset``, units.
    fill : int
        Code of a missing sample.
    """

    def __init__(self, scale: float, offset: float, fill: int = CODE_FILL) -> None:
        self.scale = float(scale)
        self.offset = float(offset)
        self.fill = int(fill)

    def decode(self, codes: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """float32 values of ``codes`` (NaN at the fill code)."""
        wide = np.multiply(codes, self.scale, dtype=np.float64)
        wide += self.offset
        if out is None:
            out = np.empty(codes.shape, np.float32)
        out[...] = wide
        missing = codes == self.fill
        if missing.any():
            out[missing] = np.nan
        return out

    def encode(self, values: np.ndarray) -> np.ndarray | None:
        """The codes of float ``values``, or None where they are not exactly codes.

        The codes must decode (:meth:`decode`) to exactly ``values``, NaN to NaN.
        One compiled pass: each value's code, checked by decoding it back.
        """
        values = np.ascontiguousarray(values)
        if values.dtype not in (np.float32, np.float64):
            return None
        codes = np.empty(values.shape, CODE_DTYPE)
        flat, out = values.reshape(-1), codes.reshape(-1)
        single = values.dtype == np.float32
        # the common case in one branch-free pass; any value it cannot place
        # (a product off by one code, out of range, the fill code) sends the
        # whole array through the exact pass, which decides
        ok = _encode_products(flat, self.scale, self.offset, self.fill, single, out)
        if not ok:
            ok = _encode_exact(flat, self.scale, self.offset, self.fill, single, out)
        return codes if ok else None


@numba.njit(cache=True, nogil=True)
def _encode_products(values, scale, offset, fill, single, codes):  # pragma: no cover - compiled
    """:func:`_encode_exact`'s first guess for every value, in a loop without
    branches (it vectorises): ``codes[i]`` from the product with the inverse
    scale, True when every value is exactly its code's (the codes are then
    those :func:`_encode_exact` gives), False when some value needs more."""
    inverse = 1.0 / scale
    ok = True
    if single:
        for i in range(values.size):
            v = values[i]
            c = np.rint((np.float64(v) - offset) * inverse)
            nan = v != v
            ok &= nan | ((code_value(c, scale, offset, True) == v) & (c >= -32768.0)
                         & (c <= 32767.0) & (c != fill))
            codes[i] = np.int16(fill if nan else min(max(c, -32768.0), 32767.0))
    else:
        for i in range(values.size):
            v = values[i]
            c = np.rint((np.float64(v) - offset) * inverse)
            nan = v != v
            ok &= nan | ((code_value(c, scale, offset, False) == v) & (c >= -32768.0)
                         & (c <= 32767.0)
                         & (c != fill))
            codes[i] = np.int16(fill if nan else min(max(c, -32768.0), 32767.0))
    return ok


@numba.njit(cache=True, nogil=True)
def _encode_exact(values, scale, offset, fill, single, codes):  # pragma: no cover - compiled
    """``codes[i]`` = the int16 code of ``values[i]`` (``fill`` for NaN); False as soon
    as a value is not exactly ``float(code * scale + offset)`` of an int16 code
    other than ``fill`` (``single``: rounded to float32)."""
    inverse = 1.0 / scale  # a product is ~4x cheaper than a quotient; checked below
    for i in range(values.size):
        v = values[i]
        if v != v:
            codes[i] = fill
            continue
        c = np.rint((np.float64(v) - offset) * inverse)
        if not _decodes_to(c, v, scale, offset, single):
            c = np.rint((np.float64(v) - offset) / scale)
            if not _decodes_to(c, v, scale, offset, single):
                return False
        if not (-32768.0 <= c <= 32767.0) or c == fill:
            return False
        codes[i] = np.int16(c)
    return True


@numba.njit(cache=True, nogil=True, inline="always")
def code_value(code: float, scale: float, offset: float, single: bool) -> float:
    # pragma: no cover - compiled
    """The value code ``code`` decodes to (:meth:`CodeScale.decode`): ``code *
    scale + offset`` in float64, rounded to float32 when the values are float32
    (``single``), as float64.  The one statement of that rounding for the
    compiled kernels that find or check codes."""
    back = code * scale + offset
    return np.float64(np.float32(back)) if single else back


@numba.njit(cache=True, nogil=True, inline="always")
def _decodes_to(code, value, scale, offset, single):  # pragma: no cover - compiled
    """Whether ``code`` decodes (as :meth:`CodeScale.decode`) to exactly ``value``."""
    return code_value(code, scale, offset, single) == value


def code_encoding(scale: float, offset: float) -> dict[str, Any]:
    """The ``encoding`` of a float waveform that is stored as codes."""
    return {"dtype": CODE_DTYPE.name, "scale_factor": float(scale),
            "add_offset": float(offset), "_FillValue": CODE_FILL}


def code_scale(mapping: Mapping[str, Any]) -> CodeScale | None:
    """The scale in ``mapping`` (a variable's encoding or its stored attributes), if any."""
    if "scale_factor" not in mapping and "add_offset" not in mapping:
        return None
    return CodeScale(float(mapping.get("scale_factor", 1.0)),
                     float(mapping.get("add_offset", 0.0)),
                     int(mapping.get("_FillValue", CODE_FILL)))


def decode_codes(codes: np.ndarray, scale: float, offset: float,
                 fill: int = CODE_FILL) -> np.ndarray:
    """float32 ``codes * scale + offset`` (computed in float64), NaN at ``fill``."""
    return CodeScale(scale, offset, fill).decode(np.asarray(codes))


def encode_codes(values: np.ndarray, scale: float, offset: float,
                 fill: int = CODE_FILL) -> np.ndarray:
    """int16 codes that :func:`decode_codes` maps back to exactly ``values``.

    Raises
    ------
    IdexDaskError
        If ``values`` are not codes of this scale (another gain or offset, a
        value between codes, out of range, or the fill code recorded).
    """
    codes = CodeScale(scale, offset, fill).encode(values)
    if codes is None:
        raise IdexDaskError(
            f"values are not int16 codes of scale {scale} and offset {offset}"
        )
    return codes


class _DecodedArray:
    """float32 volts of a lazy Variable of codes, decoded when indexed.

    A source of :func:`idexdask.compat.lazy.lazy_variable`.
    """

    def __init__(self, codes: xr.Variable, scale: CodeScale) -> None:
        self.codes = codes
        self.scale = scale
        self.shape = tuple(codes.shape)
        self.dtype = np.dtype(np.float32)

    def compute(self, key: tuple) -> np.ndarray:
        """Volts at the outer-indexing ``key``."""
        return self.scale.decode(np.asarray(self.codes[key].values))


def decode_code_variables(dataset: xr.Dataset) -> xr.Dataset:
    """Decode the integer variables with ``scale_factor``/``add_offset`` attributes.

    For a dataset opened without CF decoding (``mask_and_scale=False``): each such
    variable becomes float32 values (lazy; Dask-backed ones by block), its CF
    attributes moved to its ``encoding``.  Other variables are unchanged.
    """
    new = {}
    for name, variable in dataset.variables.items():
        scale = code_scale(variable.attrs)
        if scale is None or variable.dtype.kind not in "iu":
            continue
        attrs = {k: v for k, v in variable.attrs.items()
                 if k not in ("scale_factor", "add_offset", "_FillValue")}
        encoding = {**variable.encoding, **code_encoding(scale.scale, scale.offset),
                    "_FillValue": scale.fill}
        if _is_dask(variable):
            decoded = variable.data.map_blocks(scale.decode, dtype=np.float32)
            new[str(name)] = xr.Variable(variable.dims, decoded, attrs=attrs, encoding=encoding)
        else:
            new[str(name)] = lazy_variable(
                variable.dims, _DecodedArray(variable.to_base_variable(), scale),
                attrs=attrs, encoding=encoding)
    if not new:
        return dataset
    return dataset.assign({k: v for k, v in new.items() if k not in dataset.coords})


def _is_dask(variable: xr.Variable) -> bool:
    return getattr(variable, "chunks", None) is not None
