"""Compiled binary search of increasing arrays, shared by the analysis and
composition kernels (numba functions calling it inline their own copy)."""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["count_below"]


@numba.njit(cache=True, nogil=True)
def count_below(x: np.ndarray, m: int, value: float) -> int:  # pragma: no cover - compiled
    """How many of the increasing ``x[:m]`` lie below ``value``:
    ``numpy.searchsorted(x[:m], value, side="left")`` (NaN sorts last)."""
    lo = 0
    hi = m
    while lo < hi:
        mid = (lo + hi) // 2
        if x[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo
