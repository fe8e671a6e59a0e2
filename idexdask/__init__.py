"""idexdask: ground system for the IMAP IDEX dust instrument.

Bytes -> events (xarray) -> products -> store/exports -> views.
"""

from idexdask.analysis import analyze
from idexdask.analysis.instrument import instrument_state
from idexdask.io.trc import read_trc
from idexdask.packets.reader import read_l0

__all__ = ["analyze", "instrument_state", "read_l0", "read_trc"]
__version__ = "0.1.0"
