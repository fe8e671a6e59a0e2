"""LeCroy .trc reader on small synthetic files written by ``write_trc``."""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pytest

from idexdask.errors import TraceFileError
from idexdask.io.trc import (
    channel_variable_name,
    parse_trc_filename,
    read_trc,
    read_trc_file,
    write_trc,
)
from idexdask.io.trc import reader as trc_reader
from idexdask.io.trc.format import read_codes_into, read_trc_header

N = 1000
DT = 1e-9
T0 = -400e-9
STAMP = dt.datetime(2021, 1, 13, 17, 48, 58, 509920)


def _raw(seed: int, n: int = N) -> np.ndarray:
    return np.random.default_rng(seed).integers(-2000, 2000, n).astype(np.int16)


def _write_impact(folder, name_fmt: str, impact: int, channels=(1, 2, 3, 4), **kw):
    for c in channels:
        write_trc(folder / name_fmt.format(c=c, i=impact), _raw(10 * impact + c),
                  horiz_interval=DT, horiz_offset=T0, vertical_gain=2.5e-5 * c,
                  vertical_offset=0.01 * c, trigger_time=STAMP + dt.timedelta(seconds=impact),
                  wave_source=c, **kw)


@pytest.mark.parametrize("name, expected", [
    ("C1--Trace--00003.trc", (1, 3)),
    ("peridot_C1_00003.trc", (1, 3)),
    ("C1Fe00003.trc", (1, 3)),
    ("C4--run2--00012.trc", (4, 12)),
    ("notes.txt", None),
    ("Calib00003.trc", None),
])
def test_filename_pattern(name, expected):
    assert parse_trc_filename(name) == expected


def test_channel_names():
    assert channel_variable_name("TOF High") == "TOF_High"
    assert channel_variable_name("tof  low") == "TOF_Low"
    assert channel_variable_name("TOF Mid") == "TOF_Mid"
    assert channel_variable_name("Target High") == "Target_High"
    assert channel_variable_name("Target Low") == "Target_Low"
    assert channel_variable_name("Ion Grid") == "Ion_Grid"
    assert channel_variable_name("QD 1") == "QD_1"
    assert channel_variable_name("QD-2 (amp)") == "QD_2_amp"


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("scpi", [False, True])
@pytest.mark.parametrize("dtype", [np.int16, np.int8])
def test_roundtrip_single_file(tmp_path, order, scpi, dtype):
    raw = _raw(1).astype(dtype) if dtype == np.int16 else (_raw(1) // 20).astype(np.int8)
    f = write_trc(tmp_path / "C2--Trace--00001.trc", raw, horiz_interval=DT,
                  horiz_offset=T0, vertical_gain=1e-3, vertical_offset=0.25,
                  byte_order=order, scpi_header=scpi, trigger_time=STAMP,
                  user_text=b"hello user text", wave_source=2)
    wf = read_trc_file(f)
    assert wf.header.wavedesc_offset == (11 if scpi else 0)
    assert wf.header.comm_type == (1 if dtype == np.int16 else 0)
    np.testing.assert_array_equal(wf.raw, raw)
    np.testing.assert_allclose(wf.volts, np.float32(1e-3) * raw.astype(float) - 0.25,
                               rtol=1e-6)
    np.testing.assert_allclose(wf.time_s, T0 + np.arange(N) * np.float32(DT), rtol=1e-12)
    assert wf.header.trigger_time == STAMP
    assert wf.header.wave_source == 2


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("scpi", [False, True])
def test_header_fields(tmp_path, order, scpi):
    """Every descriptor field the reader keeps, at its offset, in either byte order."""
    raw = _raw(2)
    f = write_trc(tmp_path / "C3--Trace--00002.trc", raw, horiz_interval=DT,
                  horiz_offset=T0, vertical_gain=2.5e-5, vertical_offset=-0.125,
                  byte_order=order, scpi_header=scpi, trigger_time=STAMP,
                  instrument_name="LECROYWR640ZI", user_text=b"twelve bytes", wave_source=3)
    h = read_trc_header(f)
    assert (h.path, h.wavedesc_offset, h.template_name) == (str(f), 11 if scpi else 0,
                                                            "LECROY_2_3")
    assert (h.comm_type, h.byte_order, h.wave_descriptor, h.user_text) == (1, order, 346, 12)
    assert (h.res_desc1, h.trigtime_array, h.ris_time_array, h.res_array1) == (0, 0, 0, 0)
    assert (h.wave_array_1, h.wave_array_count, h.subarray_count) == (2 * N, N, 1)
    assert (h.instrument_name, h.instrument_number, h.trace_label) == ("LECROYWR640ZI", 0, "")
    # float32 fields: the written values rounded to float32
    assert (h.vertical_gain, h.vertical_offset) == (float(np.float32(2.5e-5)), -0.125)
    assert (h.max_value, h.min_value, h.nominal_bits) == (32767.0, -32768.0, 12)
    assert (h.horiz_interval, h.horiz_offset) == (float(np.float32(DT)), T0)
    assert (h.vertical_unit, h.horizontal_unit) == ("V", "S")
    assert (h.trigger_time, h.trigger_time_ns) == (STAMP, 0)
    assert (h.record_type, h.vertical_coupling) == ("single_sweep", "DC_50_Ohms")
    assert (h.probe_attenuation, h.wave_source) == (1.0, 3)
    assert h.data_offset == (11 if scpi else 0) + 346 + 12


def test_directory_naming_styles_and_settings(tmp_path):
    for style, imp in (("C{c}--Trace--{i:05d}.trc", 3), ("peridot_C{c}_{i:05d}.trc", 1),
                       ("C{c}Fe{i:05d}.trc", 6)):
        _write_impact(tmp_path, style, imp)
    (tmp_path / "peridot_settings.txt").write_text("QD 1\nTOF Low\nTOF High\nQD 2\n")
    ds = read_trc(tmp_path)
    assert ds.impact_number.values.tolist() == [1, 3, 6]
    assert ds.attrs["source"] == "lecroy_trc"
    assert ds.attrs["settings_source"] == "peridot_settings.txt"
    assert list(ds.channel.values) == ["QD_1", "TOF_Low", "TOF_High", "QD_2"]
    assert ds.TOF_High.dtype == np.float32
    assert ds.TOF_High.dims == ("epoch", "time_high_sample_rate_index")
    for var in ("QD_1", "TOF_Low", "TOF_High", "QD_2"):
        assert ds[var].attrs["time_variable"] == "time_high_sample_rate"
        assert ds[var].attrs["units"] == "V"
    assert ds.TOF_High.attrs["signal_polarity"] == -1
    assert ds.TOF_Low.attrs["signal_polarity"] == -1
    assert ds.QD_1.attrs["signal_polarity"] == -1  # configs/scope.yaml: lab QDs negative
    # values: channel 3 of impact 6 (third row)
    expected = np.float32(2.5e-5 * 3) * _raw(63).astype(float) - np.float32(0.03)
    np.testing.assert_allclose(ds.TOF_High.values[2], expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ds.time_high_sample_rate.values[0],
                               (T0 + np.arange(N) * np.float32(DT)) * 1e6, rtol=1e-12)
    assert not ds.channel_missing.any()
    assert ds.epoch.dtype == np.int64
    assert np.all(np.diff(ds.epoch.values) > 0)


def test_settings_mapping_and_polarity(tmp_path):
    _write_impact(tmp_path, "C{c}--Trace--{i:05d}.trc", 1, channels=(1, 2))
    ds = read_trc(tmp_path, settings={1: "Ion Grid", 2: {"name": "TOF Mid", "polarity": 1}},
                  polarity={"Ion_Grid": -1})
    assert ds.Ion_Grid.attrs["signal_polarity"] == -1
    assert ds.TOF_Mid.attrs["signal_polarity"] == 1
    ds = read_trc(tmp_path)  # no settings file: channels named C<n>
    assert {"C1", "C2"} <= set(ds.data_vars)


def test_settings_file_argument(tmp_path):
    _write_impact(tmp_path, "C{c}--Trace--{i:05d}.trc", 2, channels=(1, 3))
    s = tmp_path / "other.txt"
    s.write_text("Target Low\n\nTOF High\n")
    ds = read_trc(tmp_path / "C3--Trace--00002.trc", settings=s)
    assert "TOF_High" in ds and "Target_Low" not in ds
    assert ds.TOF_High.shape == (1, N)


def test_missing_channel_is_nan(tmp_path):
    _write_impact(tmp_path, "C{c}--Trace--{i:05d}.trc", 1)
    _write_impact(tmp_path, "C{c}--Trace--{i:05d}.trc", 2, channels=(1, 2, 3))
    ds = read_trc(tmp_path)
    assert ds.channel_missing.values.tolist() == [False, True]
    assert np.isnan(ds.C4.values[1]).all()
    assert np.isfinite(ds.C4.values[0]).all()
    assert not ds.channel_present.sel(channel="C4").values[1]


def test_different_sampling_gets_own_axis(tmp_path):
    write_trc(tmp_path / "C1--x--00001.trc", _raw(1), horiz_interval=1e-9, horiz_offset=T0)
    write_trc(tmp_path / "C2--x--00001.trc", _raw(2, 100), horiz_interval=1e-8,
              horiz_offset=T0)
    ds = read_trc(tmp_path, settings={1: "TOF High", 2: "Target Low"})
    assert ds.TOF_High.attrs["time_variable"] == "time_high_sample_rate"
    assert ds.Target_Low.attrs["time_variable"] == "time_low_sample_rate"
    assert ds.Target_Low.dims == ("epoch", "time_low_sample_rate_index")
    assert ds.time_low_sample_rate.shape == (1, 100)
    np.testing.assert_allclose(np.diff(ds.time_low_sample_rate.values[0]), 0.01, rtol=1e-6)


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("dtype", [np.int16, np.int8])
def test_codes_read_into_scratch(tmp_path, order, dtype):
    # the two-step read (header, then codes into a reused scratch) gives the codes
    # and the dataset the volts of the one-step read, in either byte order
    raw = _raw(3).astype(dtype) if dtype == np.int16 else (_raw(3) // 20).astype(np.int8)
    f = write_trc(tmp_path / "C1--Trace--00001.trc", raw, horiz_interval=DT, horiz_offset=T0,
                  vertical_gain=1e-3, vertical_offset=0.25, byte_order=order)
    scratch = np.full(4 * N, 0x5A, np.uint8)  # larger than needed, dirty
    codes = read_codes_into(read_trc_header(f), scratch)
    assert codes.dtype == np.dtype(dtype) and codes.dtype.isnative
    np.testing.assert_array_equal(codes, raw)
    volts = read_trc(f).C1.values[0]
    assert volts.dtype == np.float32
    np.testing.assert_array_equal(volts, read_trc_file(f).volts.astype(np.float32))


def test_file_shrinking_after_its_header(tmp_path, monkeypatch, caplog):
    # a file cut between the header check and the sample read: an error, or with
    # errors="skip" a missing channel listed in skipped_files
    _write_impact(tmp_path, "C{c}--Trace--{i:05d}.trc", 1)
    _write_impact(tmp_path, "C{c}--Trace--{i:05d}.trc", 2)
    victim = tmp_path / "C3--Trace--00002.trc"
    whole = victim.read_bytes()
    header_of = trc_reader.read_trc_header

    def header_then_cut(path):
        header = header_of(path)
        if path.name == victim.name:
            victim.write_bytes(whole[:-50])
        return header

    monkeypatch.setattr(trc_reader, "read_trc_header", header_then_cut)
    with pytest.raises(TraceFileError, match="C3--Trace--00002.trc: truncated data"):
        read_trc(tmp_path)
    victim.write_bytes(whole)
    with caplog.at_level(logging.WARNING, logger="idexdask"):
        ds = read_trc(tmp_path, errors="skip")
    assert "C3--Trace--00002.trc" in caplog.text
    assert ds.channel_missing.values.tolist() == [False, True]
    assert ds.channel_present.values[1].tolist() == [True, True, False, True]
    assert np.isnan(ds.C3.values[1]).all() and not np.isnan(ds.C3.values[0]).any()
    assert ds.attrs["skipped_files"] == "C3--Trace--00002.trc"


# ------------------------------------------------------------------ bad input


def _good(tmp_path, name="C1--Trace--00001.trc", **kw):
    return write_trc(tmp_path / name, _raw(5), horiz_interval=DT, horiz_offset=T0, **kw)


def test_truncated_file(tmp_path):
    f = _good(tmp_path)
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(TraceFileError, match="C1--Trace--00001.trc.*truncated"):
        read_trc(f)


def test_truncated_descriptor(tmp_path):
    f = _good(tmp_path, scpi_header=True)
    f.write_bytes(f.read_bytes()[:200])
    with pytest.raises(TraceFileError, match="truncated descriptor"):
        read_trc_file(f)


def test_not_lecroy(tmp_path):
    f = tmp_path / "C1--Trace--00001.trc"
    f.write_bytes(b"this is not a scope file" * 100)
    with pytest.raises(TraceFileError, match="not a LeCroy"):
        read_trc(f)
    empty = tmp_path / "C2--Trace--00001.trc"
    empty.write_bytes(b"")
    with pytest.raises(TraceFileError, match="C2--Trace--00001.trc"):
        read_trc_file(empty)


def test_wrong_comm_type(tmp_path):
    f = _good(tmp_path, comm_type=7)
    with pytest.raises(TraceFileError, match="COMM_TYPE 7"):
        read_trc(f)


def test_declared_array_longer_than_count(tmp_path):
    # COMM_TYPE 0 (bytes) declared for int16 data: WAVE_ARRAY_1 != count * 1
    f = _good(tmp_path, comm_type=0)
    with pytest.raises(TraceFileError, match="WAVE_ARRAY_COUNT"):
        read_trc_file(f)


def test_errors_skip(tmp_path, caplog):
    _write_impact(tmp_path, "C{c}--Trace--{i:05d}.trc", 1)
    _write_impact(tmp_path, "C{c}--Trace--{i:05d}.trc", 2)
    bad = tmp_path / "C2--Trace--00002.trc"
    bad.write_bytes(bad.read_bytes()[:-100])
    with pytest.raises(TraceFileError, match="C2--Trace--00002.trc"):
        read_trc(tmp_path)
    with caplog.at_level(logging.WARNING, logger="idexdask"):
        ds = read_trc(tmp_path, errors="skip")
    assert "C2--Trace--00002.trc" in caplog.text
    assert ds.impact_number.values.tolist() == [1, 2]
    assert ds.channel_missing.values.tolist() == [False, True]
    assert np.isnan(ds.C2.values[1]).all()
    assert ds.attrs["skipped_files"] == "C2--Trace--00002.trc"


def test_empty_directory(tmp_path):
    with pytest.raises(TraceFileError, match="no readable"):
        read_trc(tmp_path)
    with pytest.raises(TraceFileError, match="no such"):
        read_trc(tmp_path / "nope")
