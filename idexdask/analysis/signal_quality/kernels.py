"""Compiled passes of the host path of signal quality (NumPy samples).

The whole-trace work of a channel (missing-sample mask, observed extremes,
excursion, rail runs and clipped flat tops) is one compiled pass pair over the
native-dtype samples, with no (n_events, n) float64 temporaries; the baseline
window is located on the time axis first (by bisection on a formula axis), so
the pass already knows the baseline.  Every floating-point operation is the one
the array-namespace path (:mod:`.array_path`) performs, so the results are
identical (checked by ``tests/unit/analysis/test_signal_quality.py``).

The passes read either the samples themselves or, where the reader kept them,
the int16 ADC codes the float32 volts were decoded from (``coded``, with the
code scale ``scale``/``offset``): each code read is decoded as the reader
decoded it (:func:`~idexdask.adccodes.code_value`, NaN at
:data:`~idexdask.adccodes.CODE_FILL`), the same float64 value as the volts
sample, so the volts never need to exist.
"""

from __future__ import annotations

import numba
import numpy as np

from idexdask.adccodes import CODE_FILL, code_value

__all__ = [
    "EXTREME_BLOCK",
    "array_window",
    "baseline_bounds",
    "formula_count_below",
    "formula_interval",
    "formula_window",
    "ordered_extremes",
    "ordered_extremes16",
    "ordered_extremes32",
    "trace_rows",
    "window_rows",
]


@numba.njit(cache=True, nogil=True, inline="always")
def _sample(raw, r, j, has_fill, fill, coded, scale, offset):  # pragma: no cover - compiled
    """Sample ``raw[r, j]`` as float64, NaN when missing (NaN or ``fill``); for
    ``coded`` int16 codes, the float32 volts the code decodes to (``scale``,
    ``offset``: :func:`~idexdask.adccodes.code_value`), NaN at the fill code."""
    if coded:
        c = raw[r, j]
        if c == CODE_FILL:
            return np.nan
        return code_value(np.float64(c), scale, offset, True)
    v = np.float64(raw[r, j])
    if v != v or (has_fill and v == fill):
        return np.nan
    return v


EXTREME_BLOCK = 512
"""Samples per block of :func:`trace_rows`'s search for the samples at the maximum."""


@numba.njit(cache=True, nogil=True, inline="always")
def _key(b, shift, flip):  # pragma: no cover - compiled
    """Signed-integer order key of ``b`` (see :func:`ordered_extremes`); its own inverse."""
    return b ^ ((b >> shift) & flip)


@numba.njit(cache=True, nogil=True)
def ordered_extremes(keys: np.ndarray, flip: int) -> tuple[np.ndarray, np.ndarray]:
    # pragma: no cover - compiled
    """The largest and smallest sample of each block of :data:`EXTREME_BLOCK`
    samples of each row (rows, blocks), in one pass over ``keys``.

    ``keys`` are the samples themselves (integers, ``flip = 0``) or the bits of
    IEEE floats read as signed integers of their width, with ``flip`` the mask of
    all bits but the sign (``2**31 - 1``, ``2**63 - 1``): ``b ^ ((b >> (w - 1)) &
    flip)`` orders floats as signed integers (negative ones reversed; NaN beyond
    the infinities, as integers beyond theirs), an integer reduction that
    vectorises.  The results are in the form of ``keys`` (the map is its own
    inverse).  :func:`ordered_extremes32` is the same for int32 keys.
    """
    rows, n = keys.shape
    shift = keys.itemsize * 8 - 1
    n_blocks = (n + EXTREME_BLOCK - 1) // EXTREME_BLOCK
    block_high = np.empty((rows, n_blocks), dtype=keys.dtype)
    block_low = np.empty((rows, n_blocks), dtype=keys.dtype)
    for r in range(rows):
        row = keys[r]
        for k in range(n_blocks):
            base = k * EXTREME_BLOCK
            hi = _key(row[base], shift, flip)
            lo = hi
            if base + EXTREME_BLOCK <= n:  # a constant trip count: it vectorises
                for j in range(EXTREME_BLOCK):
                    key = _key(row[base + j], shift, flip)
                    hi = max(hi, key)
                    lo = min(lo, key)
            else:
                for j in range(base, n):
                    key = _key(row[j], shift, flip)
                    hi = max(hi, key)
                    lo = min(lo, key)
            block_high[r, k] = _key(hi, shift, flip)
            block_low[r, k] = _key(lo, shift, flip)
    return block_high, block_low


@numba.njit(cache=True, nogil=True)
def ordered_extremes32(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # pragma: no cover - compiled
    """:func:`ordered_extremes` of the bits of float32 samples as int32 keys, in
    int32 arithmetic (numba widens int32 operations to int64, which would halve
    the vector width)."""
    rows, n = keys.shape
    shift = np.int32(31)
    flip = np.int32(2**31 - 1)
    n_blocks = (n + EXTREME_BLOCK - 1) // EXTREME_BLOCK
    block_high = np.empty((rows, n_blocks), dtype=np.int32)
    block_low = np.empty((rows, n_blocks), dtype=np.int32)
    for r in range(rows):
        row = keys[r]
        for k in range(n_blocks):
            base = k * EXTREME_BLOCK
            hi = np.int32(_key(row[base], shift, flip))
            lo = hi
            if base + EXTREME_BLOCK <= n:
                for j in range(EXTREME_BLOCK):
                    key = np.int32(_key(row[base + j], shift, flip))
                    hi = max(hi, key)
                    lo = min(lo, key)
            else:
                for j in range(base, n):
                    key = np.int32(_key(row[j], shift, flip))
                    hi = max(hi, key)
                    lo = min(lo, key)
            block_high[r, k] = np.int32(_key(hi, shift, flip))
            block_low[r, k] = np.int32(_key(lo, shift, flip))
    return block_high, block_low


@numba.njit(cache=True, nogil=True)
def ordered_extremes16(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # pragma: no cover - compiled
    """:func:`ordered_extremes` of int16 samples (a scope's ADC codes) in int16
    arithmetic: half the bytes of their float32 values, twice the lanes."""
    rows, n = codes.shape
    n_blocks = (n + EXTREME_BLOCK - 1) // EXTREME_BLOCK
    block_high = np.empty((rows, n_blocks), dtype=np.int16)
    block_low = np.empty((rows, n_blocks), dtype=np.int16)
    for r in range(rows):
        row = codes[r]
        for k in range(n_blocks):
            base = k * EXTREME_BLOCK
            hi = row[base]
            lo = hi
            if base + EXTREME_BLOCK <= n:
                for j in range(EXTREME_BLOCK):
                    key = row[base + j]
                    hi = max(hi, key)
                    lo = min(lo, key)
            else:
                for j in range(base, n):
                    key = row[j]
                    hi = max(hi, key)
                    lo = min(lo, key)
            block_high[r, k] = hi
            block_low[r, k] = lo
    return block_high, block_low


@numba.njit(cache=True, nogil=True, inline="always")
def _block_reaches(raw, r, j0, j1, d, b, exc, coded, scale, offset):
    # pragma: no cover - compiled
    """Whether some sample ``raw[r, j0:j1]`` has ``d * (v - b) == exc`` (NaN never; a
    fill value may, which only sends the block to the exact walk; ``coded``: the
    codes' values, :func:`_sample`)."""
    hits = 0
    if coded:
        for j in range(j0, j1):
            if d * (_sample(raw, r, j, False, 0.0, True, scale, offset) - b) == exc:
                hits += 1
        return hits > 0
    for j in range(j0, j1):
        if d * (np.float64(raw[r, j]) - b) == exc:
            hits += 1
    return hits > 0


@numba.njit(cache=True, nogil=True, inline="always")
def _formula_time(start, step, scale, j):  # pragma: no cover - compiled
    """``(start + j * step) * scale``, rounded as :class:`~idexdask.timeaxis.UniformAxisArray`."""
    return (np.float64(j) * step + start) * scale


@numba.njit(cache=True, nogil=True, inline="always")
def _first_time_at(
    start, step, scale, count, limit, below, strict=False
):  # pragma: no cover - compiled
    """First index ``j < count`` whose time is ``>= limit`` (``> limit`` when
    ``strict``; ``< limit`` when ``below``), by bisection: the formula's times
    are monotonic in ``j``."""
    lo = 0
    hi = count
    while lo < hi:
        mid = (lo + hi) // 2
        t = _formula_time(start, step, scale, mid)
        if (t < limit) if below else ((t > limit) if strict else (t >= limit)):
            hi = mid
        else:
            lo = mid + 1
    return lo


@numba.njit(cache=True, nogil=True)
def formula_window(
    start: np.ndarray,
    step: np.ndarray,
    count: np.ndarray,
    scale: float,
    n: int,
    w0: float,
    w1: float,
) -> tuple[np.ndarray, ...]:  # pragma: no cover - compiled
    """Per row of a formula axis: the smallest and largest time, and the columns
    ``[a, b)`` whose times lie in ``[w0, w1)`` (``a == b`` for none)."""
    rows = start.size
    tmin = np.full(rows, np.inf)
    tmax = np.full(rows, -np.inf)
    a = np.zeros(rows, dtype=np.int64)
    b = np.zeros(rows, dtype=np.int64)
    for r in range(rows):
        c = min(count[r], n)
        if c <= 0:
            continue
        t0 = _formula_time(start[r], step[r], scale, 0)
        tl = _formula_time(start[r], step[r], scale, c - 1)
        if t0 != t0 or tl != tl:
            continue
        tmin[r] = min(t0, tl)
        tmax[r] = max(t0, tl)
        if tl >= t0:
            a[r] = _first_time_at(start[r], step[r], scale, c, w0, False)
            b[r] = _first_time_at(start[r], step[r], scale, c, w1, False)
        else:
            a[r] = _first_time_at(start[r], step[r], scale, c, w1, True)
            b[r] = _first_time_at(start[r], step[r], scale, c, w0, True)
        b[r] = max(a[r], b[r])
    return tmin, tmax, a, b


@numba.njit(cache=True, nogil=True)
def formula_count_below(
    start: np.ndarray, step: np.ndarray, count: np.ndarray, scale: float, n: int,
    limit: float,
) -> np.ndarray:  # pragma: no cover - compiled
    """Per row of a formula axis of ``n`` samples: how many of its times are below
    ``limit``, all of them the first (the axis rises), by bisection; -1 for a row
    whose times fall or are not finite (its samples must be scanned).  NaN times
    (``i >= count``) are never below."""
    rows = start.size
    out = np.full(rows, -1, dtype=np.int64)
    for r in range(rows):
        c = min(count[r], n)
        if c <= 0:
            out[r] = 0
            continue
        t0 = _formula_time(start[r], step[r], scale, 0)
        tl = _formula_time(start[r], step[r], scale, c - 1)
        # each rounding of the formula is monotonic in j: tl >= t0 means rising
        if t0 == t0 and tl == tl and tl >= t0:
            out[r] = _first_time_at(start[r], step[r], scale, c, limit, False)
    return out


@numba.njit(cache=True, nogil=True)
def formula_interval(
    start: np.ndarray, step: np.ndarray, count: np.ndarray, scale: float, n: int,
    t0: np.ndarray, t1: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Per row of a formula axis of ``n`` samples: the samples ``[first, stop)``
    whose times lie in ``[t0[r], t1[r]]`` (NaN bounds: none), found by bisection
    on a rising row (its times do not fall, so they are consecutive); -1 and -1
    for a row whose times fall or are not finite (its times must be read), as
    :func:`formula_count_below`.  NaN times (``i >= count``) are never inside."""
    rows = start.size
    first = np.full(rows, -1, dtype=np.int64)
    stop = np.full(rows, -1, dtype=np.int64)
    for r in range(rows):
        c = min(count[r], n)
        if c <= 0:
            first[r] = 0
            stop[r] = 0
            continue
        ta = _formula_time(start[r], step[r], scale, 0)
        tb = _formula_time(start[r], step[r], scale, c - 1)
        if ta == ta and tb == tb and tb >= ta:
            first[r] = _first_time_at(start[r], step[r], scale, c, t0[r], False)
            stop[r] = max(_first_time_at(start[r], step[r], scale, c, t1[r], False, True), first[r])
    return first, stop


@numba.njit(cache=True, nogil=True)
def array_window(t: np.ndarray, w0: float, w1: float) -> tuple[np.ndarray, ...]:
    # pragma: no cover - compiled
    """:func:`formula_window` of a materialised axis: ``[a, b)`` spans the first to
    the last column in the window (columns between need not be in it)."""
    rows, n = t.shape
    tmin = np.full(rows, np.inf)
    tmax = np.full(rows, -np.inf)
    a = np.zeros(rows, dtype=np.int64)
    b = np.zeros(rows, dtype=np.int64)
    for r in range(rows):
        first = -1
        for j in range(n):
            tj = t[r, j]
            if tj < tmin[r]:
                tmin[r] = tj
            if tj > tmax[r]:
                tmax[r] = tj
            if tj >= w0 and tj < w1:
                if first < 0:
                    first = j
                b[r] = j + 1
        a[r] = max(first, 0)
    return tmin, tmax, a, b


@numba.njit(cache=True, nogil=True)
def baseline_bounds(
    raw: np.ndarray,
    has_fill: bool,
    fill: float,
    coded: bool,
    scale: float,
    offset: float,
    tw: np.ndarray,
    t_lo: int,
    a: np.ndarray,
    b: np.ndarray,
    w0: float,
    w1: float,
    head: int,
) -> tuple[np.ndarray, ...]:  # pragma: no cover - compiled
    """Valid samples in the window (count, first, last; columns ``[a, b)`` read, their
    times ``tw[:, j - t_lo]``) and the first and last valid sample of the head."""
    rows, n = raw.shape
    t_rows = tw.shape[0]
    n_win = np.zeros(rows, dtype=np.int64)
    wf = np.full(rows, -1, dtype=np.int64)
    wl = np.full(rows, -1, dtype=np.int64)
    hf = np.full(rows, -1, dtype=np.int64)
    hl = np.full(rows, -1, dtype=np.int64)
    m = min(head, n)
    for r in range(rows):
        tr = r if t_rows == rows else 0
        for j in range(a[r], b[r]):
            v = _sample(raw, r, j, has_fill, fill, coded, scale, offset)
            tj = tw[tr, j - t_lo]
            if v == v and tj >= w0 and tj < w1:
                n_win[r] += 1
                if wf[r] < 0:
                    wf[r] = j
                wl[r] = j
        for j in range(m):
            v = _sample(raw, r, j, has_fill, fill, coded, scale, offset)
            if v == v:
                hf[r] = j
                break
        for j in range(m - 1, -1, -1):
            v = _sample(raw, r, j, has_fill, fill, coded, scale, offset)
            if v == v:
                hl[r] = j
                break
    return n_win, wf, wl, hf, hl


@numba.njit(cache=True, nogil=True)
def window_rows(
    raw: np.ndarray,
    has_fill: bool,
    fill: float,
    coded: bool,
    scale: float,
    offset: float,
    tw: np.ndarray,
    t_lo: int,
    a: np.ndarray,
    b: np.ndarray,
    covered: np.ndarray,
    w0: float,
    w1: float,
    head: int,
    lo: int,
    hi: int,
) -> np.ndarray:  # pragma: no cover - compiled
    """Samples ``lo:hi`` of each row that lie in its baseline mask, NaN elsewhere."""
    rows = raw.shape[0]
    out = np.empty((rows, hi - lo))
    t_rows = tw.shape[0]
    for r in range(rows):
        tr = r if t_rows == rows else 0
        for j in range(lo, hi):
            v = _sample(raw, r, j, has_fill, fill, coded, scale, offset)
            if covered[r]:
                keep = False
                if j >= a[r] and j < b[r]:
                    tj = tw[tr, j - t_lo]
                    keep = tj >= w0 and tj < w1
            else:
                keep = j < head
            out[r, j - lo] = v if keep else np.nan
    return out


@numba.njit(cache=True, nogil=True)
def trace_rows(
    raw: np.ndarray,
    has_fill: bool,
    fill: float,
    coded: bool,
    scale: float,
    offset: float,
    baseline: np.ndarray,
    threshold: np.ndarray,
    dirs: np.ndarray,
    vmin: float,
    vmax: float,
    rail_run: int,
    top_run: int,
    clipped: np.ndarray,
    known_max: np.ndarray,
    known_min: np.ndarray,
    block_max: np.ndarray,
    block_min: np.ndarray,
) -> tuple[np.ndarray, ...]:  # pragma: no cover - compiled
    """Two passes per row: counts and extremes, then the samples at the excursion.

    ``known_max``/``known_min`` (NaN: unknown) are a row's largest and smallest
    sample as float64 when the caller knows every sample of the row is valid
    and finite and both extremes are nonzero (so that their sign of zero cannot
    depend on the order of the samples): the first pass is then skipped, and
    ``block_max``/``block_min`` (rows, blocks of ``EXTREME_BLOCK`` samples) are
    the extremes of each block of such a row, which tell which blocks hold a
    sample at the excursion without reading them again (the excursion rounds
    monotonically with the sample, so a block reaches the maximum iff its own
    extreme in that direction does).

    For each direction ``d`` the excursion is ``d * (x - baseline)`` over the
    valid samples.  Its maximum is that at the largest (d = 1) or smallest
    (d = -1) sample, because each rounded operation is monotonic, so the first
    pass (counts, extremes, rails) gives it; the second finds the samples equal
    to it: the first (the excursion's index, as ``numpy.argmax``), all of them
    (the saturated samples of a row the scope flagged ``clipped``, in the
    direction of the larger excursion) and those in runs of at least ``top_run``
    (a clipped flat top, counted when the maximum exceeds ``threshold``).  The
    larger direction wins, the first on a tie.  ``vmin``/``vmax`` are NaN for no
    rail.

    Returns ``n_valid``, ``vmax_obs``, ``vmin_obs``, ``n_rail``, ``first_valid``,
    ``last_valid``, ``best_exc``, ``best_idx``, the saturated count and its first
    and last index (-1 for none), and ``unsettled``: rows these passes cannot
    settle exactly (a run of ``rail_run`` rail samples, whose union with a flat
    top they do not count; a NaN baseline or an infinite sample; two directions
    whose extremes are the same samples), for the array code to redo.
    """
    rows, n = raw.shape
    nd = dirs.size
    has_rails = vmin == vmin or vmax == vmax
    n_valid = np.zeros(rows, dtype=np.int64)
    vmax_obs = np.full(rows, -np.inf)
    vmin_obs = np.full(rows, np.inf)
    n_rail = np.zeros(rows, dtype=np.int64)
    first_valid = np.full(rows, -1, dtype=np.int64)
    last_valid = np.full(rows, -1, dtype=np.int64)
    best_exc = np.full(rows, -np.inf)
    best_idx = np.zeros(rows, dtype=np.int64)
    n_sat = np.zeros(rows, dtype=np.int64)
    first = np.full(rows, -1, dtype=np.int64)
    last = np.full(rows, -1, dtype=np.int64)
    unsettled = np.zeros(rows, dtype=np.bool_)
    for r in range(rows):
        # pass 1: valid count, extremes, rails
        nv = 0
        hi = -np.inf
        lo = np.inf
        if known_max[r] == known_max[r]:
            nv = n
            hi = known_max[r]
            lo = known_min[r]
        else:
            for j in range(n):
                v = _sample(raw, r, j, has_fill, fill, coded, scale, offset)
                if v == v:
                    nv += 1
                    hi = max(hi, v)
                    lo = min(lo, v)
        n_valid[r] = nv
        vmax_obs[r] = hi
        vmin_obs[r] = lo
        if nv == 0:
            continue  # every excursion -inf at index 0, nothing saturated
        for j in range(n):
            v = _sample(raw, r, j, has_fill, fill, coded, scale, offset)
            if v == v:
                first_valid[r] = j
                break
        for j in range(n - 1, -1, -1):
            v = _sample(raw, r, j, has_fill, fill, coded, scale, offset)
            if v == v:
                last_valid[r] = j
                break
        odd = hi == np.inf or lo == -np.inf
        if has_rails:
            nr = 0
            run = 0
            for j in range(n):
                v = _sample(raw, r, j, has_fill, fill, coded, scale, offset)
                if v == v and (v >= vmax or v <= vmin):
                    nr += 1
                    run += 1
                    odd |= run >= rail_run
                else:
                    run = 0
            n_rail[r] = nr
        b = baseline[r]
        if b != b:
            unsettled[r] = True
            continue
        excs = np.empty(nd)
        best = -np.inf
        kb = -1
        for k in range(nd):
            excs[k] = dirs[k] * ((hi if dirs[k] > 0 else lo) - b)
            if excs[k] > best:
                best = excs[k]
                kb = k
        best_exc[r] = best
        odd |= nd == 2 and excs[0] == -excs[1]
        count = 0
        f = -1
        last_r = -1
        for k in range(nd):
            d = dirs[k]
            exc = excs[k]
            ext = clipped[r] and k == kb
            top = exc > threshold[r]
            # samples at the maximum: first, all (count, first, last), runs >= top_run
            at = -1
            n_ext = 0
            e_last = -1
            n_top = 0
            t_first = -1
            t_last = -1
            run = 0
            # blocks with no sample at the maximum (most of a row) are checked by a
            # branch-free count and passed over: for the walk below such a block is
            # one sample that ends a run, and nothing else
            j0 = 0
            stop = False
            while j0 < n and not stop:
                j1 = min(j0 + EXTREME_BLOCK, n)
                if known_max[r] == known_max[r]:
                    extreme = block_max[r, j0 // EXTREME_BLOCK] if d > 0 else \
                        block_min[r, j0 // EXTREME_BLOCK]
                    reaches = d * (extreme - b) == exc
                else:
                    reaches = _block_reaches(raw, r, j0, j1, d, b, exc, coded, scale, offset)
                if not reaches:
                    if run >= top_run:
                        n_top += run
                        if t_first < 0:
                            t_first = j0 - run
                        t_last = j0 - 1
                    run = 0
                    j0 = j1
                    continue
                for j in range(j0, j1):
                    v = _sample(raw, r, j, has_fill, fill, coded, scale, offset)
                    if v == v and d * (v - b) == exc:
                        if at < 0:
                            at = j
                            if not (ext or top):
                                stop = True
                                break
                        n_ext += 1
                        e_last = j
                        run += 1
                    else:
                        if run >= top_run:
                            n_top += run
                            if t_first < 0:
                                t_first = j - run
                            t_last = j - 1
                        run = 0
                j0 = j1
            if run >= top_run:
                n_top += run
                if t_first < 0:
                    t_first = n - run
                t_last = n - 1
            if k == kb:
                best_idx[r] = at
            if ext:
                c, kf, kl = n_ext, at, e_last
            elif top:
                c, kf, kl = n_top, t_first, t_last
            else:
                continue
            if c > 0:
                count += c
                f = kf if f < 0 else min(f, kf)
                last_r = max(last_r, kl)
        n_sat[r] = count
        first[r] = f
        last[r] = last_r
        unsettled[r] = odd
    return (n_valid, vmax_obs, vmin_obs, n_rail, first_valid, last_valid, best_exc, best_idx,
            n_sat, first, last, unsettled)
