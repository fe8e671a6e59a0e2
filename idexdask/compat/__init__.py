"""Adapters for the dependencies' internals that idexdask relies on for speed.

Four measured shortcuts reach below a dependency's public API.  Each lives
behind one small interface in a module of this package, beside the supported
public-API path that gives the same results, and the interface picks the path
on every call:

================  ==========================================  =====================================
module            shortcut (internals)                        public-API path (fallback)
================  ==========================================  =====================================
``lazy``          xarray's ``LazilyIndexedArray`` over a      the array computed in full and
                  ``BackendArray`` (``xarray.core.indexing``)  wrapped in a plain ``xr.Variable``
``zarr_chunks``   the Zarr v3 codec chain run by this         zarr-python's ``create_array`` and
                  package on numcodecs, ``zarr.json`` edited  ``Array.__setitem__``
``cdf_writer``    cdflib's private writer helpers and an      ``cdflib.xarray.xarray_to_cdf``
                  O(1) attribute-entry link in a ``CDF``
                  subclass
``erfcx``         SciPy's C ``erfcx`` through                 ``scipy.special.erfcx`` in array
                  ``cython_special.__pyx_capi__``             code (the callers' array path)
================  ==========================================  =====================================

The shortcut is used when its feature check passes (the internal names exist
with the shape this code expects); otherwise the public path is taken, with a
debug log.  The environment variable :data:`PUBLIC_API_ENV` forces the public
path for some or all of them (``"all"``, or names of the table separated by
commas): the tests run both paths this way, and a user who meets a dependency
release that breaks a shortcut in a way its check misses can switch it off
without a code change.  ``make test-newest`` runs the suite against the newest
releases of these dependencies, so such a break is seen here first.
"""

from __future__ import annotations

import os

from idexdask.errors import ConfigError

__all__ = ["ADAPTERS", "PUBLIC_API_ENV", "public_api_forced"]

PUBLIC_API_ENV = "IDEXDASK_PUBLIC_API"
"""Environment variable: adapters (comma separated, or ``all``) held to the public API."""

ADAPTERS = ("lazy", "zarr_chunks", "cdf_writer", "erfcx")
"""The adapters' names, as :data:`PUBLIC_API_ENV` spells them."""


def public_api_forced(adapter: str) -> bool:
    """Whether :data:`PUBLIC_API_ENV` holds ``adapter`` to the public-API path.

    Read on every call (no cached state): a test's ``monkeypatch.setenv``, or a
    Dask worker started with the variable, takes effect at once.

    Parameters
    ----------
    adapter : str
        One of :data:`ADAPTERS`.

    Returns
    -------
    bool
        True when the variable names ``adapter`` or ``all``.

    Raises
    ------
    ConfigError
        If ``adapter`` or a name in the variable is not an adapter's (a typo
        would otherwise leave the shortcut on without a word).
    """
    names = {n.strip() for n in os.environ.get(PUBLIC_API_ENV, "").split(",") if n.strip()}
    unknown = sorted((names | {adapter}) - {*ADAPTERS, "all"})
    if unknown:
        raise ConfigError(
            f"{PUBLIC_API_ENV}: unknown adapter(s) {unknown}; known: all, {', '.join(ADAPTERS)}"
        )
    return "all" in names or adapter in names
