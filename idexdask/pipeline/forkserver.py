"""A worker's start shared by the embedded cluster's workers: a preloaded forkserver.

A worker process started afresh (``spawn``, distributed's default) imports
``distributed``, xarray (which imports ``dask.array``), the pack task, the
region writer and the whole analysis before its first pack is done: ~1.5-2 s
of CPU per worker process, paid on the first pack's path, once per worker
(docs/performance.md, "Tenth round: a worker's start and the campaign step").
The embedded cluster instead forks its workers from one process that has
imported those modules once (:data:`WORKER_MODULES`): multiprocessing's
*forkserver*, started with the workers' environment and this list as its
preload.  Each worker is then a fork of it, holding every module already; it
still loads its numba kernels from the cache on first use (~0.4 s), since
which kernels a run needs depends on its inputs.

Two things make a forkserver safe and fair here:

* **Its environment is the workers'.**  The forkserver is a fresh interpreter
  that inherits this process's environment when it starts; what must be set
  before NumPy and glibc's malloc start (the thread caps,
  :data:`~idexdask.pipeline.cluster.THREAD_CAPS`, and the malloc settings,
  :data:`~idexdask.pipeline.cluster.MALLOC_ENVIRON`) is set for that start only
  (:func:`started`), so every worker forked from it has them from its start,
  as a spawned worker has them.  The preload starts no thread (checked by
  ``tests/unit/pipeline/test_forkserver.py``): a fork copies only the thread
  that forks.
* **One forkserver per embedded cluster.**  multiprocessing keeps one
  forkserver per process; it is started with the cluster and stopped when the
  cluster closes (:func:`started` is a context manager), so that every run in
  one process (a notebook, ``bench/lab.py``'s repeats) starts its workers
  alike, from the code and settings of that run.  A cluster started while
  another one of the process runs forks its workers from that one's
  forkserver, which stops when the cluster that started it closes: nested
  clusters (``with`` blocks) close in the right order; a cluster that
  outlives the one whose forkserver it shares loses its workers' exit
  statuses when that one closes.  multiprocessing has no
  public way to stop it: this uses its ``ForkServer`` object's own (its tests
  use it), where the interpreter has it.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping

__all__ = ["MULTIPROCESSING_SETTING", "WORKER_MODULES", "started"]

logger = logging.getLogger(__name__)

#: Dask setting of how a nanny starts its worker process
MULTIPROCESSING_SETTING = "distributed.worker.multiprocessing-method"

#: What every worker of a campaign imports before or in its first pack, in
#: import order: the worker itself, the writer plugin, the pack task and the
#: analysis behind it, xarray's ``dask.array`` check, the campaign step.
WORKER_MODULES = (
    "distributed",
    "distributed.nanny",
    "xarray",
    "dask.array",
    "idexdask.pipeline.writers",
    "idexdask.pipeline.tasks",
    "idexdask.pipeline.units",
    "idexdask.workflow.analyze",
    "idexdask.pipeline.recalibrate",
)

#: Serialises the environment change around a forkserver's start.
_ENVIRON_LOCK = threading.Lock()


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set, restored on exit."""
    with _ENVIRON_LOCK:
        saved = {key: os.environ.get(key) for key in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@contextlib.contextmanager
def started(environ: Mapping[str, str],
            modules: tuple[str, ...] = WORKER_MODULES) -> Iterator[str]:
    """A forkserver that has imported ``modules``, for the duration of the block.

    Its start returns at once: the forkserver imports ``modules`` while the
    caller goes on (starting the scheduler); the first worker forked from it
    waits for the imports to end.

    Parameters
    ----------
    environ : mapping
        Environment variables the forkserver (and so every worker forked from
        it) starts with, on top of this process's.
    modules : tuple of str
        Modules it imports once for every worker (a module that cannot be
        imported is skipped, as multiprocessing's preload does).

    Yields
    ------
    str
        The start method for :data:`MULTIPROCESSING_SETTING` (``forkserver``),
        or ``spawn`` where this platform has no forkserver.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        yield "spawn"
        return
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    if getattr(server, "_forkserver_pid", None) is not None:
        # another cluster of this process runs one: its workers' exit statuses
        # come through it, so it is left alone, and used
        yield "forkserver"
        return
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(modules))
    # the forkserver imports from this process's path (a checkout put first on
    # it, as bench/ does): multiprocessing passes it to the forked workers, not
    # to the forkserver's own imports
    path = os.pathsep.join(entry for entry in sys.path if entry and os.path.isdir(entry))
    with _environ({**environ, "PYTHONPATH": path}):
        forkserver.ensure_running()
    try:
        yield "forkserver"
    finally:
        _stop(forkserver)


def _stop(forkserver) -> None:
    """End this process's forkserver, if one runs, without its interpreter's finalization.

    multiprocessing stops a forkserver by closing the pipe it watches, upon which
    it ends like any interpreter: it frees every module it imported (~0.5 s of
    CPU for the worker modules, measured), and ``ForkServer._stop`` waits for
    that, at the cluster's close.  It holds nothing to flush or close (its
    workers have ended, their exit statuses reported; its socket's file is
    removed here), so it is killed first; its workers, if any still ran, run on.
    """
    server = getattr(forkserver, "_forkserver", None)
    stop = getattr(server, "_stop_unlocked", None)
    if stop is None:  # an interpreter without it: the forkserver ends with this process
        return
    with server._lock:  # noqa: SLF001 - the stdlib forkserver's own state
        pid = server._forkserver_pid  # noqa: SLF001
        if pid is None:
            return
        with contextlib.suppress(OSError):  # already gone
            os.kill(pid, signal.SIGKILL)
        try:
            stop()
        except OSError as exc:
            logger.debug("forkserver stop: %s", exc)
