"""The store lock (idexdask.pipeline.lock): one writer per store, stale locks taken over.

Holders are real processes (a child Python holding the lock), killed with SIGKILL
where the test needs a holder that died without releasing it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from idexdask.errors import StoreError, StoreLockedError
from idexdask.pipeline.lock import lock_path, read_lock, store_lock

HOLDER = textwrap.dedent(
    """
    import sys, time
    from idexdask.pipeline.lock import store_lock
    with store_lock(sys.argv[1], purpose="test holder"):
        print("locked", flush=True)
        time.sleep(120)
    """
)


def _hold(store: Path) -> subprocess.Popen:
    """A child process holding the lock of ``store`` (returns once it holds it)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(store)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_file_names_the_holder_and_is_removed_on_release(tmp_path):
    store = tmp_path / "s.zarr"
    with store_lock(store, purpose="idexdask submit") as me:
        content = json.loads(lock_path(store).read_text())
        assert content["host"] == socket.gethostname() and content["pid"] == os.getpid()
        assert content["purpose"] == "idexdask submit" and content["started"] == me.started
        assert read_lock(store) == me
        (store / "data").write_text("written under the lock")
    assert not lock_path(store).exists()
    assert (store / "data").exists()


def test_lock_not_reentrant_and_released_after_an_error(tmp_path):
    store = tmp_path / "s.zarr"
    with pytest.raises(RuntimeError), store_lock(store, purpose="first"):
        with pytest.raises(StoreLockedError, match="already locked by this process"):
            with store_lock(store, purpose="second"):
                pass
        raise RuntimeError("the run failed")
    with store_lock(store, purpose="again"):  # released by the failed run
        pass
    # the lock created the store only for itself: nothing of it is left behind
    assert not store.exists()


def test_live_holder_refused_with_its_host_pid_time_and_purpose(tmp_path):
    store = tmp_path / "s.zarr"
    proc = _hold(store)
    try:
        holder = read_lock(store)
        with pytest.raises(StoreLockedError) as info:
            with store_lock(store, purpose="second run"):
                raise AssertionError("a second writer got the lock")
        message = str(info.value)
        for part in (socket.gethostname(), f"pid {proc.pid}", holder.started, "test holder"):
            assert part in message
        assert isinstance(info.value, StoreError)
        assert read_lock(store) == holder  # the refused run left the lock alone
    finally:
        proc.kill()
        proc.wait()


def test_lock_of_a_sigkilled_holder_is_taken_over_with_a_log_line(tmp_path, caplog):
    store = tmp_path / "s.zarr"
    proc = _hold(store)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert read_lock(store).pid == proc.pid  # the dead holder could not release it
    with caplog.at_level(logging.WARNING, logger="idexdask.pipeline.lock"):
        with store_lock(store, purpose="next run") as me:
            assert read_lock(store) == me
    lines = [r.getMessage() for r in caplog.records]
    assert any("took over the stale lock" in line and f"pid {proc.pid}" in line
               for line in lines), lines


def test_recycled_pid_is_not_taken_for_the_holder(tmp_path, caplog):
    """A lock naming a live pid whose process started at another time is stale."""
    store = tmp_path / "s.zarr"
    lock_path(store).parent.mkdir(parents=True)
    lock_path(store).write_text(json.dumps({
        "host": socket.gethostname(), "pid": os.getppid(), "started": "2020-01-01T00:00:00",
        "purpose": "long gone", "proc_start": 1,  # the parent started later than tick 1
    }))
    with caplog.at_level(logging.WARNING, logger="idexdask.pipeline.lock"):
        with store_lock(store, purpose="next run"):
            pass
    assert "long gone" in caplog.text


def test_lock_from_another_host_is_refused_with_the_file_to_delete(tmp_path):
    store = tmp_path / "s.zarr"
    lock_path(store).parent.mkdir(parents=True)
    lock_path(store).write_text(json.dumps({
        "host": "some-other-host.example", "pid": 1, "started": "2026-01-01T00:00:00+00:00",
        "purpose": "idexdask submit",
    }))
    with pytest.raises(StoreLockedError, match="some-other-host.example") as info:
        with store_lock(store, purpose="here"):
            pass
    assert str(lock_path(store)) in str(info.value)


def test_unwritten_lock_file_waits_then_is_taken_over_when_old(tmp_path, caplog):
    """A holder killed between the O_EXCL create and its write leaves an empty file."""
    store = tmp_path / "s.zarr"
    lock_path(store).parent.mkdir(parents=True)
    lock_path(store).write_text("")
    old = time.time() - 60
    os.utime(lock_path(store), (old, old))
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="idexdask.pipeline.lock"):
        with store_lock(store, purpose="next run"):
            pass
    assert 0.9 < time.monotonic() - start < 10  # waited for a writer first
    assert "unreadable lock" in caplog.text


RACER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from idexdask.errors import StoreLockedError
    from idexdask.pipeline.lock import store_lock
    store, start, attempts = sys.argv[1], float(sys.argv[2]), Path(sys.argv[3])
    n_racers = int(sys.argv[4])
    while time.time() < start:
        pass

    def attempted():
        (attempts / str(os.getpid())).touch()

    try:
        with store_lock(store, purpose="racer"):
            attempted()
            print("got", flush=True)
            # hold the lock until every racer has tried: on a loaded machine the
            # imports of one racer can end after another's whole turn otherwise
            deadline = time.monotonic() + 60
            while len(list(attempts.iterdir())) < n_racers and time.monotonic() < deadline:
                time.sleep(0.01)
    except StoreLockedError:
        attempted()
        print("refused", flush=True)
    """
)


def test_racing_processes_exactly_one_gets_the_lock(tmp_path):
    store = tmp_path / "s.zarr"
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    start = time.time() + 2  # most racers imported and spinning by then
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(store), str(start),
                               str(attempts), "4"],
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outcomes = sorted(p.communicate(timeout=90)[0].strip() for p in procs)
    assert outcomes == ["got", "refused", "refused", "refused"]
    assert not lock_path(store).exists()
