"""Which code of a lab pack's processing reads the float32 volts of given channels.

The pipeline's pack read (``LecroyCaptures.read_units``, ``read_trc(...,
keep_codes=True)``) writes the float32 volts of every scope channel beside its
recorded int16 codes.  Before the reader can leave some channels' volts to be
decoded on demand, every consumer that asks for them must take the codes
instead.  This script finds those consumers: it reads the shared captures as
one pack, replaces the named channels' volts with lazy variables
(:func:`idexdask.compat.lazy.lazy_variable`) that record who indexes them, and
runs what a worker runs on the pack: ``process_units`` (read, analysis,
normalisation) and ``write_region`` into a lab-laid-out store.  Each line
printed is one read of the volts: the channel, the selection and the three
innermost ``idexdask`` frames that asked, with the CPU time of a decode
of that selection there by the reader's compiled pass (``volts_into``, into
fresh memory)::

    PYTHONPATH=. python bench/qd_volts_readers.py [--channels QD_1 QD_2]

A consumer that reads only a few rows or columns shows its selection; a full
``(slice(None), slice(None))`` is a read of the whole waveform.
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np


class _Recorded:
    """A source of :func:`~idexdask.compat.lazy.lazy_variable` over volts in
    memory, counting who indexes it (and the CPU time a decode of the selection
    from the codes takes)."""

    def __init__(self, name: str, volts: np.ndarray, codes: np.ndarray | None, scale,
                 reads: collections.Counter, cpu: collections.Counter) -> None:
        self.name, self.volts, self.codes, self.scale = name, volts, codes, scale
        self.shape, self.dtype = volts.shape, volts.dtype
        self.reads, self.cpu = reads, cpu

    def compute(self, key: tuple) -> np.ndarray:
        frames = [f for f in traceback.extract_stack()[:-1]
                  if "idexdask" in f.filename and "compat/lazy" not in f.filename
                  and "bench" not in f.filename]
        where = " <- ".join(f"{Path(f.filename).parent.name}/{Path(f.filename).name}:"
                            f"{f.lineno} {f.name}" for f in reversed(frames[-3:]))
        label = (self.name, repr(key)[:60], where)
        self.reads[label] += 1
        if self.codes is not None and self.scale is not None:
            # the reader's compiled pass (volts_into) into fresh memory, row by row
            from idexdask.io.trc.format import volts_into

            start = time.process_time()
            rows = np.atleast_2d(self.codes[key])
            out = np.empty(rows.shape, np.float32)
            for row, values in zip(rows, out, strict=True):
                volts_into(row, self.scale.scale, -self.scale.offset, self.scale.fill, values)
            self.cpu[label] += time.process_time() - start
        return self.volts[key]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", nargs="+", default=["QD_1", "QD_2"])
    parser.add_argument("--captures", type=Path, default=Path(
        os.environ.get("IDEXDASK_DATA", "../shared/data")) / "scope-trc")
    args = parser.parse_args()

    from idexdask.adccodes import RECORDED_CODES_KEY, code_scale
    from idexdask.compat.lazy import lazy_variable
    from idexdask.config import load_config
    from idexdask.pipeline.plan import plan_inputs
    from idexdask.pipeline.region_write import write_region
    from idexdask.pipeline.store import initialise_store
    from idexdask.pipeline.units import process_units
    from idexdask.sources import sources

    reads: collections.Counter = collections.Counter()
    cpu: collections.Counter = collections.Counter()

    def lazified(dataset):
        out = dataset.copy()
        for name in args.channels:
            if name not in dataset.variables:
                continue
            variable = dataset.variables[name]
            recorded = variable.encoding.get(RECORDED_CODES_KEY)
            codes = getattr(recorded, "codes", None)
            out[name] = lazy_variable(
                variable.dims, _Recorded(name, np.asarray(variable.values), codes,
                                         code_scale(variable.encoding), reads, cpu),
                attrs=variable.attrs, encoding=variable.encoding)
        return out

    units = plan_inputs([args.captures], 1).units
    source = sources.by_kind(units[0].kind)
    read_units = source.read_units.__func__
    source.read_units = classmethod(lambda cls, us: lazified(read_units(cls, us)))
    config = load_config({})
    processed = process_units(units, config)
    if processed.failures or processed.dataset is None:
        raise SystemExit(f"the pack failed: {processed.failures}")
    dataset = lazified(processed.dataset)  # as a lazy waveform would reach the writer
    pipeline = config["pipeline"]
    with tempfile.TemporaryDirectory(prefix="qd-volts-") as tmp:
        store, n = Path(tmp) / "s.zarr", dataset.sizes["epoch"]
        initialise_store(store, dataset.isel(epoch=slice(0, 1)), n, rows=n,
                         compressor=str(pipeline.get("lab_compressor", pipeline["compressor"])),
                         level=int(pipeline["compression_level"]), meta={})
        write_region(store, dataset, (0, n), rows=n, n_events=n)
    print(f"{len(units)} impacts; reads of the volts of {', '.join(args.channels)}:")
    for (name, key, where), count in reads.items():
        print(f"  {count} x {name} {key}  decode {cpu[(name, key, where)] * 1e3 / len(units):.2f}"
              f" ms per impact\n      {where}")
    print(f"all decodes: {sum(cpu.values()) * 1e3 / len(units):.2f} ms per impact")


if __name__ == "__main__":
    main()
