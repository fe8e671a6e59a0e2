"""Files in and out: LeCroy scope captures, official L1a CDFs, CDF and HDF5 exports.

:mod:`.trc` reads (and writes, for tests and simulations) LeCroy ``.trc``
captures; :mod:`.l1a_cdf` reads the IMAP SDC's official IDEX L1a CDFs;
:mod:`.cdf` and :mod:`.hdf5` write the ISTP CDF and HDF5 exports of a store.
"""

from idexdask.io.cdf import istp_dataset, load_cdf_attributes, write_cdf
from idexdask.io.hdf5 import write_hdf5
from idexdask.io.l1a_cdf import L1aCdfInfo, inspect_l1a_cdf, read_cdf
from idexdask.io.trc import TrcHeader, TrcWaveform, read_trc, read_trc_file, write_trc

__all__ = [
    "L1aCdfInfo",
    "TrcHeader",
    "TrcWaveform",
    "inspect_l1a_cdf",
    "istp_dataset",
    "load_cdf_attributes",
    "read_cdf",
    "read_trc",
    "read_trc_file",
    "write_cdf",
    "write_hdf5",
    "write_trc",
]
