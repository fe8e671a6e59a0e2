"""Region writers kept per worker and run (idexdask.pipeline.writers)."""

from __future__ import annotations

import distributed

from idexdask.pipeline.region_write import RegionWriter
from idexdask.pipeline.writers import PLUGIN_NAME, RegionWriters, region_writer


def test_outside_a_worker_every_call_gets_its_own_writer(tmp_path):
    a = region_writer(tmp_path / "s.zarr", 8, 100, "run1")
    b = region_writer(tmp_path / "s.zarr", 8, 100, "run1")
    assert isinstance(a, RegionWriter) and a is not b


def test_plugin_keeps_one_writer_per_store_and_run(tmp_path):
    plugin = RegionWriters(keep=2)
    first = plugin.writer(tmp_path / "s.zarr", 8, 100, "run1")
    assert plugin.writer(tmp_path / "s.zarr", 8, 100, "run1") is first
    assert plugin.writer(tmp_path / "s.zarr", 8, 100, "run2") is not first  # a new layout
    other = plugin.writer(tmp_path / "t.zarr", 8, 100, "run2")
    assert (other.rows, other.n_events) == (8, 100)
    # the least recently used is dropped beyond `keep`
    assert plugin.writer(tmp_path / "s.zarr", 8, 100, "run1") is not first


def _same_writer_twice(store: str) -> tuple[bool, bool]:
    a = region_writer(store, 8, 100, "run")
    b = region_writer(store, 8, 100, "run")
    c = region_writer(store, 8, 100, "another run")
    return a is b, a is c


def test_tasks_on_a_worker_share_the_writer(tmp_path):
    with distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=1,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        store = str(tmp_path / "s.zarr")
        assert client.submit(_same_writer_twice, store, pure=False).result() == (False, False)
        client.register_plugin(RegionWriters(), name=PLUGIN_NAME)
        assert client.submit(_same_writer_twice, store, pure=False).result() == (True, False)
        client.unregister_worker_plugin(PLUGIN_NAME)
        assert client.submit(_same_writer_twice, store, pure=False).result() == (False, False)
