"""idexdask: ground system for the IMAP IDEX dust instrument.

Bytes -> events (xarray) -> products -> store/exports -> views.
"""

from idexdask import kernel_cache

# numba reads NUMBA_CACHE_DIR when first imported, which the imports below do:
# a read-only installation caches its kernels per user (idexdask/kernel_cache.py)
kernel_cache.configure()

from idexdask.analysis.instrument import instrument_state  # noqa: E402
from idexdask.io.l1a_cdf import read_cdf  # noqa: E402
from idexdask.io.trc import read_trc  # noqa: E402
from idexdask.packets.reader import read_l0  # noqa: E402
from idexdask.workflow import analyze  # noqa: E402

__all__ = ["analyze", "instrument_state", "read_cdf", "read_l0", "read_trc"]
__version__ = "0.1.0"
