"""Batched linear algebra of Levenberg–Marquardt: normal equations, damped steps, covariance.

Every function works on a stack of small systems, one per fit: ``A`` is
(n_fits, n_params, n_params), ``b`` (n_fits, n_params).  The systems are
Marquardt-scaled (unit diagonal) before they are solved or inverted, so they are
never singular through scale alone.  :func:`solve_damped_one` is the compiled
engine's version of :func:`solve_damped` for one fit.
"""

from __future__ import annotations

import logging
import math
from types import ModuleType
from typing import Any

import numba

from idexdask.analysis.fitting.iteration import LAMBDA_MIN

__all__ = ["covariance", "normal_equations", "solve_damped", "solve_damped_one"]

log = logging.getLogger(__name__)


def normal_equations(xp: ModuleType, jt: Any, r: Any) -> tuple[Any, Any]:
    """``A = Jt Jt^T`` (n, p, p) and ``b = Jt r`` (n, p) for ``Jt`` (n, p, m)."""
    a = jt @ xp.swapaxes(jt, 1, 2)
    b = (jt @ r[:, :, None])[:, :, 0]
    return a, b


def solve_damped(xp: ModuleType, a: Any, b: Any, lam: Any) -> Any:
    """Solve ``(A + lam*diag(A)) d = b`` per fit, Marquardt-scaled so it is never singular."""
    d = xp.diagonal(a, axis1=1, axis2=2)
    dmax = xp.max(d, axis=1, keepdims=True)
    d = xp.maximum(d, 1e-30 * dmax + 1e-300)
    s = 1.0 / xp.sqrt(d)
    n, k = b.shape
    eye = xp.eye(k, dtype=a.dtype)
    m = a * s[:, :, None] * s[:, None, :] + (lam[:, None, None] + LAMBDA_MIN) * eye
    rhs = (s * b)[:, :, None]
    try:
        ds = xp.linalg.solve(m, rhs)[:, :, 0]
    except Exception as exc:  # LinAlgError (numpy) or its CuPy counterpart
        log.debug("batched solve failed (%s); falling back to eigh", exc)
        w, v = xp.linalg.eigh(m)
        w = xp.where(w > 0.0, w, math.inf)
        ds = (v @ ((xp.swapaxes(v, 1, 2) @ rhs) / w[:, :, None]))[:, :, 0]
    return s * ds


def covariance(xp: ModuleType, a: Any) -> Any:
    """``inv(A)`` per fit, Marquardt-scaled; NaN where ``A`` is singular or indefinite.

    A batched LU inverse of the unit-diagonal matrix, accepted where it is
    finite, has a positive diagonal and reproduces the identity to 1e-3 (that is,
    condition numbers up to ~1e12); an eigen-decomposition (5x slower) is only
    the fallback when the batched LU meets an exactly singular matrix.
    """
    k = a.shape[1]
    eye = xp.eye(k, dtype=a.dtype)
    d = xp.diagonal(a, axis1=1, axis2=2)
    good = xp.all(d > 0.0, axis=1) & xp.all(xp.isfinite(a), axis=(1, 2))
    d = xp.where(d > 0.0, d, 1.0)
    s = 1.0 / xp.sqrt(d)
    m = a * s[:, :, None] * s[:, None, :]
    m = xp.where(good[:, None, None], m, eye)
    try:
        inv = xp.linalg.inv(m)
    except Exception as exc:  # LinAlgError (numpy) or its CuPy counterpart
        log.debug("batched inverse failed (%s); falling back to eigh", exc)
        w, v = xp.linalg.eigh(m)
        good &= w[:, 0] > 1e-14 * w[:, -1]
        w = xp.where(w > 0.0, w, 1.0)
        inv = (v / w[:, None, :]) @ xp.swapaxes(v, 1, 2)
    resid = xp.max(xp.abs(m @ inv - eye), axis=(1, 2))
    ok = good & (resid < 1e-3) & xp.all(xp.diagonal(inv, axis1=1, axis2=2) > 0.0, axis=1)
    cov = inv * s[:, :, None] * s[:, None, :]
    return xp.where(ok[:, None, None], cov, math.nan)



@numba.njit(cache=True, nogil=True, error_model="numpy")
def solve_damped_one(a, b, lam, step, m, s):  # pragma: no cover - compiled
    """``solve_damped`` for one fit, by Gaussian elimination with partial pivoting.

    ``m`` is positive definite for a finite ``A`` (``lam + LAMBDA_MIN > 0`` on
    the unit diagonal), so a zero pivot cannot occur; if it does (non-finite
    input), the step is NaN, which the iteration rejects like any failed step.
    """
    k = b.size
    dmax = a[0, 0]
    nan = False
    for j in range(k):
        d = a[j, j]
        if d != d:
            nan = True
        elif d > dmax:
            dmax = d
    floor = 1e-30 * dmax + 1e-300
    for j in range(k):
        d = a[j, j]
        s[j] = math.nan if nan else 1.0 / math.sqrt(max(d, floor))
    shift = lam + LAMBDA_MIN
    for j in range(k):
        for c in range(k):
            m[j, c] = a[j, c] * s[j] * s[c] + shift * (1.0 if j == c else 0.0)
        step[j] = s[j] * b[j]
    for c in range(k):  # forward elimination
        piv = c
        big = abs(m[c, c])
        for r in range(c + 1, k):
            v = abs(m[r, c])
            if v > big:
                big = v
                piv = r
        if big == 0.0:
            step[:] = math.nan
            return
        if piv != c:
            for j in range(k):
                m[c, j], m[piv, j] = m[piv, j], m[c, j]
            step[c], step[piv] = step[piv], step[c]
        for r in range(c + 1, k):
            f = m[r, c] / m[c, c]
            for j in range(c + 1, k):
                m[r, j] -= f * m[c, j]
            step[r] -= f * step[c]
    for c in range(k - 1, -1, -1):  # back substitution
        v = step[c]
        for j in range(c + 1, k):
            v -= m[c, j] * step[j]
        step[c] = v / m[c, c]
    for j in range(k):
        step[j] *= s[j]

