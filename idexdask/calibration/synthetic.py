"""Synthetic peak lists with a known calibration, for tests and benchmarks."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from idexdask.calibration.settings import CalibrationSettings, load_calibration_settings

__all__ = ["synthetic_peaks"]


def synthetic_peaks(
    rng: np.random.Generator,
    *,
    preset: str = "flight",
    n_ions: int | tuple[int, int] = (4, 10),
    n_spurious: int | tuple[int, int] = (0, 3),
    jitter_us: float = 0.001,
    stretch: float | None = None,
    t0: float | None = None,
    settings: CalibrationSettings | None = None,
) -> tuple[NDArray, NDArray, dict[str, Any]]:
    """Synthetic peak list for tests and benchmarks.

    Picks a stretch and t0 inside the preset's ranges (with 5 % margin), a random
    subset of comb ions and a few spurious peaks away from every comb line.

    Returns
    -------
    times_us : numpy.ndarray
        Peak centres, µs, shuffled.
    amplitudes : numpy.ndarray
        Peak amplitudes (arbitrary units).
    truth : dict
        ``stretch``, ``t0``, ``labels`` (per peak, None for spurious) and
        ``masses`` (per peak, NaN for spurious).
    """
    cfg = settings if settings is not None else load_calibration_settings(preset)
    comb = cfg.comb
    a_lo, a_hi = cfg.bootstrap.stretch_range
    t_lo, t_hi = cfg.bootstrap.t0_range_us
    a = stretch if stretch is not None else rng.uniform(a_lo + 0.05 * (a_hi - a_lo),
                                                        a_hi - 0.05 * (a_hi - a_lo))
    z = t0 if t0 is not None else rng.uniform(t_lo + 0.05 * (t_hi - t_lo),
                                              t_hi - 0.05 * (t_hi - t_lo))
    k = n_ions if isinstance(n_ions, int) else int(rng.integers(n_ions[0], n_ions[1] + 1))
    k = min(k, len(comb))
    n_sp = n_spurious if isinstance(n_spurious, int) else int(
        rng.integers(n_spurious[0], n_spurious[1] + 1))
    pick = rng.choice(len(comb), size=k, replace=False)
    masses = np.array([comb[i].mass_u for i in pick])
    labels: list[str | None] = [comb[i].label for i in pick]
    times = z + a * np.sqrt(masses) + rng.normal(0.0, jitter_us, k)
    amps = rng.uniform(0.2, 1.0, k) * np.array([comb[i].weight for i in pick])
    comb_t = z + a * np.sqrt([ion.mass_u for ion in comb])
    spurious: list[float] = []
    while len(spurious) < n_sp:
        ts = rng.uniform(comb_t[0], comb_t[-1])
        if np.min(np.abs(comb_t - ts)) > 0.05:
            spurious.append(ts)
    times = np.concatenate([times, spurious])
    amps = np.concatenate([amps, rng.uniform(0.05, 0.5, n_sp)])
    masses = np.concatenate([masses, np.full(n_sp, np.nan)])
    labels += [None] * n_sp
    order = rng.permutation(times.size)
    truth = {
        "stretch": a,
        "t0": z,
        "labels": [labels[i] for i in order],
        "masses": masses[order],
    }
    return times[order], amps[order], truth
