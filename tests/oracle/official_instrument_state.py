"""The official L1b instrument state (imap-processing 1.0.40) of every real event.

Runs inside ``.venv-oracle``.  The official L1b science step cannot run offline
as a whole (it asks SPICE for the spin phase), so this script calls the pieces
of ``imap_processing.idex.idex_l1b`` that compute the instrument state, on the
official L1a dataset of each file: ``unpack_instrument_settings`` then
``convert_raw_to_eu`` with the official conversion table (the housekeeping
quantities), ``get_trigger_mode_and_level``, ``get_trigger_origin``,
``get_event_dead_time``, and ``convert_waveforms`` (waveforms in mA / pC).
Writes, per input file, an ``.npz`` with ``epoch``, every quantity under its
official name (float64; strings as unicode, ``""`` where the official gives
None) and the converted waveforms as ``wave_<name>``.

The real files exercise few of the fields' values (dead time 0, one trigger
gain), so ``synthetic.npz`` adds ``SYNTHETIC_EVENTS`` events of random header
words (every bit pattern; trigger modes 0-3, the official's only valid ones)
through the same functions; the raw words are saved as ``word_<name>``.

Usage: ``python official_instrument_state.py OUT_DIR FILE [FILE ...]``
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

SYNTHETIC_EVENTS = 4096
SYNTHETIC_SEED = 22


def main(out_dir: str, files: list[str]) -> int:
    logging.disable(logging.CRITICAL)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from official_l1a import furnish_time_kernels

    furnish_time_kernels()
    import pandas as pd
    import xarray as xr
    from imap_processing import imap_module_directory
    from imap_processing.idex import idex_l1b
    from imap_processing.idex.idex_l1a import PacketParser
    from imap_processing.idex.idex_utils import get_idex_attrs

    table = f"{imap_module_directory}/idex/idex_variable_unpacking_and_eu_conversion.csv"
    attrs = get_idex_attrs("l1b")

    def state(science: xr.Dataset) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        if science is not None:
            arrays["epoch"] = science["epoch"].values
            unpacked = idex_l1b.unpack_instrument_settings(science, pd.read_csv(table), attrs)
            converted = idex_l1b.convert_raw_to_eu(
                xr.Dataset(unpacked, coords={"epoch": science["epoch"]}),
                conversion_table_path=table,
                packet_name="IDEX_SCI",
            )
            for name in unpacked:
                arrays[name] = np.asarray(converted[name].values, dtype=np.float64)
            derived = (
                idex_l1b.get_trigger_mode_and_level(science, attrs)
                | idex_l1b.get_trigger_origin(science["idx__txhdrtrigid"].data, attrs)
                | idex_l1b.get_event_dead_time(science, attrs)
            )
            for name, variable in derived.items():
                values = np.asarray(variable.values)
                if values.dtype == object:
                    values = np.array(["" if v is None else str(v) for v in values], dtype=str)
                arrays[name] = values
        return arrays

    for file in files:
        science = PacketParser(file).data.get("l1a_sci-10days")
        arrays = state(science)
        if science is not None:
            for name, variable in idex_l1b.convert_waveforms(science, attrs).items():
                arrays[f"wave_{name}"] = np.asarray(variable.values, dtype=np.float64)
        np.savez(Path(out_dir) / (Path(file).name + ".npz"), **arrays)

    rng = np.random.default_rng(SYNTHETIC_SEED)
    n = SYNTHETIC_EVENTS
    words = {
        name: rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
        for name in sorted(
            set(pd.read_csv(table)["var_name"])
            | {f"idx__txhdr{g}trigctrl1" for g in ("lg", "mg", "hg")}
            | {"idx__txhdrblocks"}
        )
    }
    words["idx__txhdrtrigid"] = rng.integers(0, 1 << 16, n, dtype=np.uint16)
    for g in ("lg", "mg", "hg"):
        words[f"idx__txhdr{g}trigmode"] = rng.integers(0, 4, n, dtype=np.uint8)
    epoch = np.arange(n, dtype=np.int64)
    synthetic = xr.Dataset(
        {name: ("epoch", values) for name, values in words.items()}, coords={"epoch": epoch}
    )
    arrays = state(synthetic)
    arrays |= {f"word_{name}": values for name, values in words.items()}
    np.savez(Path(out_dir) / "synthetic.npz", **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
