"""Packs: consecutive units processed as one task (short files, lab impacts)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import xarray as xr

from idexdask.config import load_config
from idexdask.errors import IdexDaskError
from idexdask.pipeline.plan import Unit, pack_units, plan_inputs
from idexdask.pipeline.units import concat_events, process_unit, process_units
from idexdask.simulate import write_campaign

DECODE_ONLY = {"pipeline": {"analyze": False}}


def _units(counts, start=0, gap_after=()):
    units, row = [], start
    for i, n in enumerate(counts):
        units.append(Unit(uid=f"u{i}", kind="l0", path=f"f{i}", input_index=i, n_events=n,
                          input_hash="", region=(row, row + n)))
        row += n + (100 if i in gap_after else 0)
    return units


def _sizes(packs):
    return [sum(u.n_events for u in p) for p in packs]


def test_every_unit_once_in_order():
    units = _units([14, 3, 25, 9, 1, 40, 7, 7, 2] * 5)
    packs = pack_units(units, 32, 16)
    assert [u for p in packs for u in p] == units
    for pack in packs:  # rows contiguous within a pack
        assert all(a.region[1] == b.region[0] for a, b in zip(pack, pack[1:], strict=False))
    sizes = _sizes(packs)
    assert all(s >= 32 for s in sizes[:-1])  # only the last pack may be short
    assert all(s <= 2 * 32 for s in sizes)  # no unit here is larger than the batch


def test_packs_end_on_chunk_boundaries_when_units_allow():
    # files of 1000 events cut at chunk rows (256): 256, 256, 256, 232 | 280, ...
    plan_like = _units([256, 256, 256, 232, 280, 256, 256, 208])
    packs = pack_units(plan_like, 256, 256)
    assert _sizes(packs) == [256, 256, 256, 512, 256, 256, 208]
    assert all(p[-1].region[1] % 256 == 0 for p in packs[:-1])


def test_small_units_fill_a_pack_and_a_gap_splits_it():
    units = _units([1] * 10, gap_after={4})
    packs = pack_units(units, 4, 1)
    assert _sizes(packs) == [4, 1, 4, 1]  # never across the gap (units done before)
    assert pack_units(units[:3], 100, 8) == [tuple(units[:3])]
    big = _units([500, 3])
    assert _sizes(pack_units(big, 10, 8)) == [500, 3]  # a large unit is its own pack


@pytest.fixture(scope="module")
def three_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("packs")
    files = []
    for i, n in enumerate((7, 5, 9)):
        files.append(directory / f"f{i}.pkts")
        write_campaign(files[-1], n, compress=bool(i % 2), seed=20 + i)
    return files


def test_a_pack_equals_its_units_processed_alone(three_files):
    config = load_config({})
    plan = plan_inputs(three_files, 100)
    assert len(plan.units) == 3
    (pack,) = pack_units(plan.units, 100, 8)
    processed = process_units(pack, config)
    assert processed.failures == {} and processed.done == pack
    alone = concat_events([process_unit(u, config) for u in plan.units])
    assert list(processed.dataset.variables) == list(alone.variables)
    for name, variable in alone.variables.items():
        got = processed.dataset[name].values
        if variable.dtype.kind == "f":
            np.testing.assert_array_equal(got, variable.values, err_msg=name)
        else:
            assert np.array_equal(got, variable.values), name
    assert processed.dataset["input_index"].values.tolist() == [0] * 7 + [1] * 5 + [2] * 9
    assert set(processed.attrs) == {u.uid for u in pack}
    assert processed.attrs[pack[1].uid]["source"] == "f1.pkts"


def test_a_bad_unit_fails_alone(three_files, tmp_path):
    plan = plan_inputs(three_files, 100)
    changed = replace(plan.units[1], input_hash="0" * 32)  # the file "changed" since planning
    pack = (plan.units[0], changed, plan.units[2])
    processed = process_units(pack, load_config(DECODE_ONLY))
    assert processed.done == (plan.units[0], plan.units[2])
    assert list(processed.failures) == [changed.uid]
    assert "changed since" in processed.failures[changed.uid]
    assert processed.dataset.sizes["epoch"] == 7 + 9
    assert processed.dataset["input_index"].values.tolist() == [0] * 7 + [2] * 9
    with pytest.raises(IdexDaskError, match="changed since"):
        process_unit(changed, load_config(DECODE_ONLY))


def test_concat_requires_the_same_variables(three_files):
    config = load_config(DECODE_ONLY)
    plan = plan_inputs(three_files, 100)
    a = process_unit(plan.units[0], config)
    b = process_unit(plan.units[1], config).drop_vars("quality_flags")
    with pytest.raises(IdexDaskError, match="different variables"):
        concat_events([a, b])


def test_an_analysis_error_fails_only_the_unit_at_fault(three_files, monkeypatch):
    """The pack's analysis raises: its units are analysed one by one."""
    from idexdask.errors import AnalysisError
    from idexdask.pipeline import units as units_module
    from idexdask.workflow.analyze import AnalysisProducts

    plan = plan_inputs(three_files, 100)
    bad_epochs = set(process_unit(plan.units[1], load_config(DECODE_ONLY))["epoch"].values.tolist())

    def picky_analysis(dataset, config, overrides=None, **kwargs):
        if bad_epochs & set(dataset["epoch"].values.tolist()):
            raise AnalysisError("cannot analyse these events")
        answer = xr.Variable("epoch", np.full(dataset.sizes["epoch"], 42.0))
        return AnalysisProducts(variables={"answer": answer}, coord_names=(), attrs={})

    monkeypatch.setattr(units_module, "_analysis_products", picky_analysis)
    processed = process_units(tuple(plan.units), load_config({}))
    assert processed.done == (plan.units[0], plan.units[2])
    assert processed.failures == {plan.units[1].uid: "cannot analyse these events"}
    assert processed.dataset.sizes["epoch"] == 7 + 9
    assert (processed.dataset["answer"].values == 42.0).all()
    assert processed.dataset["input_index"].values.tolist() == [0] * 7 + [2] * 9


def test_planned_files_pack_into_whole_chunks(tmp_path):
    """Files whose sizes are not multiples of the chunk: every pack but the last
    is exactly one chunk of rows, even across file boundaries."""
    files = []
    for i, n in enumerate((37, 29, 45)):
        files.append(tmp_path / f"f{i}.pkts")
        write_campaign(files[-1], n, compress=False, seed=40 + i)
    plan = plan_inputs(files, 16, align=16)
    assert max(u.n_events for u in plan.units) <= 16
    packs = pack_units(plan.units, 16, 16)
    assert [sum(u.n_events for u in p) for p in packs] == [16] * 6 + [15]
    assert any(len({u.input_index for u in p}) > 1 for p in packs)  # across files


def test_a_pack_is_the_normalised_analysis_of_its_events(three_files):
    """process_units assembles the analysis products itself (one Dataset, not
    analyze's and then normalise's): the result is the same as those two steps."""
    from idexdask.pipeline.units import normalise_for_store
    from idexdask.workflow import analyze

    plan = plan_inputs(three_files, 100)
    config = load_config({})
    decoded = concat_events(
        [process_unit(u, load_config(DECODE_ONLY)).drop_vars("input_index") for u in plan.units]
    )
    from idexdask.pipeline.campaign_config import pack_config

    # the packs calibrate each event alone: the run's campaign step calibrates
    # every input's events together afterwards (tests/integration)
    expected = normalise_for_store(
        analyze(decoded, pack_config(config)),
        np.repeat([u.input_index for u in plan.units], [u.n_events for u in plan.units]),
    )
    got = process_units(tuple(plan.units), config).dataset
    # the targeted search is the campaign step's (at the campaign calibration):
    # a pack lays its variables out, NaN / not detected
    targeted = [k for k in expected.data_vars if k.startswith("targeted_")]
    assert targeted and np.isfinite(expected["targeted_significance"].values).any()
    for name in targeted:
        values = got[name].values
        assert (not values.any()) if values.dtype == bool else np.isnan(values).all(), name
        expected[name] = expected[name].copy(data=values)
    xr.testing.assert_identical(got, expected)
    assert list(got.variables) == list(expected.variables)
    assert "rsf" in got.coords  # the analysis' non-index coordinate stays one


def test_lab_pack_read_at_once_and_a_bad_impact_fails_alone(tmp_path):
    """A pack of impacts is read in one pass; with an unreadable file the impacts are
    read one by one and only the impact at fault fails."""
    from idexdask.io.trc import read_trc, write_trc

    rng = np.random.default_rng(3)
    for number in (1, 2, 3):
        for channel in (1, 3):
            codes = (rng.integers(-64, 64, 6000) * 16).astype(np.int16)
            write_trc(tmp_path / f"lab_C{channel}_{number:05d}.trc", codes, horiz_interval=1e-9,
                      horiz_offset=-3e-6, vertical_gain=2.5e-6, wave_source=channel)
    (tmp_path / "lab_settings.txt").write_text("QD 1\n\nTOF High\n")
    config = load_config({"pipeline": {"analyze": False}})
    units = plan_inputs([tmp_path], 1).units
    whole = process_units(units, config)
    assert whole.failures == {} and whole.dataset.sizes["epoch"] == 3
    alone = read_trc(tmp_path)
    np.testing.assert_array_equal(whole.dataset["TOF_High"].values, alone["TOF_High"].values)
    bad = tmp_path / "lab_C3_00002.trc"
    bad.write_bytes(bad.read_bytes()[:500])  # truncated
    units = plan_inputs([tmp_path], 1).units
    some = process_units(units, config)
    assert list(some.failures) == [units[1].uid]
    assert some.dataset["impact_number"].values.tolist() == [1, 3]


def test_a_configuration_error_is_not_a_unit_failure(three_files, monkeypatch):
    """A ConfigError in the analysis stops the pack's task: it is no unit's data at
    fault, so no unit is tried alone and none is recorded as the culprit."""
    from idexdask.errors import ConfigError
    from idexdask.pipeline import units as units_module

    plan = plan_inputs(three_files, 100)
    calls = []

    def misconfigured(dataset, config, overrides=None, **kwargs):
        calls.append(dataset.sizes["epoch"])
        raise ConfigError("composition.rsf_preset: unknown RSF preset 'labb'")

    monkeypatch.setattr(units_module, "_analysis_products", misconfigured)
    with pytest.raises(ConfigError, match="composition.rsf_preset"):
        process_units(tuple(plan.units), load_config({}))
    assert len(calls) == 1  # the whole pack once, never unit by unit
