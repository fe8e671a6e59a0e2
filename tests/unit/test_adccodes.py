"""ADC codes with scale/offset and time axes by formula: exact round trips, loud refusals."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from idexdask.adccodes import (
    CODE_FILL,
    RECORDED_CODES_KEY,
    CodeScale,
    decode_code_variables,
    encode_codes,
)
from idexdask.config import load_config
from idexdask.errors import IdexDaskError, StoreError
from idexdask.io.trc import read_trc, write_trc
from idexdask.pipeline.plan import plan_inputs
from idexdask.pipeline.region_write import write_region
from idexdask.pipeline.store import chunk_rows, initialise_store
from idexdask.pipeline.units import process_unit
from idexdask.timeaxis import AxisTerms, compact_axes, expand_axes, uniform_axis_variable

GAIN, OFFSET = np.float32(6.25e-06), np.float32(0.169)  # as a scope stores them (float32)


def _volts(codes, gain=GAIN, offset=OFFSET):
    """read_trc's volts: gain * code - offset in float64, rounded once to float32."""
    return (float(gain) * codes.astype(np.float64) - float(offset)).astype(np.float32)


def test_codes_round_trip_exactly():
    rng = np.random.default_rng(5)
    codes = (rng.integers(-2048, 2047, (3, 5000)) * 16).astype(np.int16)
    volts = _volts(codes)
    volts[1, 10:20] = np.nan  # missing samples
    scale = CodeScale(float(GAIN), -float(OFFSET))
    back = scale.encode(volts)
    assert back is not None
    assert (back[1, 10:20] == CODE_FILL).all()
    np.testing.assert_array_equal(back[0], codes[0])
    np.testing.assert_array_equal(scale.decode(back), volts, strict=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_branch_free_pass_gives_the_exact_pass_codes(dtype):
    """CodeScale.encode's one-pass guess and the exact pass (which decides whenever
    the guess cannot place a value) give the same codes, and refuse the same values."""
    from idexdask.adccodes import _encode_exact, _encode_products

    rng = np.random.default_rng(11)
    codes = (rng.integers(-2048, 2047, 20_000) * 16).astype(np.int16)
    codes[:2] = (-32768, 32752)  # the extremes of a 12-bit LeCroy ADC
    scale = CodeScale(float(GAIN), -float(OFFSET))
    single = dtype == np.float32
    # float32: read_trc's volts; float64: the codes' float64 values, unrounded
    values = _volts(codes) if single else codes * scale.scale + scale.offset
    values[100:110] = np.nan
    fast, exact = np.empty(values.size, np.int16), np.empty(values.size, np.int16)
    assert _encode_products(values, scale.scale, scale.offset, scale.fill, single, fast)
    assert _encode_exact(values, scale.scale, scale.offset, scale.fill, single, exact)
    np.testing.assert_array_equal(fast, exact)
    np.testing.assert_array_equal(scale.encode(values), exact)
    fill_value = CODE_FILL * scale.scale + scale.offset  # the fill code, recorded
    for bad in (values[3] + scale.scale / 2, fill_value):
        spoiled = values.copy()
        spoiled[7] = bad  # between two codes, or the fill code: the guess fails
        assert not _encode_products(spoiled, scale.scale, scale.offset, scale.fill, single,
                                    fast)
        assert scale.encode(spoiled) is None  # and the exact pass refuses it


def test_values_of_another_scale_are_refused():
    codes = np.arange(-1000, 1000, dtype=np.int16) * 16
    with pytest.raises(IdexDaskError):  # another gain: not codes of this scale
        encode_codes(_volts(codes, gain=np.float32(2.5e-6)), float(GAIN), -float(OFFSET))
    with pytest.raises(IdexDaskError):  # the fill code, recorded: would read back as NaN
        encode_codes(_volts(np.array([CODE_FILL], np.int16)), float(GAIN), -float(OFFSET))


def test_decoding_a_lazy_dataset(adapter_path):
    codes = np.arange(12, dtype=np.int16).reshape(3, 4) * 16
    codes[2, 3] = CODE_FILL
    ds = xr.Dataset({"w": (("epoch", "i"), codes, {
        "units": "V", "scale_factor": float(GAIN), "add_offset": -float(OFFSET),
        "_FillValue": CODE_FILL})})
    for data in (ds, ds.chunk({"epoch": 2})):
        out = decode_code_variables(data)
        assert out["w"].dtype == np.float32 and "scale_factor" not in out["w"].attrs
        expected = _volts(codes)
        expected[2, 3] = np.nan
        np.testing.assert_array_equal(out["w"].values, expected)
        np.testing.assert_array_equal(out["w"][1:, ::2].values, expected[1:, ::2])


def test_uniform_axis_equals_materialised_formula(adapter_path):
    start = np.array([-4e-4, -3.99e-4, np.nan])
    step = np.array([1e-9, 1e-9, np.nan])
    count = np.array([7, 5, 0])
    terms = AxisTerms.for_axis("t")
    axis = uniform_axis_variable(("epoch", "t_index"), start, step, count, 7, scale=1e6,
                                 terms=terms, attrs={"units": "us"})
    full = (start[:, None] + np.arange(7)[None, :] * step[:, None]) * 1e6
    full[1, 5:] = np.nan
    np.testing.assert_array_equal(axis.values, full)
    np.testing.assert_array_equal(axis[1, 2].values, full[1, 2])
    np.testing.assert_array_equal(axis[[0, 1], 4:].values, full[[0, 1], 4:])
    np.testing.assert_array_equal(axis[:, 3].values, full[:, 3])
    variables = {"t": axis, "t_start": xr.Variable(("epoch",), start),
                 "t_step": xr.Variable(("epoch",), step),
                 "t_count": xr.Variable(("epoch",), count)}
    compact = compact_axes(variables)
    assert "t" not in compact
    back = expand_axes(xr.Dataset(compact))
    np.testing.assert_array_equal(back["t"].values, full)
    assert back["t"].attrs["units"] == "us"


def _impact(directory, number, gain):
    codes = (np.arange(2000, dtype=np.int16) % 64) * 16
    for channel in (1, 3):
        write_trc(directory / f"lab_C{channel}_{number:05d}.trc", codes,
                  horiz_interval=1e-9, horiz_offset=-1e-6, vertical_gain=gain,
                  vertical_offset=0.01, wave_source=channel)


def test_store_refuses_an_impact_of_another_gain(tmp_path):
    """Scope settings changed within a campaign: that impact fails loudly, not silently."""
    captures = tmp_path / "captures"
    captures.mkdir()
    (captures / "lab_settings.txt").write_text("QD 1\n\nTOF High\n")
    _impact(captures, 1, 2.5e-6)
    _impact(captures, 2, 3e-6)  # (a multiple of 2.5e-6 would be codes of the first scale)
    config = load_config({"pipeline": {"analyze": False}})
    plan = plan_inputs([captures], 1)
    first, second = (process_unit(u, config) for u in plan.units)
    assert first["TOF_High"].encoding["scale_factor"] == np.float32(2.5e-6)
    store = tmp_path / "store.zarr"
    rows = chunk_rows(first, 4)
    initialise_store(store, first.isel(epoch=slice(0, 1)), plan.n_events, rows=rows,
                     meta={"n_events": plan.n_events})
    write_region(store, first, plan.units[0].region, rows=rows, n_events=plan.n_events)
    with pytest.raises(StoreError, match="scope settings"):
        write_region(store, second, plan.units[1].region, rows=rows, n_events=plan.n_events)
    # one read of both impacts: gains differ, so the waveforms stay float32 volts
    both = read_trc(captures)
    assert "scale_factor" not in both["TOF_High"].encoding


def _two_impacts(tmp_path):
    captures = tmp_path / "captures"
    captures.mkdir()
    (captures / "lab_settings.txt").write_text("QD 1\n\nTOF High\n")
    _impact(captures, 1, 2.5e-6)
    _impact(captures, 2, 2.5e-6)
    return captures


def test_kept_codes_are_those_encode_finds_and_follow_only_their_volts(tmp_path):
    """read_trc(keep_codes=True): the recorded codes beside read-only volts, given
    only for rows of those very volts, of the same scale, in this process."""
    import copy
    import pickle

    from idexdask.adccodes import RecordedCodes, code_scale

    captures = _two_impacts(tmp_path)
    plain = read_trc(captures)
    kept = read_trc(captures, keep_codes=True)
    for name in ("QD_1", "TOF_High"):
        assert kept[name].values.tobytes() == plain[name].values.tobytes()
        recorded = kept[name].encoding[RECORDED_CODES_KEY]
        scale = code_scale(kept[name].encoding)
        volts = kept[name].values
        assert not volts.flags.writeable
        np.testing.assert_array_equal(recorded.codes, scale.encode(plain[name].values))
        np.testing.assert_array_equal(recorded.codes_of(volts, scale), recorded.codes)
        np.testing.assert_array_equal(recorded.codes_of(volts[1:], scale), recorded.codes[1:])
        np.testing.assert_array_equal(
            recorded.codes_of(kept.isel(epoch=slice(1, 2))[name].values, scale),
            recorded.codes[1:])
        assert recorded.codes_of(volts[:, 1:], scale) is None  # not whole rows
        assert recorded.codes_of(volts.copy(), scale) is None  # elsewhere in memory
        assert recorded.codes_of(volts, CodeScale(scale.scale * 2, scale.offset)) is None
        copied = copy.deepcopy(kept[name].variable)
        assert copied.encoding[RECORDED_CODES_KEY].codes_of(copied.values, scale) is None
        sent = pickle.loads(pickle.dumps(kept[name].variable))
        assert isinstance(sent.encoding[RECORDED_CODES_KEY], RecordedCodes)
        assert sent.encoding[RECORDED_CODES_KEY].codes_of(sent.values, scale) is None
    assert RECORDED_CODES_KEY not in plain["TOF_High"].encoding


def test_store_writes_the_kept_codes_else_encodes_the_values(tmp_path, monkeypatch):
    """The store takes a pipeline read's kept codes as they are (no pass over the
    volts); values it has no codes for are encoded; both read back as read_trc's."""
    captures = _two_impacts(tmp_path)
    config = load_config({"pipeline": {"analyze": False}})
    plan = plan_inputs([captures], 1)
    first, second = (process_unit(u, config) for u in plan.units)
    # the QD volts a pipeline read leaves lazy pass through undecoded; loaded and
    # copied, the volts lie elsewhere: no kept codes apply
    assert first.variables["QD_1"].encoding[RECORDED_CODES_KEY].volts is None
    second = second.load().copy(deep=True)
    store = tmp_path / "store.zarr"
    rows = chunk_rows(first, 4)
    initialise_store(store, first.isel(epoch=slice(0, 1)), plan.n_events, rows=rows,
                     meta={"n_events": plan.n_events})
    calls = []
    encode = CodeScale.encode
    monkeypatch.setattr(CodeScale, "encode",
                        lambda self, values: calls.append(values.shape) or encode(self, values))
    write_region(store, first, plan.units[0].region, rows=rows, n_events=plan.n_events)
    assert calls == []  # the kept codes, as they are
    assert first.variables["QD_1"].encoding[RECORDED_CODES_KEY].volts is None  # never decoded
    write_region(store, second, plan.units[1].region, rows=rows, n_events=plan.n_events)
    assert len(calls) == 2  # QD_1 and TOF_High of the copy, encoded
    with xr.open_zarr(store, consolidated=False, mask_and_scale=False) as back:
        back = decode_code_variables(back).load()
    direct = read_trc(captures)
    for name in ("QD_1", "TOF_High"):
        assert back[name].values.tobytes() == direct[name].values.tobytes(), name


def test_kept_codes_of_int8_big_endian_short_and_missing_records(tmp_path):
    """Every record layout the reader takes: int8 codes, big-endian int16, a
    shorter record (NaN beyond it) and a missing channel (NaN): the kept codes
    are those encode finds from the volts, CODE_FILL where they are NaN."""
    from idexdask.adccodes import RECORDED_CODES_KEY, code_scale

    captures = tmp_path / "captures"
    captures.mkdir()
    (captures / "lab_settings.txt").write_text("QD 1\n\nTOF High\n")
    codes = (np.arange(2000, dtype=np.int16) % 64) * 16 - 512
    common = {"horiz_interval": 1e-9, "horiz_offset": -1e-6, "vertical_gain": 2.5e-6,
              "vertical_offset": 0.01}
    write_trc(captures / "lab_C1_00001.trc", (codes // 16).astype(np.int8), wave_source=1,
              **common)
    write_trc(captures / "lab_C3_00001.trc", codes, wave_source=3, byte_order=">", **common)
    write_trc(captures / "lab_C1_00002.trc", codes[:1500], wave_source=1, **common)
    write_trc(captures / "lab_C3_00003.trc", codes, wave_source=3, **common)  # no C1
    plain = read_trc(captures)
    kept = read_trc(captures, keep_codes=True)
    for name in ("QD_1", "TOF_High"):
        assert kept[name].values.tobytes() == plain[name].values.tobytes(), name
        recorded = kept[name].encoding[RECORDED_CODES_KEY]
        np.testing.assert_array_equal(
            recorded.codes, code_scale(kept[name].encoding).encode(plain[name].values))
    qd = kept["QD_1"].encoding[RECORDED_CODES_KEY].codes
    np.testing.assert_array_equal(qd[0], codes // 16)  # the int8 codes, widened
    assert (qd[1, 1500:] == CODE_FILL).all() and (qd[2] == CODE_FILL).all()
