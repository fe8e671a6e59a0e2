"""`idexdask demo` end to end, small: simulate (one process per file), submit on the
embedded cluster, export HDF5 and CDF, summary; the exports read back equal the store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cdflib
import h5py
import numpy as np
import pytest

from idexdask.pipeline.export import open_campaign

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_demo_small(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    result = subprocess.run(
        [str(BIN / "idexdask"), "demo", "--output", str(out), "--files", "2", "--events", "6",
         "--workers", "1"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "12 events, 1 files Rice-compressed" in result.stdout
    assert "events in store    : 12 of 12" in result.stdout
    assert "exports            : 6 files" in result.stdout
    assert "round trip exact   : yes" in result.stdout
    # listed by input: its L1a CDF, its L2a CDF, its HDF5 file
    listed = [Path(line.strip()) for line in result.stdout.splitlines()
              if line.startswith("  ") and str(out / "exports") in line]
    assert len(listed) == 6
    stored = open_campaign(out / "campaign.zarr", dask=False).load()
    for number, stem in enumerate(("day1_plain", "day2_rice")):
        rows = np.flatnonzero(stored["input_index"].values == number)
        assert rows.size == 6
        l1a, l2a, h5_path = listed[3 * number: 3 * number + 3]
        assert l1a.name.startswith("imap_idex_l1a_sci") and l1a.name.endswith("_v001.cdf")
        assert l2a.name.startswith("imap_idex_l2a_sci") and h5_path.name == f"{stem}.h5"
        cdf = cdflib.CDF(str(l1a))
        with h5py.File(h5_path, "r") as h5:
            for name in ("epoch", "TOF_High", "Ion_Grid", "compressed", "input_index"):
                expected = stored[name].values[rows]
                assert np.array_equal(cdf.varget(name), expected.astype(
                    np.uint8) if expected.dtype == bool else expected), name
                assert np.array_equal(h5[name][...], expected), name
        assert (cdf.varget("compressed") == number).all()  # day2 is Rice-compressed
        assert np.array_equal(cdflib.CDF(str(l2a)).varget("epoch"), stored["epoch"].values[rows])
