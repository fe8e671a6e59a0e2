"""Fit the target and ion-grid signals with the official L2a (imap-processing 1.0.40).

Runs inside ``.venv-oracle``.  For each L0 file, decodes the science events with
the official L1a, converts the three low-rate waveforms from DN to pC with the
official L1b factors, and fits each with the official L2a ``estimate_dust_mass``
(the step its L2a applies to every event; the rest of L2a needs SPICE and
ancillary files and is not reached).  Writes, per file, an ``.npz`` with
``epoch``, ``params`` (events, 3, 5: time_of_impact µs, constant_offset pC,
amplitude pC, rise_time µs, discharge_time µs), ``sig_amp`` (pC), ``chisq`` and
``redchi`` (events, 3), channels in ``CHANNELS`` order.

Usage: ``python official_target_fits.py OUT_DIR FILE [FILE ...]``
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

CHANNELS = ("Target_High", "Target_Low", "Ion_Grid")


def main(out_dir: str, files: list[str]) -> int:
    logging.disable(logging.CRITICAL)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from official_l1a import furnish_time_kernels

    furnish_time_kernels()
    import xarray as xr
    from imap_processing.idex.idex_constants import ConversionFactors
    from imap_processing.idex.idex_l1a import PacketParser
    from imap_processing.idex.idex_l2a import estimate_dust_mass

    for file in files:
        science = PacketParser(file).data.get("l1a_sci-10days")
        n = 0 if science is None else science.sizes["epoch"]
        params = np.full((n, 3, 5), np.nan)
        sig_amp = np.full((n, 3), np.nan)
        chisq = np.full((n, 3), np.nan)
        redchi = np.full((n, 3), np.nan)
        for e in range(n):
            time = xr.DataArray(science["time_low_sample_rate"].values[e])
            for c, name in enumerate(CHANNELS):
                signal = science[name].values[e].astype(float) * ConversionFactors[name].value
                p, amp, chi, red, _ = estimate_dust_mass(
                    time, xr.DataArray(signal), waveform_name=name
                )
                params[e, c], sig_amp[e, c], chisq[e, c], redchi[e, c] = p, amp, chi, red
        epoch = science["epoch"].values if n else np.zeros(0, dtype=np.int64)
        np.savez(
            Path(out_dir) / (Path(file).name + ".npz"),
            epoch=epoch,
            params=params,
            sig_amp=sig_amp,
            chisq=chisq,
            redchi=redchi,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
