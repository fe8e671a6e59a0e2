"""Planner: exact event counts, cuts only between whole events, store regions."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from idexdask import read_l0
from idexdask.config import load_config
from idexdask.errors import ConfigError, IdexDaskError
from idexdask.pipeline.plan import plan_inputs
from idexdask.pipeline.runner import config_hash
from idexdask.simulate import write_campaign
from idexdask.sources import digest_bytes, plan_l0_file, sources
from tests.conftest import REAL_L0_FILES


@pytest.mark.parametrize("path", REAL_L0_FILES, ids=lambda p: p.name)
def test_real_file_counts(path):
    units = plan_l0_file(path, 3)
    assert sum(u.n_events for u in units) == read_l0(path).sizes["epoch"]
    for unit in units:
        assert read_l0(unit.read_input()).sizes["epoch"] == unit.n_events


@pytest.mark.parametrize("compress", [False, True])
def test_batches_reassemble_the_whole_file(tmp_path, compress):
    path = tmp_path / "c.pkts"
    write_campaign(path, 57, compress=compress, seed=3)
    units = plan_l0_file(path, 10)
    assert [u.n_events for u in units] == [10, 10, 10, 10, 10, 7]
    assert units[0].byte_range[0] == 0 and units[-1].byte_range[1] == path.stat().st_size
    parts = [read_l0(u.read_input()) for u in units]
    whole = read_l0(path)
    joined = xr.concat(parts, "epoch", data_vars="all", coords="minimal", compat="override",
                       combine_attrs="drop")
    for name in whole.variables:
        assert np.array_equal(joined[name].values, whole[name].values), name


def test_units_are_cut_at_chunk_boundaries(tmp_path):
    """With align, units end at store rows that are multiples of the chunk size:
    only the chunks at file boundaries are shared between units."""
    files = []
    for i, n in enumerate((57, 41, 23)):
        files.append(tmp_path / f"f{i}.pkts")
        write_campaign(files[-1], n, compress=bool(i % 2), seed=i)
    plan = plan_inputs(files, 10, align=8)
    assert plan.n_events == 57 + 41 + 23
    starts = {0, 57, 57 + 41}
    shared = 0
    for unit in plan.units:
        start, stop = unit.region
        if start not in starts:
            assert start % 8 == 0, unit.region
        assert unit.n_events >= 1
        shared += start % 8 != 0
    assert shared == 2  # the first unit of the second and of the third file
    assert max(u.n_events for u in plan.units) <= 10 + 8
    # the units still reassemble every file exactly
    for i, path in enumerate(files):
        units = [u for u in plan.units if u.input_index == i]
        assert sum(u.n_events for u in units) == read_l0(path).sizes["epoch"]
        assert units[0].byte_range[0] == 0 and units[-1].byte_range[1] == path.stat().st_size
        for unit in units:
            assert read_l0(unit.read_input()).sizes["epoch"] == unit.n_events
    # without align, or with chunks larger than the batch, the plain greedy cut
    assert [u.n_events for u in plan_inputs(files[:1], 10).units] == [10, 10, 10, 10, 10, 7]
    assert [u.n_events for u in plan_inputs(files[:1], 10, align=16).units] == [10] * 5 + [7]


def test_garbage_is_a_failure_and_housekeeping_is_empty(tmp_path, l0_dir):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes(range(256)) * 64)
    plan = plan_inputs([bad, l0_dir], 100)
    assert [f.path for f in plan.failures] == [str(bad.resolve())]
    assert "not IDEX L0 telemetry" in plan.failures[0].reason
    assert len(plan.empty) == 2  # the two housekeeping-only real files
    regions = [u.region for u in plan.units]
    assert regions[0][0] == 0
    assert all(a[1] == b[0] for a, b in zip(regions, regions[1:], strict=False))


def test_changed_bytes_are_detected(tmp_path):
    path = tmp_path / "c.pkts"
    write_campaign(path, 5, seed=1)
    (unit,) = plan_l0_file(path, 100)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IdexDaskError, match="changed since"):
        unit.read_input()


def test_digest_of_pieces_is_the_digest_of_the_whole():
    data = np.random.default_rng(3).integers(0, 256, 100_003, dtype=np.uint8)
    whole = digest_bytes(data.tobytes())
    assert digest_bytes(data[:17], memoryview(data[17:5000]), data[5000:].tobytes()) == whole
    assert len(whole) == 32 and int(whole, 16) >= 0  # 128 bits, hex
    flipped = data.copy()
    flipped[-1] ^= 1
    assert digest_bytes(flipped) != whole


def test_digest_of_files_is_the_digest_of_their_bytes(tmp_path):
    """The mapped files hash as their bytes read and joined (an empty file adds none)."""
    from idexdask.sources.unit import digest_files

    rng = np.random.default_rng(4)
    paths = []
    for index, size in enumerate((100_003, 0, 4096, 1)):
        paths.append(tmp_path / f"f{index}.bin")
        paths[-1].write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
    prefix = b"settings"
    whole = digest_bytes(prefix + b"".join(p.read_bytes() for p in paths))
    assert digest_files(prefix, paths) == whole
    assert digest_files(prefix, paths[::-1]) != whole  # the order counts


def test_mixed_inputs_rejected(tmp_path, l0_dir, trc_dir):
    with pytest.raises(IdexDaskError, match="mix"):
        sources.detect([l0_dir, trc_dir])


def test_trc_units_one_per_impact(trc_dir):
    plan = plan_inputs([trc_dir], 10)
    assert [u.impact for u in plan.units] == [1, 3, 6]
    assert all(len(u.files) == 4 for u in plan.units)


def test_config_sections_and_hash():
    import idexdask.pipeline  # noqa: F401  (registers the checks)

    base = load_config()
    assert config_hash(base) == config_hash(load_config({"cluster": {"workers": 7}}))
    assert config_hash(base) != config_hash(load_config({"decode": {"verify_crc": False}}))
    assert config_hash(base) != config_hash(load_config({"pipeline": {"analyze": False}}))
    # where the fits run (CPU/GPU, engine) does not change the products: a run
    # resumed on other hardware keeps the units already done
    assert config_hash(base) == config_hash(
        load_config({"analysis": {"fitting": {"device": "gpu", "engine": "xp"}}})
    )
    fewer_iterations = load_config({"analysis": {"peaks": {"max_iterations": 7}}})
    assert config_hash(base) != config_hash(fewer_iterations)
    with pytest.raises(ConfigError, match="pipeline.compressor"):
        load_config({"pipeline": {"compressor": "lzma"}})
    with pytest.raises(ConfigError, match="cluster.workers"):
        load_config({"cluster": {"workers": 0}})
    with pytest.raises(ConfigError, match="unknown configuration key"):
        load_config({"pipeline": {"batch": 3}})


def test_lab_captures_get_small_packs_and_chunks(trc_dir, tmp_path):
    """Lab impacts (~80 flight events of samples each) use pipeline.lab_batch_events."""
    from idexdask.pipeline.plan import batch_sizes, pack_units

    plan = plan_inputs([trc_dir], 512)  # 3 impacts: one pack and chunk of 3
    assert batch_sizes(plan, 512, 512, 8) == (3, 3)
    assert batch_sizes(plan, 2, 512, 8) == (2, 2)
    packs = pack_units(plan.units, *batch_sizes(plan, 512, 512, 2))
    assert [len(p) for p in packs] == [2, 1]
    write_campaign(tmp_path / "a.pkts", 3, compress=False, seed=1)
    flight = plan_inputs([tmp_path / "a.pkts"], 512)
    assert batch_sizes(flight, 512, 256, 8) == (512, 256)


def test_campaign_map_spans_join_contiguous_units_only():
    """The campaign step's map tasks: contiguous units joined up to a size, never split."""
    from idexdask.pipeline.recalibrate import contiguous_spans
    from idexdask.sources.unit import Unit

    def unit(a, b):
        return Unit(uid=f"u{a}", kind="lecroy_trc", path="x", input_index=0,
                    n_events=b - a, input_hash="h", region=(a, b))

    units = [unit(0, 1), unit(1, 2), unit(2, 3), unit(5, 6), unit(6, 20), unit(20, 21)]
    spans = contiguous_spans(units, max_events=2)
    regions = [(s[0].region[0], s[-1].region[1]) for s in spans]
    # a gap (3 -> 5) ends a span; a unit larger than the cap stands alone
    assert regions == [(0, 2), (2, 3), (5, 6), (6, 20), (20, 21)]
    assert [u for s in spans for u in s] == units
    assert [len(s) for s in contiguous_spans(units, max_events=100)] == [3, 3]


@pytest.mark.parametrize(("n_events", "most", "rows"), [
    (384, 16, 16), (385, 16, 16), (400, 16, 16), (17, 16, 9), (33, 16, 11), (16, 16, 16),
    (3, 16, 3), (1, 16, 1), (100, 7, 7), (0, 16, 1),
])
def test_balanced_rows_cut_into_fewest_fullest_chunks(n_events, most, rows):
    """Lab chunks: the fewest chunks of at most ``most`` rows, under one fill row each."""
    from idexdask.pipeline.plan import balanced_rows

    assert balanced_rows(n_events, most) == rows
    chunks = -(-max(n_events, 1) // rows)
    assert rows <= most
    assert chunks == -(-max(n_events, 1) // most)  # no more chunks than needed
    assert chunks * rows - max(n_events, 1) < chunks  # at most one fill row per chunk
