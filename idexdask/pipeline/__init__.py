"""Campaign pipeline: many inputs -> one Zarr store on a Dask cluster, resumable.

* :mod:`~idexdask.pipeline.plan`: inputs -> units with exact event counts (each
  input's source, :mod:`idexdask.sources`, cuts it), units -> packs of tasks;
* :mod:`~idexdask.pipeline.units`: :func:`process_unit`, the unit function
  (the source reads the unit, then ``idexdask.analyze``);
* :mod:`~idexdask.pipeline.tasks`: the worker tasks (process, write, both);
* :mod:`~idexdask.pipeline.store`: the full-size store and per-unit region writes;
* :mod:`~idexdask.pipeline.manifest`: the journal of finished units;
* :mod:`~idexdask.pipeline.overrides_store`: the store's manual override table,
  reapplied by every run (a unit is redone when its rows change);
* :mod:`~idexdask.pipeline.cluster`: LocalCluster / GPU / remote scheduler;
* :mod:`~idexdask.pipeline.runner`: :func:`run_campaign` and :func:`store_status`;
* :mod:`~idexdask.pipeline.export`: HDF5 and CDF files per input from a store.

See ``docs/pipeline.md``.
"""

from __future__ import annotations

__all__ = ["process_unit", "run_campaign", "store_status"]


def __getattr__(name: str):
    if name == "process_unit":
        from idexdask.pipeline.units import process_unit

        return process_unit
    if name in ("run_campaign", "store_status"):
        from idexdask.pipeline import runner

        return getattr(runner, name)
    raise AttributeError(name)
