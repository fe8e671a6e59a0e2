"""Time the official L2a's per-event science work (imap-processing 1.0.40) on given events.

Runs inside ``.venv-oracle``.  Reads an ``.npz`` with TOF_High (DN), time axes
and the three low-rate waveforms (pC-scaled as the official L1b would), and
runs, per event, exactly the L2a steps that dominate its cost: ``time_to_mass``,
``find_peaks`` + ``analyze_peaks`` (EMG fits), ``calculate_snr`` and
``estimate_dust_mass`` on Target_Low, Target_High and Ion_Grid.  File I/O, CDF
attributes and SPICE are left out (they only add to the official time).
Prints the seconds per event.

Usage: ``python _official_l2a_time.py EVENTS.npz [N_EVENTS]``
"""

from __future__ import annotations

import logging
import sys
import time

import numpy as np
import xarray as xr


def run(path: str) -> float:
    logging.disable(logging.CRITICAL)
    import pandas as pd
    from imap_processing import imap_module_directory
    from imap_processing.idex import idex_l2a as l2a
    from scipy.signal import find_peaks

    d = np.load(path)
    masses = pd.read_csv(f"{imap_module_directory}/idex/atomic_masses.csv")["Mass"]
    n = min(d["TOF_High"].shape[0], int(sys.argv[2]) if len(sys.argv) > 2 else 3)
    t0 = time.perf_counter()
    for e in range(n):
        tof = d["TOF_High"][e : e + 1].astype(float)
        hs = d["time_high"][e : e + 1]
        _, _, scale = l2a.time_to_mass(tof, hs, masses)
        peaks = [find_peaks(tof[0], prominence=0.01)[0]]
        l2a.analyze_peaks(
            tof[0], hs[0], scale[0], 0, peaks
        )
        l2a.calculate_snr(xr.DataArray(tof, dims=("e", "t")), xr.DataArray(hs, dims=("e", "t")))
        print(f"event {e}: TOF steps done at {time.perf_counter() - t0:.2f} s", file=sys.stderr)
        for name in ("Target_Low", "Target_High", "Ion_Grid"):
            l2a.estimate_dust_mass(
                xr.DataArray(d["time_low"][e]), xr.DataArray(d[name][e]), waveform_name=name
            )
            print(f"  {name} done at {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    return (time.perf_counter() - t0) / n


if __name__ == "__main__":
    print(f"{run(sys.argv[1]):.6f}")
