"""Embedded workers forked from a preloaded forkserver (pipeline/forkserver.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from multiprocessing import forkserver as mp_forkserver

import pytest

from idexdask.errors import ConfigError
from idexdask.pipeline.cluster import MALLOC_ENVIRON, THREAD_CAPS, ClusterOptions, open_client
from idexdask.pipeline.forkserver import WORKER_MODULES


def _worker_state() -> dict:
    import sys as worker_sys

    return {"preloaded": [m for m in WORKER_MODULES if m in worker_sys.modules],
            "environ": {k: os.environ.get(k) for k in (*THREAD_CAPS, *MALLOC_ENVIRON)},
            "parent": os.getppid()}


def _forkserver_pid() -> int | None:
    return mp_forkserver._forkserver._forkserver_pid  # noqa: SLF001 - the stdlib's own state


def test_workers_are_forked_from_a_forkserver_that_imported_their_modules():
    """Every worker holds the worker modules from its start, with the thread caps and
    malloc settings in its environment from its start (the forkserver's); the
    forkserver is this cluster's: stopped when it closes, this process's
    environment left as it was."""
    # distributed's nannies set OMP, MKL and OpenBLAS caps in this process
    # (distributed.nanny.pre-spawn-environ); the others are the forkserver's alone
    ours = ("NUMBA_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
    before = {k: os.environ.get(k) for k in ours}
    options = ClusterOptions(workers=2, threads_per_worker=1, dashboard="")
    assert options.worker_start == "forkserver"  # the default
    with open_client(options) as client:
        server = _forkserver_pid()
        states = list(client.run(_worker_state).values())
    assert server is not None
    assert len(states) == 2
    for state in states:
        assert state["preloaded"] == list(WORKER_MODULES)
        assert state["environ"] == {**THREAD_CAPS, **MALLOC_ENVIRON}
        assert state["parent"] == server  # forked by the forkserver, not by this process
    assert _forkserver_pid() is None  # stopped with the cluster
    assert {k: os.environ.get(k) for k in ours} == before


@pytest.mark.parametrize("workers, start", [(2, "spawn"), (1, "forkserver")])
def test_spawned_workers_import_their_modules_themselves(workers, start):
    """``spawn``, and one worker (no start to share), start fresh interpreters."""
    options = ClusterOptions(workers=workers, threads_per_worker=1, dashboard="",
                             worker_start=start)
    with open_client(options) as client:
        states = list(client.run(_worker_state).values())
    assert _forkserver_pid() is None
    for state in states:
        assert "idexdask.workflow.analyze" not in state["preloaded"]  # imported by a task
        assert state["parent"] == os.getpid()
        assert state["environ"] == {**THREAD_CAPS, **MALLOC_ENVIRON}


def test_the_preload_starts_no_thread():
    """A fork copies the forking thread only: a thread started by an import (a
    thread pool, an event loop) would be missing, its locks perhaps held, in
    every worker."""
    code = ("import threading; from idexdask.pipeline.forkserver import WORKER_MODULES\n"
            "for m in WORKER_MODULES: __import__(m)\n"
            "print(threading.active_count())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **THREAD_CAPS,
                                            "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1"]


def test_an_unknown_worker_start_is_a_config_error():
    with pytest.raises(ConfigError, match="worker_start"):
        replace(ClusterOptions(), worker_start="fork")


def test_a_second_cluster_shares_the_running_forkserver():
    """A cluster started while another one of this process runs uses its forkserver
    and leaves it running: that cluster's workers report their exits through it."""
    options = ClusterOptions(workers=2, threads_per_worker=1, dashboard="")
    with open_client(options) as first:
        server = _forkserver_pid()
        with open_client(options) as second:
            assert {s["parent"] for s in second.run(_worker_state).values()} == {server}
        assert _forkserver_pid() == server  # still running for the first cluster
        assert {s["parent"] for s in first.run(_worker_state).values()} == {server}
    assert _forkserver_pid() is None


def test_a_forked_worker_that_dies_is_restarted():
    """Its nanny sees the death through the forkserver and starts another worker
    (spawned: the forkserver's settings apply while the cluster starts)."""
    import signal
    import time

    options = ClusterOptions(workers=2, threads_per_worker=1, dashboard="")
    with open_client(options) as client:
        pids = client.run(os.getpid)
        victim, pid = next(iter(pids.items()))
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            workers = set(client.scheduler_info(n_workers=-1)["workers"])
            if len(workers) == 2 and victim not in workers:
                break
            time.sleep(0.5)
        now = client.run(os.getpid)
        states = list(client.run(_worker_state).values())
    assert len(now) == 2 and pid not in now.values()
    assert all(state["environ"] == {**THREAD_CAPS, **MALLOC_ENVIRON} for state in states)
