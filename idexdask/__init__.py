"""idexdask: ground system for the IMAP IDEX dust instrument.

Bytes -> events (xarray) -> products -> store/exports -> views.

What a user needs, at the top level:

=====================  =================================================================
read an input          :func:`read_l0` (IDEX L0 packets), :func:`read_trc` (LeCroy scope
                       captures), :func:`read_cdf` (official L1a CDFs): an event dataset
analyse events         :func:`analyze` (line fits, impact fits, calibration, composition),
                       :func:`instrument_state` (the instrument's housekeeping per event)
run a campaign         :func:`load_config`, :func:`run_campaign` (plan -> Dask -> Zarr
                       store), :func:`open_campaign` (the store as one dataset)
simulate               :mod:`simulate` (simulated events and L0 files, byte-exact)
=====================  =================================================================

Subpackages by layer (docs/architecture.md): :mod:`idexdask.packets` and
:mod:`idexdask.io` (sources), :mod:`idexdask.analysis`, :mod:`idexdask.calibration`,
:mod:`idexdask.composition`, :mod:`idexdask.pipeline`, :mod:`idexdask.dashboard`.
"""

import importlib

from idexdask import kernel_cache

# numba reads NUMBA_CACHE_DIR when first imported, which the imports below do:
# a read-only installation caches its kernels per user (idexdask/kernel_cache.py)
kernel_cache.configure()

# the public names are imported on first use: a Dask worker imports this package
# (its tasks live in idexdask.pipeline) and needs only the modules its tasks
# use, not the simulator, the readers of other sources or the run's client side
_PUBLIC = {
    "analyze": "idexdask.workflow",
    "instrument_state": "idexdask.analysis.instrument",
    "load_config": "idexdask.config",
    "open_campaign": "idexdask.pipeline.export",
    "read_cdf": "idexdask.io.l1a_cdf",
    "read_l0": "idexdask.packets.reader",
    "read_trc": "idexdask.io.trc",
    "run_campaign": "idexdask.pipeline.runner",
}


def __getattr__(name: str):
    if name == "simulate":
        return importlib.import_module("idexdask.simulate")
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'idexdask' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "analyze",
    "instrument_state",
    "load_config",
    "open_campaign",
    "read_cdf",
    "read_l0",
    "read_trc",
    "run_campaign",
    "simulate",
]
__version__ = "0.1.0"
