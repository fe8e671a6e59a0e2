"""One :class:`~idexdask.pipeline.region_write.RegionWriter` per worker and run.

A region writer reads the ``zarr.json`` of every array it writes (~260 of them,
~15 ms, and as many small-file reads, which a parallel file system serves
slowly) and keeps them.  So that this is paid once per worker rather than on
every write, the :class:`RegionWriters` worker plugin, registered by the runner
for the length of a run, keeps the writers of the run's store on each worker.

The plugin's state lives on the worker it is installed on, nowhere else; a
task that finds no plugin (a worker that joined without it, or no Dask worker
at all) makes a writer for itself, for that write alone.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Any

from distributed import WorkerPlugin, get_worker

from idexdask.pipeline.region_write import RegionWriter

__all__ = ["PLUGIN_NAME", "RegionWriters", "region_writer"]

logger = logging.getLogger(__name__)

#: name under which the runner registers :class:`RegionWriters`
PLUGIN_NAME = "idexdask-region-writers"


class RegionWriters(WorkerPlugin):
    """Worker plugin keeping the region writers of the runs a worker writes for.

    Parameters
    ----------
    keep : int
        Writers kept (least recently used dropped first); each holds only
        metadata, a few hundred small records.
    """

    name = PLUGIN_NAME

    def __init__(self, keep: int = 4) -> None:
        self.keep = int(keep)
        self._writers: OrderedDict[tuple[str, int, int, str], RegionWriter] = OrderedDict()

    def setup(self, worker: Any) -> None:
        """Start empty on every worker (the instance is copied to each)."""
        self._writers = OrderedDict()

    def writer(self, store: str | os.PathLike, rows: int, n_events: int, run: str) -> RegionWriter:
        """The writer of ``store`` for run ``run`` (made on first use).

        The run identifies the store's layout: a store is (re)initialised only
        before a run's first write, so a writer is never kept across layouts.
        """
        key = (os.fspath(store), int(rows), int(n_events), str(run))
        writer = self._writers.get(key)
        if writer is None:
            writer = RegionWriter(store, rows=rows, n_events=n_events)
            self._writers[key] = writer
            while len(self._writers) > self.keep:
                self._writers.popitem(last=False)
        else:
            self._writers.move_to_end(key)
        return writer


def region_writer(store: str | os.PathLike, rows: int, n_events: int, run: str) -> RegionWriter:
    """The worker's writer for this store and run, or a new one outside a worker.

    Parameters
    ----------
    store : path
        Store created by :func:`~idexdask.pipeline.store.initialise_store`.
    rows, n_events : int
        Events per chunk and rows of the store.
    run : str
        Identifier of the run (the store's layout does not change within it).
    """
    try:
        worker = get_worker()
    except ValueError:  # not in a Dask worker
        worker = None
    plugin = None if worker is None else worker.plugins.get(PLUGIN_NAME)
    if isinstance(plugin, RegionWriters):
        return plugin.writer(store, rows, n_events, run)
    return RegionWriter(store, rows=rows, n_events=n_events)
