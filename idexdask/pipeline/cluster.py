"""Where the tasks run: an embedded ``LocalCluster``, a GPU cluster, or a running one.

* default: :class:`distributed.LocalCluster` with worker *processes* (the decode
  holds the GIL in places; processes scale on cores), ``cluster.workers`` of
  them with ``cluster.threads_per_worker`` threads each;
* ``address`` (``--scheduler``): connect to a running scheduler (SLURM,
  Kubernetes, ``dask scheduler`` by hand; see ``docs/deploy.md``);
* ``gpu`` (``--gpu``): :class:`dask_cuda.LocalCUDACluster` (one worker per GPU),
  or the GPU workers of a running cluster; tasks ask for ``resources={"GPU": 1}``.
  Without dask-cuda, without a visible GPU, or (remote) without workers offering
  a ``GPU`` resource, :func:`check_gpu` fails before any work starts.

Every worker process runs with its BLAS/OpenMP/numba thread pools capped to one
thread (:data:`THREAD_CAPS`), so that ``threads_per_worker`` is the only source
of parallelism inside a worker and workers do not oversubscribe the cores.

Embedded workers also start *without* distributed's default
``MALLOC_TRIM_THRESHOLD_=65536`` (``distributed.nanny.pre-spawn-environ``).
Setting that glibc malloc parameter alone switches off glibc's adaptive mmap
threshold, so every temporary array over 128 KiB is mmap-ed, faulted in page by
page and unmapped again: measured in a worker, a NumPy loop on (256, 512) arrays
took 2.2x as long with 1,000,000 page faults instead of 1,600, and a 256-event
analysis unit 2.4x.  They start instead with the mmap threshold at its maximum,
32 MiB (``MALLOC_MMAP_THRESHOLD_``), and free memory trimmed from the top of the
heap beyond 32 MiB (``MALLOC_TRIM_THRESHOLD_``): :data:`MALLOC_ENVIRON`.  The
adaptive threshold reaches that maximum only after an array of that size has
been freed; a lab pack's arrays (8 impacts x 500,002 samples, 16 MB a float32
channel) are then reused from the heap from the first pack on, not faulted in
afresh: ``process_units`` of a real 8-impact pack 37-38 -> 34-36 ms of CPU per
impact; flight units unchanged (2.1-2.3 ms per event).  A worker holds one
pack at a time; trimming beyond 32 MiB (not more) keeps its peak memory flat with
the campaign's size: 2 workers' larger peak RSS at 10k / 100k simulated flight
events 578 / 619 MiB (+7 %) with 32 MiB against 575 / 677 MiB (+18 %) with 256
MiB, and a 384-impact lab campaign as fast with either (docs/performance.md).  Workers of a
running cluster are started by their deployment (``deploy/``).

Two or more embedded worker processes are forked from a forkserver that has
imported the workers' modules once, started with the thread caps and malloc settings in
its environment and stopped with the cluster (``cluster.worker_start:
forkserver``, :mod:`idexdask.pipeline.forkserver`): the workers' imports are
paid once per cluster, not once per worker.  A worker a nanny restarts later is spawned.

The embedded cluster also runs with ``cluster.dask_config``, Dask settings of
its scheduler, nannies and workers; the shipped ones make Dask's event-loop and
memory monitors poll less often (``configs/default.yaml`` says why).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from idexdask.errors import ConfigError, IdexDaskError

__all__ = [
    "MALLOC_ENVIRON", "NANNY_ENVIRON_OVERRIDES", "PROFILER_SETTING", "THREAD_CAPS",
    "WORKER_STARTS", "ClusterOptions", "StartingClient", "check_dask_settings", "check_gpu",
    "open_client",
]

logger = logging.getLogger(__name__)

#: glibc malloc settings of the embedded workers (bytes): arrays under 32 MiB from the
#: heap, whose free top is kept up to 32 MiB
MALLOC_ENVIRON = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20),
                  "MALLOC_TRIM_THRESHOLD_": str(32 << 20)}
#: distributed's pre-spawn environment with :data:`MALLOC_ENVIRON` in place of its
#: malloc setting, which slows array code
NANNY_ENVIRON_OVERRIDES = {f"distributed.nanny.pre-spawn-environ.{key}": value
                           for key, value in MALLOC_ENVIRON.items()}
#: dask setting of the workers' statistical profiler (the dashboard's Profile page)
PROFILER_SETTING = "distributed.worker.profile.enabled"

#: How the embedded cluster's worker processes may start (``cluster.worker_start``)
WORKER_STARTS = ("forkserver", "spawn")

THREAD_CAPS = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
}


@dataclass(frozen=True)
class ClusterOptions:
    """Cluster settings (``cluster`` section of the configuration + flags).

    Attributes
    ----------
    address : str or None
        Scheduler address (``tcp://host:8786``) or scheduler file (``*.json``) of
        a running cluster; None starts an embedded one.
    workers, threads_per_worker : int
        Embedded cluster size.
    memory_limit : str
        Per-worker memory limit (``auto``, ``4GiB``, ``0`` for none).
    dashboard : str
        Dashboard address of the embedded cluster (``:8787``, ``:0``; ``""`` none).
    gpu : bool
        Run on GPU workers.
    profile : bool
        Keep Dask's statistical profiler in the embedded cluster's workers: it
        samples every worker thread's stack every 10 ms for the dashboard's
        Profile page, ~2 % of a busy worker's CPU (``bench/campaign.py``).
        Workers of a running cluster keep their own setting
        (``deploy/dask/idexdask-workers.yaml`` turns it off).
    processes : bool
        Embedded workers are processes (the default); False runs the embedded
        cluster's one worker inside this process (``idexdask decode``: the
        same tasks as ``submit``, no process started).
    worker_start : str
        How the embedded cluster's worker processes start: ``forkserver`` (the
        default), forked from one process that imported their modules once
        (:mod:`idexdask.pipeline.forkserver`), where there are two workers or
        more; ``spawn``, each a fresh interpreter importing them itself.  One
        worker and GPU workers are spawned.
    dask_config : mapping
        Dask settings (dotted keys, e.g. ``distributed.admin.tick.interval``)
        for the embedded cluster's scheduler, nannies and workers; empty keeps
        Dask's defaults, a null value Dask's default for that key.  Checked
        when the options are made (:func:`check_dask_settings`).  A running
        cluster keeps its own.
    """

    address: str | None = None
    workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str = "auto"
    dashboard: str = ":8787"
    gpu: bool = False
    profile: bool = False
    dask_config: Mapping[str, Any] = field(default_factory=dict)
    processes: bool = True
    worker_start: str = "forkserver"

    def __post_init__(self) -> None:  # once per options, whoever makes them
        object.__setattr__(self, "dask_config", check_dask_settings(self.dask_config))
        if self.worker_start not in WORKER_STARTS:
            raise ConfigError(f"cluster.worker_start must be one of {', '.join(WORKER_STARTS)}, "
                              f"not {self.worker_start!r}")

    @classmethod
    def from_config(cls, config: dict, gpu: bool = False) -> ClusterOptions:
        section = config["cluster"]
        return cls(
            address=section["address"] or None,
            workers=int(section["workers"]),
            threads_per_worker=int(section["threads_per_worker"]),
            memory_limit=str(section["memory_limit"]),
            dashboard=str(section["dashboard"]),
            gpu=gpu,
            profile=bool(section["profile"]),
            dask_config=dict(section["dask_config"]),
            worker_start=str(section.get("worker_start", "forkserver")),
        )


def check_dask_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Check that every key of ``settings`` is a Dask setting (distributed's included).

    Returns
    -------
    dict
        ``settings`` without its null values (a null keeps Dask's default).

    Raises
    ------
    ConfigError
        Naming the first key Dask does not know.
    """
    if not settings:
        return {}
    import dask
    import distributed  # noqa: F401 - registers distributed's settings with dask.config

    for key in settings:
        try:
            dask.config.get(str(key))
        except KeyError:
            raise ConfigError(
                f"cluster.dask_config: {key!r} is not a Dask setting (dotted keys such as "
                "distributed.admin.tick.interval; see Dask's configuration reference)"
            ) from None
    return {str(key): value for key, value in settings.items() if value is not None}


def check_gpu(options: ClusterOptions) -> None:
    """Fail early when ``--gpu`` cannot be honoured on this machine.

    Raises
    ------
    IdexDaskError
        Embedded GPU cluster without dask-cuda / CuPy or without a visible GPU.
    """
    if not options.gpu or options.address:
        return  # remote: checked against the workers' resources once connected
    missing = [m for m in ("dask_cuda", "cupy") if importlib.util.find_spec(m) is None]
    if missing:
        raise IdexDaskError(
            f"--gpu needs {' and '.join(missing)} (pip install 'idexdask[gpu]') "
            "and an NVIDIA GPU; run without --gpu to use NumPy on the CPU"
        )
    import cupy

    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA raises its own error types
        raise IdexDaskError(f"--gpu: no usable CUDA device ({exc})") from exc
    if count < 1:
        raise IdexDaskError("--gpu: no CUDA device visible")


def _check_remote_gpu(client) -> None:
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    if not any(w.get("resources", {}).get("GPU", 0) >= 1 for w in workers):
        raise IdexDaskError(
            "--gpu: no worker of the cluster offers the resource GPU; start GPU workers "
            "with `dask cuda worker ADDRESS --resources GPU=1` (see docs/deploy.md)"
        )


def _memory_limit(value: str) -> str | int:
    return 0 if value.strip() in ("0", "none", "") else value


def _embedded_settings(options: ClusterOptions) -> dict[str, Any]:
    """Dask settings an embedded cluster is created under (its nannies pass them on)."""
    return {**options.dask_config, **NANNY_ENVIRON_OVERRIDES,
            PROFILER_SETTING: options.profile}


@contextlib.contextmanager
def open_client(options: ClusterOptions) -> Iterator:
    """A :class:`distributed.Client` on the cluster ``options`` describe.

    The embedded cluster is shut down on exit; a remote one is only disconnected.

    Raises
    ------
    IdexDaskError
        If the scheduler cannot be reached or GPU workers are missing.
    """
    import dask
    from distributed import Client, LocalCluster

    from idexdask.pipeline import forkserver
    from idexdask.pipeline.worker_exit import QuickExit

    cluster = None
    stack = contextlib.ExitStack()  # the workers' forkserver, stopped after the cluster
    try:
        if options.address:
            kwargs = (
                {"scheduler_file": options.address}
                if options.address.endswith(".json")
                else {"address": options.address}
            )
            try:
                client = Client(timeout="20s", **kwargs)
            except (OSError, TimeoutError) as exc:
                raise IdexDaskError(f"cannot reach the scheduler {options.address}: {exc}") from exc
            if options.gpu:
                _check_remote_gpu(client)
        elif options.gpu:
            from dask_cuda import LocalCUDACluster

            with dask.config.set(_embedded_settings(options)):
                cluster = LocalCUDACluster(
                    threads_per_worker=options.threads_per_worker,
                    memory_limit=_memory_limit(options.memory_limit),
                    dashboard_address=options.dashboard or None,
                    resources={"GPU": 1},
                    env=dict(THREAD_CAPS),
                )
            client = Client(cluster)
        else:
            if options.workers < 1 or options.threads_per_worker < 1:
                raise ConfigError("cluster.workers and cluster.threads_per_worker must be >= 1")
            # worker processes get the thread caps and end without the interpreter's
            # finalization once closed (pipeline/worker_exit.py); an in-process
            # worker has this process's caps (a Worker takes no environment)
            environment = ({"env": dict(THREAD_CAPS), "plugins": (QuickExit(),)}
                           if options.processes else {})
            settings = _embedded_settings(options)
            if options.processes and options.worker_start == "forkserver" \
                    and options.workers > 1:
                # the workers forked from one process that has imported their
                # modules, started with their environment (pipeline/forkserver.py);
                # one worker has no start to share: spawned (bench/lab.py, 1 worker:
                # 21.8-23.8 impacts/s forked against 24.1-25.8 spawned, alternately)
                method = stack.enter_context(forkserver.started({**THREAD_CAPS, **MALLOC_ENVIRON}))
                settings[forkserver.MULTIPROCESSING_SETTING] = method
            with dask.config.set(settings):
                cluster = LocalCluster(
                    n_workers=options.workers,
                    threads_per_worker=options.threads_per_worker,
                    processes=options.processes,
                    memory_limit=_memory_limit(options.memory_limit),
                    dashboard_address=options.dashboard or None,
                    silence_logs=logging.ERROR,
                    **environment,
                )
            client = Client(cluster)
    except BaseException:
        with stack:
            if cluster is not None:
                cluster.close()
        raise
    with stack:
        try:
            yield client
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


class StartingClient:
    """:func:`open_client` entered in a thread of its own, so that the cluster starts
    (its worker processes import what their tasks need) while the caller plans its run.

    Parameters
    ----------
    options : ClusterOptions
        The cluster to start or connect to.

    Examples
    --------
    >>> starting = StartingClient(options)  # doctest: +SKIP
    >>> try:
    ...     plan = ...  # the caller's work, beside the start
    ... except BaseException:
    ...     starting.close()  # waits for the start, then closes what it started
    ...     raise
    >>> with starting.client() as client:  # the start's error, if any, raised here
    ...     ...
    """

    def __init__(self, options: ClusterOptions) -> None:
        self._stack = contextlib.ExitStack()
        pool = ThreadPoolExecutor(1, thread_name_prefix="idexdask-cluster-start")
        self._client = pool.submit(self._stack.enter_context, open_client(options))
        pool.shutdown(wait=False)  # the start goes on; the thread ends with it

    @contextlib.contextmanager
    def client(self) -> Iterator:
        """The started client (once the start is done); closed on exit.

        Raises
        ------
        IdexDaskError
            As :func:`open_client`.
        """
        try:
            yield self._client.result()
        finally:
            self.close()

    def close(self) -> None:
        """Wait for the start to end and close what it started (nothing if it failed)."""
        try:
            self._client.result()
        except BaseException:  # noqa: BLE001 - a failed start closed its cluster itself
            logger.debug("the cluster's start failed", exc_info=True)
        finally:
            self._stack.close()
