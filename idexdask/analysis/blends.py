"""Joint fits of blended TOF lines.

Each line is first fitted on its own window, cut at the midpoint to its
neighbours (:func:`idexdask.analysis.line_fits.fit_lines`).  A weak line on the
tail of a strong one then sees the strong line's tail as data that its constant
baseline cannot follow, and the strong line loses the part of its tail beyond
the cut: the weak line's centre runs to its window's edge (``hit_bound``) or
its fit stalls.  Mass spectrometry fits such blends jointly: every line of the
blend and one constant baseline, over the union of their windows.

:func:`refit_blends` does that for every line whose own fit did not converge
(``max_iterations``, ``hit_bound``; and ``not_significant`` where the data at
its peak stand twice the significance threshold, a fit that ran into a window
edge), together with its near neighbours (:func:`blends`).  The joint model is
a sum of EMG lines (Gaussian where the single-line fit found no resolved tail)
plus a constant (:func:`multi_line_model`), fitted by the same batched
Levenberg-Marquardt fitter with the same convergence criteria.  Each line's
centre keeps the bounds of its own uncut window.  When a joint fit does not
converge, a line whose tail collapsed below ``TAU_MIN_SAMPLES`` samples becomes
a Gaussian (the EMG's Gaussian limit lies outside its domain), then the
unconverged lines are tried as Gaussians (their centres are then modes, as for
the single-line fallback); a blend whose joint fit converges replaces its
members' first-pass results.  The fitted profiles of the event's lines outside
the blend are subtracted first, so an event's result depends on its own lines
only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import ModuleType
from typing import Any

import numpy as np
from scipy.ndimage import maximum_filter1d

from idexdask._logging import get_logger
from idexdask.analysis.fitting import (
    KERNEL_LINES,
    LINE_EMG,
    LINE_GAUSSIAN,
    BatchFitResult,
    BatchModel,
    FitStatus,
    fit_batch_on,
)
from idexdask.analysis.line_fits import LineFits
from idexdask.analysis.line_status import SIGMA_MIN_SAMPLES, TAU_MIN_SAMPLES, LineStatus
from idexdask.analysis.lineshapes import (
    GAMMA_MAX,
    SIGMA_MIN,
    emg,
    emg_jacobian,
    gaussian,
    gaussian_jacobian,
    profiles_vanish,
)
from idexdask.analysis.robust import quiet_nan_warnings

__all__ = ["BLEND_DEPTH", "MAX_BLEND_LINES", "Blend", "BlendFits", "better_fit", "blends",
           "fit_blend_group", "line_profiles", "multi_line_model", "prepare_blend", "refit_blends",
           "store_blend"]  # fmt: skip

_log = get_logger(__name__)

SHAPES = ("emg", "gaussian")
"""Line shapes of a blend, by code (the ``LineShape`` codes)."""
_PARAMS = {"emg": ("amplitude", "center", "sigma", "gamma"),
           "gaussian": ("amplitude", "center", "sigma")}  # fmt: skip
MAX_BLEND_LINES = 8
"""Largest blend fitted jointly; the lines of a larger one keep their own fits."""
BLEND_DEPTH = 2
"""Near neighbours on each side of an unconverged line that join its blend."""
_ROUNDS = 3  # joint fits per blend: as fitted; collapsed tails Gaussian; failed lines Gaussian


def multi_line_model(shapes: tuple[str, ...]) -> BatchModel:
    """A sum of lines plus one constant, for :func:`~idexdask.analysis.fitting.fit_batch`.

    Parameters
    ----------
    shapes : tuple of {"emg", "gaussian"}
        Shape of each line, in order.

    Returns
    -------
    BatchModel
        Parameters ``l{i}_amplitude, l{i}_center, l{i}_sigma[, l{i}_gamma]`` per
        line ``i`` (area DN·µs, µs, µs, 1/µs), then ``c`` (DN): the parameters of
        ``emg_model(prefix="l0_") + gaussian_model(prefix="l1_") + ... +
        lmfit.models.ConstantModel()``, with their default bounds.  Analytic
        Jacobian (the array engines, NumPy or CuPy) and a compiled kernel
        (``KERNEL_LINES``, the compiled engine).
    """
    names: list[str] = []
    offsets: list[int] = []
    for i, shape in enumerate(shapes):
        offsets.append(len(names))
        names += [f"l{i}_{n}" for n in _PARAMS[shape]]
    nc = len(names)
    names.append("c")
    lower = [SIGMA_MIN if n.endswith("sigma") else 0.0 if n.endswith("gamma") else -math.inf
             for n in names]  # fmt: skip
    upper = [GAMMA_MAX if n.endswith("gamma") else math.inf for n in names]

    def evaluate_with_jacobian(xp: ModuleType, x: Any, p: Any) -> tuple[Any, Any]:
        jac = xp.empty((x.shape[0], len(names), x.shape[1]), dtype=xp.float64)
        f = xp.zeros(x.shape, dtype=xp.float64) + p[:, nc : nc + 1]
        for shape, j in zip(shapes, offsets, strict=True):
            a, c, s = p[:, j : j + 1], p[:, j + 1 : j + 2], p[:, j + 2 : j + 3]
            if shape == "emg":
                unit, dc, ds, dg = emg_jacobian(xp, x - c, s, p[:, j + 3 : j + 4])
                jac[:, j + 3, :] = a * dg
            else:
                unit, dc, ds = gaussian_jacobian(xp, x - c, s)
            jac[:, j, :] = unit
            jac[:, j + 1, :] = a * dc
            jac[:, j + 2, :] = a * ds
            f = f + a * unit
        jac[:, nc, :] = 1.0
        return f, jac

    def evaluate(xp: ModuleType, x: Any, p: Any) -> Any:
        return evaluate_with_jacobian(xp, x, p)[0]

    return BatchModel(
        name="+".join(shapes) + "+constant",
        param_names=tuple(names),
        lower=tuple(lower),
        upper=tuple(upper),
        evaluate=evaluate,
        evaluate_with_jacobian=evaluate_with_jacobian,
        kernel=KERNEL_LINES,
        kernel_lines=tuple(LINE_EMG if shape == "emg" else LINE_GAUSSIAN for shape in shapes),
    )


@dataclass
class BlendFits:
    """Joint-fit results per line (NaN, -1 for lines in no fitted blend).

    Attributes
    ----------
    blend : numpy.ndarray
        Index of the blend a line belongs to, -1 for none (int64).
    status : numpy.ndarray
        :class:`~idexdask.analysis.fitting.FitStatus` of its blend's last joint fit (int8).
    center, center_err, sigma, gamma, area, area_err, offset, chisq, redchi : numpy.ndarray
        The line's parameters in the joint fit: µs, µs, µs, 1/µs (NaN for a
        Gaussian), signal units·µs (twice), the blend's constant (signal
        units), its chi-square and reduced chi-square.
    window_start, window_stop : numpy.ndarray
        The blend's window, µs.
    shape : numpy.ndarray
        Index into :data:`SHAPES` (int8).
    mode_centred : numpy.ndarray
        Lines made Gaussian because the joint fit with their EMG did not
        converge: the centre is the line's mode, not an EMG centre (bool).
    """

    blend: np.ndarray
    status: np.ndarray
    center: np.ndarray
    center_err: np.ndarray
    sigma: np.ndarray
    gamma: np.ndarray
    area: np.ndarray
    area_err: np.ndarray
    offset: np.ndarray
    chisq: np.ndarray
    redchi: np.ndarray
    window_start: np.ndarray
    window_stop: np.ndarray
    shape: np.ndarray
    mode_centred: np.ndarray

    @classmethod
    def empty(cls, m: int) -> BlendFits:
        """Results for ``m`` lines, none in a blend."""
        ints = {"blend": np.full(m, -1, np.int64), "status": np.full(m, -1, np.int8),
                "shape": np.zeros(m, np.int8), "mode_centred": np.zeros(m, bool)}  # fmt: skip
        return cls(**ints, **{f.name: np.full(m, np.nan) for f in fields(cls)
                              if f.name not in ints})  # fmt: skip

    @property
    def converged(self) -> np.ndarray:
        """Lines whose blend's joint fit converged (bool)."""
        return self.status == FitStatus.CONVERGED


@dataclass
class Blend:
    """One blend: its data, and per line the shape, start values and bounds.

    ``start``, ``lo``, ``hi`` have one row per line and the columns amplitude,
    centre, sigma, gamma (a Gaussian uses the first three).
    """

    rows: np.ndarray
    x: np.ndarray
    y: np.ndarray
    sigma: np.ndarray
    dt: float
    shapes: list[str]
    start: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    target: np.ndarray
    """The lines whose own fits did not converge."""
    forced: np.ndarray
    """Lines made Gaussian because the joint fit with their EMG did not converge."""
    initial: np.ndarray
    """The start values of :func:`prepare_blend` (rows as ``start``): a second start
    of every later round (see :meth:`restarted`)."""
    at_peaks: np.ndarray
    """Start values from the data (rows as ``start``): every line narrow at the
    highest sample of its share of the window (see :meth:`from_peaks`)."""

    def _pack(self, per_line: np.ndarray, constant: float) -> np.ndarray:
        parts = [v[: len(_PARAMS[s])] for v, s in zip(per_line, self.shapes, strict=True)]
        return np.concatenate([*parts, [constant]])

    def p0(self) -> np.ndarray:
        """Start values of the joint fit."""
        return self._pack(self.start, 0.0)

    def lower(self) -> np.ndarray:
        """Lower bounds of the joint fit."""
        return self._pack(self.lo, -math.inf)

    def upper(self) -> np.ndarray:
        """Upper bounds of the joint fit."""
        return self._pack(self.hi, math.inf)

    def collapsed(self, params: np.ndarray) -> list[int]:
        """EMG lines of a joint fit whose tail is shorter than ``TAU_MIN_SAMPLES`` samples."""
        out, j = [], 0
        for i, shape in enumerate(self.shapes):
            rate = params[j + 3] if shape == "emg" else np.nan
            if np.isfinite(rate) and 1.0 / rate < TAU_MIN_SAMPLES * self.dt:
                out.append(i)
            j += len(_PARAMS[shape])
        return out

    def to_gaussian(self, lines: list[int], params: np.ndarray) -> None:
        """Make ``lines`` Gaussian, every line starting from ``params`` (a joint fit's)."""
        j = 0
        for i, shape in enumerate(self.shapes):
            n = len(_PARAMS[shape])
            self.start[i, :n] = np.clip(params[j : j + n], self.lo[i, :n], self.hi[i, :n])
            j += n
        for i in lines:
            self.shapes[i] = "gaussian"
        self.canonical()

    def restarted(self) -> Blend:
        """This blend (same shapes) starting from its prepared start values.

        A failed joint fit can end with a weak line spread into a broad
        pedestal under its neighbours' tails; starting the next round only from
        there carries that wandering into it (and last-bit differences of the
        start decide which way it goes).  Each later round fits from both
        starts and keeps the better converged result.
        """
        start = np.clip(self.initial, self.lo, self.hi)
        return dataclasses.replace(self, start=start, shapes=list(self.shapes),
                                   forced=self.forced.copy())  # fmt: skip

    def from_peaks(self) -> Blend:
        """This blend (same shapes) with every line started narrow at its data maximum.

        A joint fit on the tail of a strong line can have two minima: a weak
        line narrow at its own maximum, or spread into a broad pedestal under
        its neighbours' tails, and a start from the single-line fits can stall
        between them.  This start has every line but the strongest narrow (1.5
        samples) at the highest local maximum of its share of the window (cut
        at the midpoints to its neighbours in the blend); the residual test
        (:mod:`idexdask.analysis.residual_lines`) fits from it where its
        prepared start does not converge and keeps the better result
        (:func:`better_fit`).
        """
        start = np.clip(self.at_peaks, self.lo, self.hi)
        return dataclasses.replace(self, start=start, shapes=list(self.shapes),
                                   forced=self.forced.copy())  # fmt: skip

    def canonical(self) -> Blend:
        """Order the lines EMGs first, then Gaussians (each in time order).

        The model is a sum, so the order of its lines does not change the fit;
        blends with the same numbers of EMG and Gaussian lines then share one
        model and are fitted in one batch.
        """
        order = np.argsort([s != "emg" for s in self.shapes], kind="stable")
        self.shapes = [self.shapes[i] for i in order]
        for name in ("rows", "start", "lo", "hi", "target", "forced", "initial", "at_peaks"):
            setattr(self, name, getattr(self, name)[order])
        return self


def line_profiles(
    t: np.ndarray, area: np.ndarray, center: np.ndarray, sigma: np.ndarray, gamma: np.ndarray
) -> np.ndarray:
    """Fitted lines' profiles on ``t``, one row per line (Gaussian where ``gamma`` is
    NaN), 0 where not finite.

    One array call for all the lines: elementwise, so each row holds the values
    a call per line gives.
    """
    tt = t[None, :]
    a, c, s, g = (np.asarray(v, dtype=float)[:, None] for v in (area, center, sigma, gamma))
    with np.errstate(all="ignore"):
        prof = np.empty((a.shape[0], t.size))
        tail = np.isfinite(g[:, 0])
        if tail.any():
            prof[tail] = emg(tt, a[tail], c[tail], s[tail], g[tail])
        if not tail.all():
            prof[~tail] = gaussian(tt, a[~tail], c[~tail], s[~tail])
    return np.where(np.isfinite(prof), prof, 0.0)


def blends(
    event: np.ndarray, index: np.ndarray, refit: np.ndarray, reach: np.ndarray,
    fixed: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Groups of lines to fit jointly.

    Two lines of an event are *near* when they are closer than ``reach``
    samples (their windows overlapped before they were cut at the midpoint).
    Each line in ``refit`` forms a blend with the lines reached from it over
    at most :data:`BLEND_DEPTH` near neighbours on each side (a shoulder's
    neighbour may itself sit on the tail of the strong line); overlapping
    blends are merged, and blends larger than :data:`MAX_BLEND_LINES` are
    left out.

    Parameters
    ----------
    event, index : numpy.ndarray
        Event and peak sample of every line, sorted by event and sample.
    refit : numpy.ndarray
        Lines whose own fits did not converge (bool).
    reach : numpy.ndarray
        Per line, its window's width in samples.
    fixed : numpy.ndarray, optional
        Lines that keep their own fit (added or edited by hand): in no blend,
        and a blend does not reach across them (bool).

    Returns
    -------
    list of numpy.ndarray
        The member rows of each blend, in time order.
    """
    m = event.size
    near = (event[1:] == event[:-1]) & (index[1:] - index[:-1] < reach[:-1])
    member = np.asarray(refit, bool).copy()
    if fixed is not None and m:
        fixed = np.asarray(fixed, bool)
        near &= ~fixed[1:] & ~fixed[:-1]
        member &= ~fixed
    for _ in range(BLEND_DEPTH):
        grown = member.copy()
        grown[1:] |= member[:-1] & near
        grown[:-1] |= member[1:] & near
        member = grown
    link = near & member[:-1] & member[1:]  # link[k]: lines k and k+1 in one blend
    groups: list[np.ndarray] = []
    k = 0
    while k < m:
        j = k
        while j < m - 1 and link[j]:
            j += 1
        if j > k and j - k + 1 <= MAX_BLEND_LINES:
            groups.append(np.arange(k, j + 1))
        elif j > k:
            _log.info("blend of %d lines in event %d: too large to fit jointly", j - k + 1,
                      event[k])  # fmt: skip
        k = j + 1
    return groups


def refit_blends(
    y: np.ndarray,
    t: np.ndarray,
    noise: np.ndarray,
    event: np.ndarray,
    index: np.ndarray,
    first: LineFits,
    settings: Mapping[str, Any],
    step: np.ndarray,
    fixed: np.ndarray | None = None,
) -> BlendFits:
    """Fit jointly each blend that holds a line whose own fit did not converge.

    Parameters
    ----------
    y, t : numpy.ndarray
        Spectra and their times (n_events, n_samples), signal units and µs.
    noise : numpy.ndarray
        Noise sigma per sample (n_events, n_samples) or per event (n_events,).
    event, index : numpy.ndarray
        Event and peak sample of every line, sorted by event and sample.
    first : LineFits
        The single-line fits.
    settings : mapping
        The ``peaks`` section (``window_left_us``, ``window_right_us``,
        ``max_iterations``, ``min_line_snr``, ``fit_device``).
    step : numpy.ndarray
        Sample step per event, µs (n_events,).
    fixed : numpy.ndarray, optional
        Lines added or edited by hand (bool): they keep their own fit and
        window, in no blend (their profiles are subtracted from the blends
        beside them).

    Returns
    -------
    BlendFits
        The last joint fit of every blend (see the module docstring).
    """
    m = event.size
    out = BlendFits.empty(m)
    status = np.asarray(first.status)
    noise = np.asarray(noise, dtype=float)
    refit = (status == FitStatus.MAX_ITERATIONS) | (status == FitStatus.HIT_BOUND)
    if m:
        # data twice the significance threshold high, a fit below it: a failed fit
        noise_at = noise[event, index] if noise.ndim == 2 else noise[event]
        with np.errstate(invalid="ignore"):
            high = y[event, index] >= 2.0 * float(settings["min_line_snr"]) * noise_at
        refit |= (status == LineStatus.NOT_SIGNIFICANT) & high
    if not refit.any():
        return out
    dt = step[event]
    left = np.rint(settings["window_left_us"] / dt).astype(np.int64)
    right = np.rint(settings["window_right_us"] / dt).astype(np.int64)
    groups = blends(event, index, refit, left + right, fixed)
    prepared = [
        prepare_blend(rows, y, t, noise, event, index, left, right, first, refit, step, settings)
        for rows in groups
    ]
    device = str(settings.get("fit_device", "cpu"))
    pending = list(range(len(prepared)))
    for attempt in range(_ROUNDS):
        # a later round fits each blend twice: from the failed round's values
        # and from its prepared starts (:meth:`Blend.restarted`)
        tries = [(b, prepared[b]) for b in pending]
        if attempt:
            tries += [(b, prepared[b].restarted()) for b in pending]
        results = _fit_tries(tries, device, settings)
        best = {b: i for i, (b, _) in enumerate(tries[: len(pending)])}
        for i in range(len(pending), len(tries)):
            b = tries[i][0]
            if better_fit(*results[i], *results[best[b]]):
                best[b] = i
        pending = []
        for b, i in best.items():
            blend = tries[i][1]
            prepared[b] = blend
            res, r = results[i]
            store_blend(out, b, blend, res, r)
            if res.status[r] == FitStatus.CONVERGED or attempt + 1 == _ROUNDS:
                continue
            collapsed = blend.collapsed(res.params[r])
            failed = [k for k, shape in enumerate(blend.shapes)
                      if shape == "emg" and blend.target[k]]  # fmt: skip
            if collapsed:  # a tail shorter than the sampling resolves: a Gaussian
                blend.to_gaussian(collapsed, res.params[r])
            elif failed:  # sigma and tail of a weak line trade off: try its mode
                blend.to_gaussian(failed, res.params[r])
                blend.forced[failed] = True
            else:
                continue
            pending.append(b)
    n_conv = int(np.unique(out.blend[out.converged]).size)
    _log.debug("joint fits: %d of %d blends converged", n_conv, len(prepared))
    return out


def _fit_tries(tries: list[tuple[int, Blend]], device: str, settings: Mapping[str, Any]
               ) -> dict[int, tuple[BatchFitResult, int]]:
    """Joint fits of ``tries`` ((blend number, blend) pairs), by position in ``tries``.

    One batch per model and width class: padding to the batch's widest window
    would change a fit's arithmetic (as in peaks.fit_lines), and a blend's
    result must not depend on the other events of its batch.
    """
    by_shape: dict[tuple[tuple[str, ...], int], list[int]] = {}
    for i, (_, blend) in enumerate(tries):
        width = (blend.x.size + 15) // 16 * 16
        by_shape.setdefault((tuple(blend.shapes), width), []).append(i)
    results: dict[int, tuple[BatchFitResult, int]] = {}
    for (key, width), members in by_shape.items():
        res = fit_blend_group(device, key, [tries[i][1] for i in members], width, settings)
        results.update((i, (res, r)) for r, i in enumerate(members))
    return results


def better_fit(res: BatchFitResult, r: int, other: BatchFitResult, q: int) -> bool:
    """Whether fit ``r`` of ``res`` beats fit ``q`` of ``other`` (same blend, same model).

    A converged fit beats an unconverged one; of two converged fits the one
    with the smaller chi-square wins (the same data and model: the deeper
    minimum); of two unconverged ones the first (the failed round's path) stays.
    """
    ok, ok_other = res.status[r] == FitStatus.CONVERGED, other.status[q] == FitStatus.CONVERGED
    if ok != ok_other:
        return bool(ok)
    return bool(ok and res.chisq[r] < other.chisq[q])


def prepare_blend(
    rows: np.ndarray,
    y: np.ndarray,
    t: np.ndarray,
    noise: np.ndarray,
    event: np.ndarray,
    index: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    first: LineFits,
    refit: np.ndarray,
    step: np.ndarray,
    settings: Mapping[str, Any],
) -> Blend:
    """A blend's window, data (the event's other lines removed) and start values.

    The window spans the members' uncut windows, cut at the midpoint to the
    nearest line outside the blend.  A member that converged on its own starts
    from its fit, with its shape; another starts as an EMG from its peak
    sample: sigma 1.5 samples, tail 2 samples, area from the height there.
    """
    n = y.shape[1]
    e = int(event[rows[0]])
    lo = int(max(index[rows[0]] - left[rows[0]], 0))
    hi = int(min(index[rows[-1]] + right[rows[-1]], n - 1))
    same = np.flatnonzero(event == e)
    before, after = same[same < rows[0]], same[same > rows[-1]]
    if before.size:
        lo = max(lo, int((index[before[-1]] + index[rows[0]]) // 2 + 1))
    if after.size:
        hi = min(hi, int((index[rows[-1]] + index[after[0]]) // 2))
    cols = np.arange(lo, hi + 1)
    x = t[e, cols]
    data = np.array(y[e, cols], dtype=float)
    status = first.status
    usable = np.isfinite(first.area) & np.isfinite(first.center) & np.isfinite(first.sigma)
    usable &= (status <= FitStatus.HIT_BOUND) | (status >= LineStatus.SPIKE)
    others = np.concatenate([before, after])
    others = others[usable[others]]
    if others.size:  # lines whose profiles are exactly 0 on the window subtract nothing
        far = profiles_vanish(float(np.min(x)), float(np.max(x)), first.area[others],
                              first.center[others], first.sigma[others], first.gamma[others])
        others = others[~far]
    if others.size:
        profiles = line_profiles(x, first.area[others], first.center[others], first.sigma[others],
                             first.gamma[others])  # fmt: skip
        for prof in profiles:  # one line after the other, as the sums were formed
            data -= prof
    sig = noise[e, cols] if noise.ndim == 2 else np.full(cols.size, noise[e])
    # the members' peak times, read from the window's times where their peak
    # samples lie in it (always, but for coinciding manual peaks): no lookup
    # into a formula axis per member
    peaks = index[rows]
    if np.all((peaks >= lo) & (peaks <= hi)):
        member_t = x[peaks - lo]
    else:
        member_t = np.array([float(t[e, i]) for i in peaks])
    with quiet_nan_warnings():
        sig_median = float(np.nanmedian(sig))
    d = float(step[e])
    span = max(float(x[-1] - x[0]), d)
    shapes, start, lower, upper, at_peaks = [], [], [], [], []
    # each member's share of the window: cut at the midpoints to its neighbours
    cuts = np.concatenate([[cols[0]], (index[rows][:-1] + index[rows][1:]) // 2 + 1,
                           [cols[-1] + 1]]) - cols[0]  # fmt: skip
    reach = max(int(round(float(settings.get("min_distance_us", 0.0)) / float(step[e]))), 1)
    for r, k in enumerate(rows):
        tk = float(member_t[r])
        # the centre keeps the bounds of the line's own (uncut) window
        c_lo = max(float(x[0]), tk - float(settings["window_left_us"]))
        c_hi = min(float(x[-1]), tk + float(settings["window_right_us"]))
        if status[k] == FitStatus.CONVERGED and usable[k]:
            shape = "emg" if np.isfinite(first.gamma[k]) else "gaussian"
            a0, c0, s0, g0 = first.area[k], first.center[k], first.sigma[k], first.gamma[k]
        else:
            shape = "emg"
            peak = float(np.nanmax(np.append(data[np.abs(x - tk) <= 1.5 * d], 0.0)))
            s0, g0 = 1.5 * d, 1.0 / (2.0 * d)
            c0 = tk - 1.0 / g0
            a0 = max(peak, sig_median) * 2.5 * s0
        g0 = g0 if np.isfinite(g0) else 1.0 / (2.0 * d)
        shapes.append(shape)
        start.append([a0, min(max(c0, c_lo), c_hi), min(max(s0, 0.45 * d), 0.25 * span),
                      min(max(g0, 4.0 / span), 0.5 * GAMMA_MAX)])  # fmt: skip
        top = _share_peak(data, int(cuts[r]), int(cuts[r + 1]), reach)
        if top >= 0:
            s1, g1 = 1.5 * d, 1.0 / (2.0 * d)
            c1 = float(x[top]) - (1.0 / g1 if shape == "emg" else 0.0)
            a1 = max(float(data[top]), sig_median) * 2.5 * s1
            at_peaks.append([a1, min(max(c1, c_lo), c_hi), s1, g1])
        else:
            at_peaks.append(start[-1])
        lower.append([0.0, c_lo, SIGMA_MIN_SAMPLES * d, 2.0 / span])
        upper.append([math.inf, c_hi, 0.5 * span, GAMMA_MAX])
    # the strongest line keeps its start: its profile carries the others' baseline
    at_peaks = np.array(at_peaks)
    strongest = int(np.argmax([data[np.argmin(np.abs(x - tk))] for tk in member_t]))
    at_peaks[strongest] = start[strongest]
    return Blend(
        rows=rows, x=x, y=data, sigma=np.where(np.isfinite(sig) & (sig > 0), sig, np.nan), dt=d,
        shapes=shapes, start=np.array(start), lo=np.array(lower), hi=np.array(upper),
        target=refit[rows].copy(), forced=np.zeros(rows.size, bool),
        initial=np.array(start), at_peaks=at_peaks,
    ).canonical()  # fmt: skip


def _share_peak(data: np.ndarray, lo: int, hi: int, reach: int) -> int:
    """The highest sample of ``data[lo:hi]`` that is the highest within ``reach``
    samples on both sides (inside the share), or -1 (a share on a falling tail
    has its highest sample at an edge: no line of its own there)."""
    share = np.where(np.isfinite(data[lo:hi]), data[lo:hi], -np.inf)
    if share.size < 2 * reach + 1:
        return -1
    # the highest of each sample's 2 reach + 1 neighbourhood (whole inside the share)
    wmax = maximum_filter1d(share, 2 * reach + 1)[reach: share.size - reach]
    inner = share[reach: share.size - reach]
    ok = (inner == wmax) & np.isfinite(inner)
    if not ok.any():
        return -1
    return lo + reach + int(np.argmax(np.where(ok, inner, -np.inf)))


def fit_blend_group(
    device: str, shapes: tuple[str, ...], group: list[Blend], width: int,
    settings: Mapping[str, Any],
) -> BatchFitResult:
    """Joint fits of the blends of ``group`` (line shapes ``shapes``), one batch,
    windows NaN-padded to ``width`` samples."""
    xs, ys, ss = (np.full((len(group), width), np.nan) for _ in range(3))
    for r, b in enumerate(group):
        xs[r, : b.x.size] = b.x
        ys[r, : b.x.size] = b.y
        ss[r, : b.x.size] = b.sigma
    return fit_batch_on(
        device, xs, ys, multi_line_model(shapes), np.stack([b.p0() for b in group]),
        lower=np.stack([b.lower() for b in group]), upper=np.stack([b.upper() for b in group]),
        sigma=ss, max_iter=int(settings["max_iterations"]),
        engine=str(settings.get("fit_engine", "compiled")),
    )  # fmt: skip


def store_blend(out: BlendFits, b: int, blend: Blend, res: BatchFitResult, r: int) -> None:
    """Blend ``b``'s joint fit (row ``r`` of ``res``) into its lines' rows of ``out``."""
    j = 0
    for i, (k, shape) in enumerate(zip(blend.rows, blend.shapes, strict=True)):
        out.blend[k] = b
        out.status[k] = res.status[r]
        out.area[k], out.center[k], out.sigma[k] = res.params[r, j : j + 3]
        out.area_err[k], out.center_err[k] = res.stderr[r, j], res.stderr[r, j + 1]
        out.gamma[k] = res.params[r, j + 3] if shape == "emg" else np.nan
        out.shape[k] = SHAPES.index(shape)
        out.mode_centred[k] = blend.forced[i]
        out.offset[k] = res.params[r, -1]
        out.chisq[k] = res.chisq[r]
        out.redchi[k] = res.redchi[r]
        out.window_start[k] = blend.x[0]
        out.window_stop[k] = blend.x[-1]
        j += len(_PARAMS[shape])
