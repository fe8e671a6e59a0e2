"""Impact velocity and dust mass from the IDEX calibration curves.

Both curves are smooth broken power laws in velocity ``v`` (km/s)::

    log10 f(v) = log A + a1 log10 v
                 + ((a2 - a1)/k) log10(1 + (v/vb)**k)
                 + ((a3 - a2)/k) log10(1 + (v/vc)**k)

* rise-time curve: ``f`` = target signal rise time ``tau_r`` (µs), decreasing in
  ``v``; inverted (``tau_r -> v``) by bisection in ``log10 v`` over the curve's
  validity range, after checking that the curve is monotonic there;
* charge-yield curve: ``f`` = impact charge per unit dust mass (C/kg); the dust
  mass is ``Q / f(v)`` (kg).

The parameter values and their provenance live in ``configs/default.yaml``
(``analysis.velocity``); :class:`PowerLawCurve` takes any replacement.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from idexdask.errors import ConfigError

__all__ = ["MonotonicRange", "PowerLawCurve", "VelocityStatus", "dust_mass", "invert_rise_time"]

PICOCOULOMB = 1e-12  # C


class VelocityStatus(IntEnum):
    """Outcome of the velocity/mass estimate of one event."""

    OK = 0
    NO_RISE_TIME = 1
    """No usable target fit (status, NaN) or rise time <= 0."""
    OUT_OF_RANGE = 2
    """Rise time outside the curve's range over its validity interval: NaN."""
    NO_CHARGE = 3
    """Velocity known but no usable charge: mass NaN."""


@dataclass(frozen=True)
class MonotonicRange:
    """Direction and image of a monotonic curve over its velocity range.

    Attributes
    ----------
    decreasing : bool
        Whether ``f`` decreases with ``v``.
    lo, hi : float
        Smallest and largest ``log10 f`` over the range.
    """

    decreasing: bool
    lo: float
    hi: float


@dataclass(frozen=True)
class PowerLawCurve:
    """Smooth broken power law ``log10 f(v)`` (see module docstring).

    Attributes
    ----------
    log_a, a1, a2, a3, vb, vc, k : float
        Curve parameters (``vb``, ``vc`` in km/s).
    v_range : (float, float)
        Velocities over which the curve is valid and inverted, km/s.
    """

    log_a: float
    a1: float
    a2: float
    a3: float
    vb: float
    vc: float
    k: float
    v_range: tuple[float, float] = (0.5, 100.0)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> PowerLawCurve:
        """Build from a mapping with the attribute names (``v_range`` optional)."""
        try:
            kw = {n: float(cfg[n]) for n in ("log_a", "a1", "a2", "a3", "vb", "vc", "k")}
            v_range = tuple(float(v) for v in cfg.get("v_range", (0.5, 100.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"calibration curve: {exc}") from exc
        if kw["vb"] <= 0 or kw["vc"] <= 0 or kw["k"] <= 0 or not 0 < v_range[0] < v_range[1]:
            raise ConfigError("calibration curve: vb, vc, k and v_range must be positive")
        return cls(**kw, v_range=v_range)  # type: ignore[arg-type]

    def log10(self, v: Any) -> np.ndarray:
        """``log10 f(v)`` for ``v`` in km/s."""
        v = np.asarray(v, dtype=float)
        with np.errstate(all="ignore"):
            return self._log10(v)

    def _log10(self, v: np.ndarray) -> np.ndarray:
        """:meth:`log10` of a float array, under the caller's ``numpy.errstate``."""
        return (
            self.log_a
            + self.a1 * np.log10(v)
            + (self.a2 - self.a1) / self.k * np.log10(1.0 + (v / self.vb) ** self.k)
            + (self.a3 - self.a2) / self.k * np.log10(1.0 + (v / self.vc) ** self.k)
        )

    def __call__(self, v: Any) -> np.ndarray:
        """``f(v)``."""
        return 10.0 ** self.log10(v)

    def monotonic_range(self) -> MonotonicRange:
        """Direction and range of ``log10 f`` over :attr:`v_range` (checked on a fine grid).

        Returns
        -------
        MonotonicRange
            Whether ``f`` decreases with ``v``, and the smallest and largest
            ``log10 f`` over the range.

        Raises
        ------
        ConfigError
            If the curve is not strictly monotonic over ``v_range`` (then it
            cannot be inverted).
        """
        lv0, lv1 = np.log10(self.v_range[0]), np.log10(self.v_range[1])
        grid = self.log10(10 ** np.linspace(lv0, lv1, 512))
        steps = np.diff(grid)
        if not (np.all(steps < 0) or np.all(steps > 0)):
            raise ConfigError("rise-time curve is not monotonic over its velocity range")
        decreasing = bool(steps[0] < 0)
        lo, hi = (grid[-1], grid[0]) if decreasing else (grid[0], grid[-1])
        return MonotonicRange(decreasing=decreasing, lo=float(lo), hi=float(hi))


def invert_rise_time(
    rise_time: Any, curve: PowerLawCurve, iterations: int = 60
) -> tuple[np.ndarray, np.ndarray]:
    """Velocity (km/s) whose calibrated rise time equals ``rise_time`` (µs).

    Vectorised bisection in ``log10 v`` over ``curve.v_range``.  The curve must
    be strictly monotonic on that range (checked on a fine grid); rise times
    outside its image give NaN and :attr:`VelocityStatus.OUT_OF_RANGE`.

    Returns
    -------
    velocity : numpy.ndarray
        km/s.
    status : numpy.ndarray
        :class:`VelocityStatus` codes, int8.

    Raises
    ------
    ConfigError
        If the curve is not monotonic over ``v_range``.
    """
    tr = np.asarray(rise_time, dtype=float)
    lv0, lv1 = np.log10(curve.v_range[0]), np.log10(curve.v_range[1])
    image = curve.monotonic_range()
    decreasing = image.decreasing
    with np.errstate(all="ignore"):
        target = np.log10(tr)
    ok = np.isfinite(target) & (tr > 0)
    inside = ok & (target >= image.lo) & (target <= image.hi)
    lo = np.full(tr.shape, lv0)
    hi = np.full(tr.shape, lv1)
    # one errstate for the loop (not one per curve evaluation): the fixed cost of a
    # small batch is these 60 steps of a dozen tiny array operations
    with np.errstate(all="ignore"):
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            above = curve._log10(10**mid) > target  # curve value above the target
            go_right = above if decreasing else ~above
            np.copyto(lo, mid, where=go_right)
            np.copyto(hi, mid, where=~go_right)
    v = np.where(inside, 10 ** (0.5 * (lo + hi)), np.nan)
    status = np.where(
        ~ok,
        VelocityStatus.NO_RISE_TIME,
        np.where(inside, VelocityStatus.OK, VelocityStatus.OUT_OF_RANGE),
    ).astype(np.int8)
    return v, status


def dust_mass(charge_pc: Any, velocity: Any, yield_curve: PowerLawCurve) -> np.ndarray:
    """Dust mass (kg) = ``|Q|`` (C) / charge yield ``f(v)`` (C/kg); NaN where unknown."""
    q = np.abs(np.asarray(charge_pc, dtype=float)) * PICOCOULOMB
    with np.errstate(all="ignore"):
        return q / yield_curve(velocity)
