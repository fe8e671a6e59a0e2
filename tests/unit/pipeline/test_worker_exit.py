"""Worker processes end without the interpreter's finalization once closed (worker_exit)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import psutil

from idexdask.pipeline.cluster import ClusterOptions, open_client

# a process standing in for a worker process: the plugin set up early, an object
# whose finaliser runs only in the interpreter's finalization, output buffered
# (stdout is a pipe) and a log record, then the worker closed or not
_WORKER = textwrap.dedent("""
    import logging, sys
    from idexdask.pipeline.worker_exit import QuickExit

    class Finalised:
        def __del__(self):
            sys.stdout.write("finalised\\n")

    plugin = QuickExit()
    plugin.setup(worker=None)
    kept = Finalised()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    logging.getLogger("worker").info("task done")
    sys.stdout.write("results sent\\n")
    if sys.argv[1] == "closed":
        plugin.teardown(worker=None)
    sys.exit(int(sys.argv[2]))
""")


def _run_worker(state: str, status: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _WORKER, state, str(status)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def test_a_closed_worker_process_ends_without_finalization_and_keeps_its_output():
    done = _run_worker("closed", 0)
    assert done.returncode == 0
    assert "results sent" in done.stdout  # buffered output flushed
    assert "task done" in done.stderr  # the log record
    assert "finalised" not in done.stdout  # the interpreter's finalization skipped


def test_a_process_whose_worker_did_not_close_ends_as_usual():
    done = _run_worker("open", 3)
    assert done.returncode == 3  # its own status, not the plugin's
    assert "results sent" in done.stdout
    assert "finalised" in done.stdout  # finalization ran


def test_embedded_worker_processes_are_gone_when_the_client_closes():
    options = ClusterOptions(workers=2, threads_per_worker=1, dashboard="")
    with open_client(options) as client:
        pids = list(client.run(os.getpid).values())
        assert len(pids) == 2 and os.getpid() not in pids
        assert all(psutil.pid_exists(pid) for pid in pids)
    alive = [pid for pid in pids
             if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not alive
