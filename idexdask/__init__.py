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

from idexdask import kernel_cache

# numba reads NUMBA_CACHE_DIR when first imported, which the imports below do:
# a read-only installation caches its kernels per user (idexdask/kernel_cache.py)
kernel_cache.configure()

from idexdask import simulate  # noqa: E402
from idexdask.analysis.instrument import instrument_state  # noqa: E402
from idexdask.config import load_config  # noqa: E402
from idexdask.io.l1a_cdf import read_cdf  # noqa: E402
from idexdask.io.trc import read_trc  # noqa: E402
from idexdask.packets.reader import read_l0  # noqa: E402
from idexdask.pipeline.export import open_campaign  # noqa: E402
from idexdask.pipeline.runner import run_campaign  # noqa: E402
from idexdask.workflow import analyze  # noqa: E402

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
