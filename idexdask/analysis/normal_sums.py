"""Point-by-point sums of a five-parameter fit's normal equations, compiled.

The compiled model kernels (the EMG + constant line of
:mod:`idexdask.analysis.fitting.emg_kernels`, the impact charge pulse of
:mod:`idexdask.analysis.impact_kernels`) walk a window once and add each point's
weighted Jacobian column and residual to ``A = J J^T``, ``b = J r`` and the
chi-square.  The running sums are a tuple of 21 floats, which numba keeps in
registers once these helpers are inlined: no (n_params, n_points) temporary.
This module is a leaf (numba only) so that both kernel modules can share it.
"""

from __future__ import annotations

import numba

__all__ = ["ACC5_ZERO", "acc5", "store5"]


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def acc5(acc, j0, j1, j2, j3, j4, r):  # pragma: no cover - compiled
    """Add one point to the running sums of ``A`` (upper triangle), ``b`` and chi-square.

    ``acc`` is a tuple of 21 floats (kept in registers once inlined).
    """
    return (
        acc[0] + j0 * j0,
        acc[1] + j0 * j1,
        acc[2] + j0 * j2,
        acc[3] + j0 * j3,
        acc[4] + j0 * j4,
        acc[5] + j1 * j1,
        acc[6] + j1 * j2,
        acc[7] + j1 * j3,
        acc[8] + j1 * j4,
        acc[9] + j2 * j2,
        acc[10] + j2 * j3,
        acc[11] + j2 * j4,
        acc[12] + j3 * j3,
        acc[13] + j3 * j4,
        acc[14] + j4 * j4,
        acc[15] + j0 * r,
        acc[16] + j1 * r,
        acc[17] + j2 * r,
        acc[18] + j3 * r,
        acc[19] + j4 * r,
        acc[20] + r * r,
    )



@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def store5(acc, a, b):  # pragma: no cover - compiled
    """Write the sums of :func:`acc5` to ``A`` (symmetric) and ``b``; return chi-square."""
    a[0, 0] = acc[0]
    a[0, 1] = a[1, 0] = acc[1]
    a[0, 2] = a[2, 0] = acc[2]
    a[0, 3] = a[3, 0] = acc[3]
    a[0, 4] = a[4, 0] = acc[4]
    a[1, 1] = acc[5]
    a[1, 2] = a[2, 1] = acc[6]
    a[1, 3] = a[3, 1] = acc[7]
    a[1, 4] = a[4, 1] = acc[8]
    a[2, 2] = acc[9]
    a[2, 3] = a[3, 2] = acc[10]
    a[2, 4] = a[4, 2] = acc[11]
    a[3, 3] = acc[12]
    a[3, 4] = a[4, 3] = acc[13]
    a[4, 4] = acc[14]
    b[0] = acc[15]
    b[1] = acc[16]
    b[2] = acc[17]
    b[3] = acc[18]
    b[4] = acc[19]
    return acc[20]


#: The sums of no point: start value of :func:`acc5`.
ACC5_ZERO = (0.0,) * 21

