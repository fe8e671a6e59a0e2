"""SciPy's C ``erfcx`` for compiled kernels, or nothing (the callers' array path).

The compiled kernels that promise the array code's values (the EMG fits'
``engine: auto``, :func:`~idexdask.analysis.peaks.line_heights`) call the very C
function behind ``scipy.special.erfcx``.  numba reaches it through
``scipy.special.cython_special.__pyx_capi__``: Cython's table of exported C
functions, which SciPy does not document, keyed by a mangled name
(``__pyx_fuse_1erfcx``, the double flavour) and a signature string.  Where that
entry is missing or has another signature, :func:`scipy_erfcx_address` returns
0 and the callers take their public path: ``scipy.special.erfcx`` in array code
(the same C function through the ufunc: equal values but for NumPy's SIMD
``exp`` against libm's, an ulp), or, for an explicit ``engine: compiled``, the
package's own compiled ``erfcx`` (:mod:`idexdask.analysis.special`, within one
ulp of SciPy's).
"""

from __future__ import annotations

import logging
from typing import Any

from llvmlite import ir
from numba import types
from numba.extending import get_cython_function_address, intrinsic

from idexdask.compat import public_api_forced

__all__ = ["call_scipy_erfcx", "scipy_erfcx_address"]

logger = logging.getLogger(__name__)

_SCIPY_ERFCX = "__pyx_fuse_1erfcx"  # the double flavour of cython_special.erfcx
_SCIPY_ERFCX_SIGNATURE = "double (double, int __pyx_skip_dispatch)"


def scipy_erfcx_address() -> int:
    """Address of SciPy's C ``erfcx(double)`` (the code behind ``scipy.special.erfcx``).

    Returns
    -------
    int
        The function's address; 0 when this SciPy does not export it with the
        expected signature, or when ``IDEXDASK_PUBLIC_API`` names ``erfcx``
        (the callers then take their array path).
    """
    if public_api_forced("erfcx"):
        return 0
    try:
        import scipy.special.cython_special as cython_special  # noqa: PLC0415

        capsule = cython_special.__pyx_capi__[_SCIPY_ERFCX]
        if _SCIPY_ERFCX_SIGNATURE not in repr(capsule):
            logger.debug("scipy's C erfcx has another signature: %r", capsule)
            return 0
        return int(get_cython_function_address("scipy.special.cython_special", _SCIPY_ERFCX))
    except (ImportError, KeyError, AttributeError, ValueError) as exc:  # pragma: no cover
        logger.debug("scipy's C erfcx is not available (%s)", exc)
        return 0


@intrinsic
def call_scipy_erfcx(typingctx: Any, address: Any, z: Any) -> Any:  # pragma: no cover - compiled
    """Call ``double f(double, int)`` at ``address`` as ``f(z, 0)`` (compiled code only).

    The address is a run-time argument (not a ctypes global), so the functions
    calling this stay cacheable.  Never call it with address 0: the kernels
    test the address and use their own ``erfcx`` then.
    """
    if not isinstance(address, types.Integer) or not isinstance(z, types.Float):
        return None
    sig = types.float64(address, z)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        fnty = ir.FunctionType(ir.DoubleType(), [ir.DoubleType(), ir.IntType(32)])
        fn = builder.inttoptr(args[0], fnty.as_pointer())
        zv = context.cast(builder, args[1], signature.args[1], types.float64)
        return builder.call(fn, [zv, ir.Constant(ir.IntType(32), 0)])

    return sig, codegen
