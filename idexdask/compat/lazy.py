"""Variables computed when indexed: xarray's lazy backend arrays, or values in full.

A decoded file's time axes and a lab store's decoded waveforms hold far more
bytes than information (a time axis is one number per event).  xarray's own
file backends keep such variables lazy: a ``LazilyIndexedArray`` over a
``BackendArray`` whose ``__getitem__`` turns xarray's indexers into outer
indexing through ``explicit_indexing_adapter``.  Those two names live in
``xarray.core.indexing``, which xarray documents for backend authors but does
not promise to keep; the public path is a plain variable of the values
computed in full, the same numbers (the same function computes them) at the
cost of memory.

Contract
--------
A *source* has ``shape``, ``dtype`` and ``compute(key)``, where ``key`` holds
one entry per axis (an int, a slice, or a 1-D integer array; outer indexing)
and the result is the source's values at that selection.  :func:`lazy_variable`
wraps it; both paths return ``compute`` of what is asked, so their values are
identical bit for bit.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import xarray as xr

from idexdask.compat import public_api_forced

try:  # the internals: absent or renamed in some xarray release, the public path serves
    from xarray.backends import BackendArray
    from xarray.core import indexing as _indexing
except ImportError:  # pragma: no cover - depends on the installed xarray
    BackendArray = object  # type: ignore[assignment,misc]
    _indexing = None

__all__ = ["OuterIndexedSource", "in_memory", "internals_available", "lazy_selection",
           "lazy_variable", "outer_index"]

logger = logging.getLogger(__name__)


class OuterIndexedSource(Protocol):
    """What :func:`lazy_variable` wraps."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def compute(self, key: tuple) -> np.ndarray:
        """Values at ``key`` (one int, slice or 1-D integer array per axis)."""


def internals_available() -> bool:
    """Whether this xarray has the lazy-indexing names the shortcut uses.

    Returns
    -------
    bool
        False when the public path is forced (``IDEXDASK_PUBLIC_API`` names
        ``lazy``) or xarray lacks ``BackendArray``, ``LazilyIndexedArray``,
        ``explicit_indexing_adapter`` or ``IndexingSupport.OUTER``.
    """
    if public_api_forced("lazy"):
        return False
    if _indexing is None:  # pragma: no cover - depends on the installed xarray
        return False
    names = ("LazilyIndexedArray", "explicit_indexing_adapter", "IndexingSupport")
    return all(hasattr(_indexing, n) for n in names) and hasattr(
        _indexing.IndexingSupport, "OUTER"
    )


class _LazyBackendArray(BackendArray):
    """A source seen as an xarray backend array (outer indexing)."""

    def __init__(self, source: OuterIndexedSource) -> None:
        self.source = source
        self.shape = tuple(source.shape)
        self.dtype = np.dtype(source.dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        return _indexing.explicit_indexing_adapter(
            key, self.shape, _indexing.IndexingSupport.OUTER, self.source.compute
        )


def lazy_variable(
    dims: Sequence[Hashable],
    source: OuterIndexedSource,
    *,
    attrs: Mapping[str, Any] | None = None,
    encoding: Mapping[str, Any] | None = None,
) -> xr.Variable:
    """An xarray variable whose values are ``source.compute`` of what is indexed.

    Parameters
    ----------
    dims : sequence of hashable
        The variable's dimensions, one per axis of ``source``.
    source : OuterIndexedSource
        Computes the values (see the module's contract).
    attrs, encoding : mapping, optional
        The variable's attributes and encoding.

    Returns
    -------
    xarray.Variable
        Lazy (computed per indexing) when :func:`internals_available`; else
        holding ``source.compute`` of the whole array.
    """
    if internals_available():
        data: Any = _indexing.LazilyIndexedArray(_LazyBackendArray(source))
    else:
        logger.debug("xarray's lazy indexing is not used: computing %s in full", source.shape)
        data = np.asarray(source.compute(tuple(slice(None) for _ in source.shape)))
    return xr.Variable(tuple(dims), data, attrs=dict(attrs or {}),
                       encoding=dict(encoding or {}))


def lazy_selection(variable: xr.Variable) -> tuple[Any, tuple] | None:
    """The source of a variable made by :func:`lazy_variable`, and what it selects.

    Parameters
    ----------
    variable : xarray.Variable
        Any variable.

    Returns
    -------
    tuple of (OuterIndexedSource, tuple) or None
        The source and the outer-indexing key (one int, slice or 1-D integer
        array per axis of the source) of a variable still lazy over it (itself
        or a selection of it, e.g. ``isel``), without computing any value; None
        for any other variable (values in memory, another backend, or the
        internals unavailable).
    """
    if not internals_available():
        return None
    data = getattr(variable, "_data", None)  # xarray keeps a lazy array there unloaded
    if not isinstance(data, _indexing.LazilyIndexedArray):
        return None
    backend = getattr(data, "array", None)
    key = getattr(getattr(data, "key", None), "tuple", None)
    if not isinstance(backend, _LazyBackendArray) or key is None:
        return None
    return backend.source, tuple(key)


def in_memory(variable: xr.Variable) -> np.ndarray | None:
    """The NumPy array a variable holds, or None where its values are not in memory
    as one (lazy, Dask, another backend's array), without computing anything."""
    data = getattr(variable, "_data", None)  # what ``variable.data`` returns for NumPy
    return data if isinstance(data, np.ndarray) else None


def outer_index(array: np.ndarray, key: tuple) -> np.ndarray:
    """``array`` at an outer-indexing ``key`` (the module's contract): basic
    indexing (a view) where every entry is an int or a slice."""
    if all(isinstance(k, int | np.integer | slice) for k in key):
        return array[key]
    result, axis = array, 0
    for k in key:
        if isinstance(k, int | np.integer):
            result = result.take(int(k), axis=axis)  # the axis goes
        else:
            result = result[(slice(None),) * axis + (k,)]
            axis += 1
    return result
