"""Parameter bounds as lmfit applies them: the MINUIT transforms.

The fitter iterates on unbounded internal parameters ``theta`` and maps them to
the bounded external ones: ``sin`` for a two-sided bound, ``sqrt`` for a
one-sided one, the identity for none (lmfit's transforms, so a batch fit lands
on the same minimum as ``lmfit.Model.fit`` with the same bounds).
:class:`Bounds` does it for a batch of fits on any array namespace;
:func:`to_external_one` and :func:`at_bound_one` are its compiled twins for one
fit, used by the compiled engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numba

from idexdask.analysis import xp as _xp

__all__ = ["Bounds", "at_bound_one", "to_external_one"]


@dataclass(frozen=True)
class Bounds:
    """Per-fit, per-parameter bound kinds and safe (finite) bound values.

    Attributes
    ----------
    lo, hi : array
        Lower and upper bounds (n_fits, n_params), 0 where there is none.
    has_lo, has_hi : array of bool
        Whether each parameter has a lower / upper bound (n_fits, n_params).
    """

    lo: Any  # finite stand-in where unbounded
    hi: Any
    has_lo: Any
    has_hi: Any

    @classmethod
    def from_limits(cls, xp: ModuleType, lower: Any, upper: Any) -> Bounds:
        """Bounds from limits with ``-inf``/``inf`` for none (n_fits, n_params)."""
        has_lo = xp.isfinite(lower)
        has_hi = xp.isfinite(upper)
        return cls(
            lo=xp.where(has_lo, lower, 0.0),
            hi=xp.where(has_hi, upper, 0.0),
            has_lo=has_lo,
            has_hi=has_hi,
        )

    def slice(self, start: int, stop: int) -> Bounds:
        """The bounds of fits ``start:stop``."""
        return Bounds(
            self.lo[start:stop],
            self.hi[start:stop],
            self.has_lo[start:stop],
            self.has_hi[start:stop],
        )

    def take(self, keep: Any) -> Bounds:
        """The bounds of the fits indexed by ``keep``."""
        return Bounds(self.lo[keep], self.hi[keep], self.has_lo[keep], self.has_hi[keep])

    def to_internal(self, xp: ModuleType, p: Any) -> Any:
        """Internal (unbounded) parameters of the external ones ``p``."""
        both = self.has_lo & self.has_hi
        width = xp.where(both, self.hi - self.lo, 1.0)
        with _xp.errstate(xp, invalid="ignore", over="ignore"):
            t_both = xp.arcsin(xp.clip(2.0 * (p - self.lo) / width - 1.0, -1.0, 1.0))
            t_lo = xp.sqrt(xp.maximum((p - self.lo + 1.0) ** 2 - 1.0, 0.0))
            t_hi = xp.sqrt(xp.maximum((self.hi - p + 1.0) ** 2 - 1.0, 0.0))
        return xp.where(both, t_both, xp.where(self.has_lo, t_lo, xp.where(self.has_hi, t_hi, p)))

    def to_external(self, xp: ModuleType, t: Any) -> tuple[Any, Any]:
        """External parameters and their derivative with respect to the internal ones."""
        both = self.has_lo & self.has_hi
        half = 0.5 * (self.hi - self.lo)
        with _xp.errstate(xp, over="ignore"):
            root = xp.sqrt(t * t + 1.0)
        p = xp.where(
            both,
            self.lo + half * (xp.sin(t) + 1.0),
            xp.where(
                self.has_lo,
                self.lo - 1.0 + root,
                xp.where(self.has_hi, self.hi + 1.0 - root, t),
            ),
        )
        dp = xp.where(
            both,
            half * xp.cos(t),
            xp.where(self.has_lo, t / root, xp.where(self.has_hi, -t / root, 1.0)),
        )
        # the transforms can land a hair outside [lo, hi] through rounding
        p = xp.where(self.has_lo, xp.maximum(p, self.lo), p)
        p = xp.where(self.has_hi, xp.minimum(p, self.hi), p)
        return p, dp

    def at_bound(self, xp: ModuleType, p: Any, rtol: float) -> Any:
        """Mask of parameters within ``rtol`` (of the range, or of ``max(1, |bound|)``
        for a one-sided bound) of a bound (n_fits, n_params)."""
        both = self.has_lo & self.has_hi
        scale_lo = xp.where(both, self.hi - self.lo, xp.maximum(xp.abs(self.lo), 1.0))
        scale_hi = xp.where(both, self.hi - self.lo, xp.maximum(xp.abs(self.hi), 1.0))
        near_lo = self.has_lo & (p - self.lo <= rtol * scale_lo)
        near_hi = self.has_hi & (self.hi - p <= rtol * scale_hi)
        return near_lo | near_hi



@numba.njit(cache=True, nogil=True, error_model="numpy")
def to_external_one(theta, lo, hi, has_lo, has_hi, p, dp):  # pragma: no cover - compiled
    """``Bounds.to_external`` for one fit."""
    for j in range(theta.size):
        t = theta[j]
        if has_lo[j] and has_hi[j]:
            half = 0.5 * (hi[j] - lo[j])
            pj = lo[j] + half * (math.sin(t) + 1.0)
            dp[j] = half * math.cos(t)
        elif has_lo[j]:
            root = math.sqrt(t * t + 1.0)
            pj = lo[j] - 1.0 + root
            dp[j] = t / root
        elif has_hi[j]:
            root = math.sqrt(t * t + 1.0)
            pj = hi[j] + 1.0 - root
            dp[j] = -t / root
        else:
            pj = t
            dp[j] = 1.0
        if has_lo[j] and pj < lo[j]:
            pj = lo[j]
        if has_hi[j] and pj > hi[j]:
            pj = hi[j]
        p[j] = pj


@numba.njit(cache=True, nogil=True, error_model="numpy")
def at_bound_one(p, lo, hi, has_lo, has_hi, rtol):  # pragma: no cover - compiled
    """``any(Bounds.at_bound)`` for one fit."""
    for j in range(p.size):
        if has_lo[j] and has_hi[j]:
            scale_lo = hi[j] - lo[j]
            scale_hi = scale_lo
        else:
            scale_lo = max(abs(lo[j]), 1.0)
            scale_hi = max(abs(hi[j]), 1.0)
        if has_lo[j] and p[j] - lo[j] <= rtol * scale_lo:
            return True
        if has_hi[j] and hi[j] - p[j] <= rtol * scale_hi:
            return True
    return False


