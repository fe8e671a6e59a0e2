"""Write the official L1a science CDFs (imap-processing 1.0.40) of L0 files.

Runs inside ``.venv-oracle`` (see tests/oracle/official_l1a.py), offline: the
official writer names the file from the dataset and writes it under
``imap_data_access.config["DATA_DIR"]`` (set here to ``OUT_DIR/<n>`` for the n-th
input, as two inputs of the same day would get the same name), which needs no
network.  Each input's ``l1a_sci-10days`` product is written with
``imap_processing.cdf.utils.write_cdf`` and ``INPUT<TAB>CDF`` is printed, one
line per input (``-`` for the CDF where the input holds no science event).

Usage: ``python official_l1a_cdf.py OUT_DIR FILE [FILE ...]``
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path


def main(out_dir: str, files: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING)
    os.environ["IMAP_DATA_DIR"] = str(Path(out_dir).resolve())  # before any import reads it
    sys.path.insert(0, str(Path(__file__).parent))
    from official_l1a import furnish_time_kernels

    furnish_time_kernels()
    import imap_data_access
    from imap_processing.cdf.utils import write_cdf
    from imap_processing.idex.idex_l1a import PacketParser

    for number, file in enumerate(files):
        science = PacketParser(file).data.get("l1a_sci-10days")
        if science is None or science.sizes.get("epoch", 0) == 0:
            sys.stdout.write(f"{file}\t-\n")
            continue
        imap_data_access.config["DATA_DIR"] = Path(out_dir).resolve() / str(number)
        science.attrs.setdefault("Data_version", "001")
        sys.stdout.write(f"{file}\t{write_cdf(science)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
