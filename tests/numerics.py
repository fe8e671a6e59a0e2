"""Tolerances for comparing two implementations of one computation.

Bit-identity holds only for the same code run twice on one machine.  Two
implementations (a numba kernel and NumPy array code, CPU and GPU, ours and an
oracle) differ in the last bits wherever a transcendental function is
evaluated: numba calls libm, NumPy dispatches exp/log/... at run time to the
SIMD code of the CPU it runs on (AVX-512, AVX2 or baseline SSE), and those
differ by an ulp or two.  ``make test`` therefore runs the tests marked
``numerics`` a second time with NumPy's SIMD dispatch and numba's CPU-specific
code generation turned off, so a machine-dependent assertion fails on the
developer's machine rather than on a user's.
"""

from __future__ import annotations

import numpy as np
from numpy.testing import assert_allclose

EPS = float(np.finfo(np.float64).eps)

__all__ = ["EPS", "assert_kernel_matches", "assert_same_fits"]


def assert_same_fits(got, ref, n_points: int, ftol: float = 1e-10, converged: int = 0) -> None:
    """Two engines running the same iteration on the same data reached the same fits.

    ``got`` and ``ref`` are :class:`~idexdask.analysis.fitting.BatchFitResult`-like
    (``params``, ``stderr``, ``chisq``, ``niter``, ``status``).  The engines differ
    only in how exp/erfcx are evaluated (an ulp or two, depending on the CPU), so
    their iterations follow the same path to ~1e-12 and rounding can at most
    flip the stopping test of one iteration.  Hence: identical statuses; at most
    one iteration more or less; chi-square within the gain of that one step (the
    fit stops when a step would gain less than ``ftol * chisq``); parameters
    within sqrt(ftol * n_points) standard errors (how far from the minimum such a
    stop may lie, see ``fit_batch``); standard errors, from the Jacobian at the
    final parameters, to a relative 1e-4 (they move by about the parameters'
    shift relative to the curvature's scale, i.e. by ~1e-4 of themselves).
    """
    assert np.array_equal(got.status, ref.status), "statuses differ"
    ok = np.asarray(ref.status) == converged
    assert ok.any(), "no converged fit to compare"
    if getattr(got, "niter", None) is not None:
        assert np.all(np.abs(got.niter.astype(int) - ref.niter.astype(int)) <= 1)
    assert_allclose(got.chisq[ok], ref.chisq[ok], rtol=2 * ftol)
    pull = np.abs(got.params[ok] - ref.params[ok]) / ref.stderr[ok]
    assert np.nanmax(pull) < np.sqrt(ftol * n_points), np.nanmax(pull)
    assert_allclose(got.stderr[ok], ref.stderr[ok], rtol=1e-4)


def assert_kernel_matches(r_nb, jac_nb, r, jac, scale) -> None:
    """Compiled residuals and Jacobian equal the array code's within rounding.

    Residuals ``w*(y - f)``: f is a handful of correctly rounded operations on
    exp/erfcx values, which libm and NumPy's SIMD code give an ulp or two apart:
    8 ulp of ``scale`` = ``w*(|y| + |f|)`` bound the difference.  A Jacobian
    column is a difference of large terms (d/dgamma of an EMG subtracts terms
    ~(gamma*sigma)**2 larger than the result), so an ulp of a term is up to
    ~1e-10 of the column's largest value; the Jacobian only sets the
    Gauss-Newton step and the covariance, where an error of 1e-8 of a column
    changes the reported standard errors by ~1e-8 relative: that is the bound,
    per fit and parameter.  NaN (masked) entries must match exactly.
    """
    assert np.array_equal(np.isnan(r_nb), np.isnan(r))
    assert np.all(np.abs(r_nb - r) <= 8 * EPS * scale), np.nanmax(np.abs(r_nb - r) / scale)
    assert np.array_equal(np.isnan(jac_nb), np.isnan(jac))
    column = np.nanmax(np.abs(jac), axis=2, keepdims=True)
    assert np.all(np.abs(jac_nb - jac) <= 1e-8 * column)


# --------------------------------------------------------------------------- the variant run

#: NumPy's run-time dispatch targets above the x86-64 baseline (NumPy 2.4 names:
#: X86_V3 = AVX2/FMA3, X86_V4 = AVX-512 SKX, and two AVX-512 extensions), so that
#: every ufunc runs its baseline (SSE4.2) loop; names a CPU lacks are ignored.
DISABLED_CPU_FEATURES = "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"


def variant_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of the numerics variant run: baseline SIMD in NumPy, generic numba.

    numba keys its cache by CPU name and features, so the generic kernels are
    cached apart from the main ones (``NUMBA_CACHE_DIR`` inside the virtual
    environment): the two runs neither evict nor recompile each other's.
    """
    import os
    import sys
    from pathlib import Path

    env = dict(os.environ if base is None else base)
    env["NPY_DISABLE_CPU_FEATURES"] = DISABLED_CPU_FEATURES
    env["NUMBA_CPU_NAME"] = "generic"
    env["NUMBA_CACHE_DIR"] = str(Path(sys.prefix) / "numba-cache-generic")
    return env


def main(argv: list[str]) -> int:
    """``python -m tests.numerics [PYTEST ARGS]``: the numerics tests in the variant.

    ``python -m tests.numerics --compile`` fills the generic numba cache
    (``idexdask compile``) instead, so that parallel test workers do not each
    compile every kernel.
    """
    import subprocess
    import sys
    from pathlib import Path

    env = variant_environment()
    if argv[:1] == ["--compile"]:
        idexdask = Path(sys.executable).parent / "idexdask"
        return subprocess.run([str(idexdask), "compile"], env=env).returncode
    command = [sys.executable, "-m", "pytest", "-m", "numerics and not gpu", *argv]
    return subprocess.run(command, env=env).returncode


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
