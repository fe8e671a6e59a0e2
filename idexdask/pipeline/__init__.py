"""Campaign pipeline: many inputs -> one Zarr store on a Dask cluster, resumable.

* :mod:`~idexdask.pipeline.plan`: inputs -> units with exact event counts;
* :mod:`~idexdask.pipeline.units`: :func:`process_unit`, the pluggable unit
  function (decode, then ``idexdask.analysis.analyze`` once it exists);
* :mod:`~idexdask.pipeline.store`: the full-size store and per-unit region writes;
* :mod:`~idexdask.pipeline.manifest`: the journal of finished units;
* :mod:`~idexdask.pipeline.cluster`: LocalCluster / GPU / remote scheduler;
* :mod:`~idexdask.pipeline.runner`: :func:`run_campaign` and :func:`store_status`;
* :mod:`~idexdask.pipeline.export`: HDF5 and CDF files per input from a store.

See ``docs/pipeline.md``.
"""

from __future__ import annotations

from idexdask.config import register_check, register_table

# Range checks of the pipeline's configuration sections (a schema, declared once).
register_check("cluster.workers", lambda v: int(v) >= 1, "at least 1")
register_check("cluster.threads_per_worker", lambda v: int(v) >= 1, "at least 1")
register_check(
    "cluster.memory_limit",
    lambda v: isinstance(v, str) and (v in ("auto", "0") or v[:1].isdigit()),
    'a size such as "4GiB", "auto" or "0" (no limit)',
)
register_table(
    "cluster.dask_config",
    lambda v: isinstance(v, str | int | float | bool),
    "a string, number or true/false (null: Dask's default)",
    typed=False,
)
register_check("pipeline.batch_events", lambda v: int(v) >= 1, "at least 1")
register_check("pipeline.max_peaks_per_event", lambda v: int(v) >= 1, "at least 1")
register_check("pipeline.retries", lambda v: 0 <= int(v) <= 20, "0 to 20")
register_check("pipeline.chunk_events", lambda v: int(v) >= 1, "at least 1")
register_check(
    "pipeline.compressor",
    lambda v: v in ("zstd", "zstd-bitshuffle", "gzip", "blosc-lz4", "none"),
    "one of zstd, zstd-bitshuffle, gzip, blosc-lz4, none",
)
register_check("pipeline.compression_level", lambda v: 0 <= int(v) <= 22, "0 to 22")
register_check(
    "export.formats",
    lambda v: all(f in ("hdf5", "cdf") for f in v),
    "a list of hdf5, cdf",
)
register_check("export.cdf_compression", lambda v: 0 <= int(v) <= 9, "0 to 9")

__all__ = ["process_unit", "run_campaign", "store_status"]


def __getattr__(name: str):
    if name == "process_unit":
        from idexdask.pipeline.units import process_unit

        return process_unit
    if name in ("run_campaign", "store_status"):
        from idexdask.pipeline import runner

        return getattr(runner, name)
    raise AttributeError(name)
