"""A run's cluster starts in a thread while the run plans (pipeline/cluster.StartingClient)."""

from __future__ import annotations

import os

import psutil
import pytest

from idexdask.config import load_config
from idexdask.errors import ConfigError, IdexDaskError
from idexdask.pipeline.cluster import ClusterOptions, StartingClient
from idexdask.pipeline.runner import run_campaign

ONE_WORKER = ClusterOptions(workers=1, threads_per_worker=1, dashboard="")


def _workers() -> list[psutil.Process]:
    """This process's live children other than multiprocessing's resource tracker."""
    return [p for p in psutil.Process().children(recursive=True)
            if p.status() != psutil.STATUS_ZOMBIE
            and "resource_tracker" not in " ".join(p.cmdline())]


def test_the_started_client_runs_tasks_and_leaves_no_process():
    starting = StartingClient(ONE_WORKER)
    with starting.client() as client:
        assert client.submit(os.getpid, pure=False).result() != os.getpid()
        assert _workers()
    assert not _workers()


def test_closing_a_start_the_caller_gave_up_leaves_no_process():
    StartingClient(ONE_WORKER).close()
    assert not _workers()


def test_a_failed_start_raises_where_the_client_is_asked_for():
    starting = StartingClient(ClusterOptions(workers=0, dashboard=""))
    with pytest.raises(ConfigError, match="cluster.workers"), starting.client():
        pass
    starting.close()  # nothing left to close, no error


def test_a_run_whose_inputs_fail_to_plan_closes_its_cluster(tmp_path, monkeypatch):
    from idexdask.pipeline import runner

    started = []
    monkeypatch.setattr(runner, "kernels_ready", lambda: True)  # the start beside the plan
    monkeypatch.setattr(runner, "StartingClient",
                        lambda options: started.append(StartingClient(options)) or started[-1])
    with pytest.raises(IdexDaskError):
        run_campaign([tmp_path / "no such input"], tmp_path / "s.zarr", load_config({}),
                     cluster=ONE_WORKER)
    assert len(started) == 1  # the cluster was starting while the inputs were planned
    assert not _workers()
