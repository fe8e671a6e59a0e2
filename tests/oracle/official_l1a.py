"""Run the official pipeline's L1a decoder (imap-processing 1.0.40) on L0 files.

This script runs inside ``.venv-oracle`` (see the Makefile), never in our own
environment: the official package pins versions we do not want.  It writes, per
input file, an ``.npz`` with the science events' waveforms, time axes, epoch and
every integer header variable, for the tests to compare against.

Usage: ``python official_l1a.py OUT_DIR FILE [FILE ...]``
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np


def furnish_time_kernels() -> None:
    """Load the two SPICE time kernels the official L1a needs (shipped in its wheel)."""
    import imap_processing
    import spiceypy

    kernels = Path(imap_processing.__file__).parent / "ultra" / "l1c" / "sim_spice_kernels"
    spiceypy.furnsh(str(kernels / "naif0012.tls"))
    spiceypy.furnsh(str(kernels / "imap_sclk_0000.tsc"))


def main(out_dir: str, files: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING)
    furnish_time_kernels()
    from imap_processing.idex.idex_l1a import PacketParser

    for file in files:
        data = PacketParser(file).data
        science = data.get("l1a_sci-10days")
        arrays: dict[str, np.ndarray] = {}
        if science is not None:
            for name, variable in science.variables.items():
                if variable.dtype.kind in "iuf":
                    arrays[name] = variable.values
        np.savez(Path(out_dir) / (Path(file).name + ".npz"), **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
