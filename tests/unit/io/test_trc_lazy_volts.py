"""read_trc(lazy_volts=...): waveforms kept as their recorded codes, volts decoded
only when asked, and the store taking the codes without decoding them.

The lazy volts are decoded by the read's own compiled pass (``volts_into``) from
the same codes, gain and offset as an eager read, so the values are compared
exactly: the same code on the same inputs (and the campaign store's contract
is read_trc's float values, exactly).
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import xarray as xr

from idexdask.adccodes import (
    CODE_FILL,
    RECORDED_CODES_KEY,
    CodeScale,
    code_scale,
    decode_code_variables,
    recorded_codes,
)
from idexdask.compat.lazy import internals_available, lazy_selection
from idexdask.io.trc import read_trc, write_trc
from idexdask.pipeline.region_write import write_region
from idexdask.pipeline.store import initialise_store

CODES = ((np.arange(3000, dtype=np.int16) * 7) % 200 - 100) * 16  # 12-bit codes


def _captures(tmp_path, gains=(2.5e-6, 2.5e-6, 2.5e-6)):
    """Three impacts of QD_1 (C1) and TOF_High (C3); impact 2's QD_1 is shorter and
    impact 3 has no QD_1 (NaN beyond and throughout)."""
    captures = tmp_path / "captures"
    captures.mkdir()
    (captures / "lab_settings.txt").write_text("QD 1\n\nTOF High\n")
    for number, gain in enumerate(gains, start=1):
        for channel in (1, 3):
            if channel == 1 and number == 3:
                continue
            codes = CODES[:2400] if (channel, number) == (1, 2) else CODES
            write_trc(captures / f"lab_C{channel}_{number:05d}.trc", np.roll(codes, number),
                      horiz_interval=1e-9, horiz_offset=-1e-6, vertical_gain=gain,
                      vertical_offset=0.01, wave_source=channel)
    return captures


def test_lazy_volts_are_the_eager_reads_and_decoded_once(tmp_path):
    captures = _captures(tmp_path)
    eager = read_trc(captures, keep_codes=True)
    lazy = read_trc(captures, keep_codes=True, lazy_volts=("QD_1",))
    recorded = lazy["QD_1"].encoding[RECORDED_CODES_KEY]
    lazy_path = internals_available()  # else (IDEXDASK_PUBLIC_API=lazy) decoded at once
    assert (lazy_selection(lazy["QD_1"].variable) is not None) == lazy_path
    assert lazy_selection(lazy["TOF_High"].variable) is None  # not asked: volts read
    assert (recorded.volts is None) == lazy_path  # nothing decoded by the read
    np.testing.assert_array_equal(recorded.codes,
                                  eager["QD_1"].encoding[RECORDED_CODES_KEY].codes)
    assert (recorded.codes[1, 2400:] == CODE_FILL).all() and (recorded.codes[2] == CODE_FILL).all()
    # the codes of the whole variable and of a selection of events, still undecoded
    np.testing.assert_array_equal(recorded_codes(lazy["QD_1"].variable), recorded.codes)
    np.testing.assert_array_equal(
        recorded_codes(lazy.isel(epoch=slice(1, 3))["QD_1"].variable), recorded.codes[1:3])
    assert recorded_codes(lazy.isel(time_high_sample_rate_index=slice(5, 9))["QD_1"].variable) \
        is None  # part of a row
    assert (recorded.volts is None) == lazy_path
    for name in ("QD_1", "TOF_High"):
        assert lazy[name].values.tobytes() == eager[name].values.tobytes(), name
        assert lazy[name].attrs == eager[name].attrs
        assert lazy[name].encoding.keys() == eager[name].encoding.keys()
    np.testing.assert_array_equal(lazy["channel_clipped"], eager["channel_clipped"])
    # decoded once: every later selection is a view of the same read-only volts
    volts = recorded.volts
    assert volts is not None and not volts.flags.writeable
    assert np.shares_memory(lazy["QD_1"].values, volts)
    part = lazy.isel(epoch=slice(1, 2))["QD_1"].values
    np.testing.assert_array_equal(recorded.codes_of(part, code_scale(lazy["QD_1"].encoding)),
                                  recorded.codes[1:2])
    picked = lazy["QD_1"].isel(epoch=[2, 0], time_high_sample_rate_index=[3, 1]).values
    np.testing.assert_array_equal(picked, eager["QD_1"].values[[2, 0]][:, [3, 1]])


def test_lazy_volts_travel_and_copy_with_their_values(tmp_path):
    captures = _captures(tmp_path)
    lazy = read_trc(captures, keep_codes=True, lazy_volts=("QD_1",))
    eager = read_trc(captures)
    sent = pickle.loads(pickle.dumps(lazy["QD_1"].variable))
    assert sent.values.tobytes() == eager["QD_1"].values.tobytes()
    assert recorded_codes(sent) is None  # the variable's RecordedCodes stays here
    copied = copy.deepcopy(lazy["QD_1"].variable)
    assert copied.values.tobytes() == eager["QD_1"].values.tobytes()


def test_lazy_volts_of_impacts_of_other_gains_are_read_eagerly(tmp_path):
    """Codes of two scales cannot stand for the volts: that channel is decoded
    in the read, each impact with its own gain, as an eager read does."""
    captures = _captures(tmp_path, gains=(2.5e-6, 3e-6, 2.5e-6))
    eager = read_trc(captures)
    lazy = read_trc(captures, keep_codes=True, lazy_volts=("QD_1", "TOF_High"))
    for name in ("QD_1", "TOF_High"):
        assert lazy_selection(lazy[name].variable) is None
        assert RECORDED_CODES_KEY not in lazy[name].encoding
        assert lazy[name].values.tobytes() == eager[name].values.tobytes(), name


def test_lazy_volts_need_the_codes(tmp_path):
    with pytest.raises(ValueError, match="keep_codes"):
        read_trc(_captures(tmp_path), lazy_volts=("QD_1",))


def test_store_writes_lazy_codes_without_decoding_them(tmp_path):
    captures = _captures(tmp_path)
    read = read_trc(captures, keep_codes=True, lazy_volts=("QD_1", "TOF_High"))
    lazy = read[["QD_1", "TOF_High"]]  # the waveforms alone
    store = tmp_path / "store.zarr"
    initialise_store(store, lazy.isel(epoch=slice(0, 1)), 3, rows=2, meta={"n_events": 3})
    encode = CodeScale.encode
    calls = []
    CodeScale.encode = lambda self, values: calls.append(values.shape) or encode(self, values)
    try:
        write_region(store, lazy.isel(epoch=slice(0, 2)), (0, 2), rows=2, n_events=3)
        write_region(store, lazy.isel(epoch=slice(2, 3)), (2, 3), rows=2, n_events=3)
    finally:
        CodeScale.encode = encode
    assert calls == []  # the recorded codes, as they are
    for name in ("QD_1", "TOF_High"):  # never decoded (but on the public path: at once)
        assert (lazy[name].encoding[RECORDED_CODES_KEY].volts is None) == internals_available()
    with xr.open_zarr(store, consolidated=False, mask_and_scale=False) as back:
        back = decode_code_variables(back).load()
    eager = read_trc(captures)
    for name in ("QD_1", "TOF_High"):
        assert back[name].values.tobytes() == eager[name].values.tobytes(), name
