"""Instrument state in engineering units, against the official L1b, and on damaged input.

The official values come from ``imap_processing.idex.idex_l1b`` (1.0.40) in
``.venv-oracle`` (tests/oracle/official_instrument_state.py): on the official
L1a of every real L0 file, and on 4096 events of random header words that reach
every bit pattern the real files do not (dead time > 0, every gain's trigger
modes, several trigger sources at once).
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import idexdask
from idexdask.analysis.hv_settings import group_by_high_voltage
from idexdask.analysis.instrument import (
    InstrumentStateFlag,
    instrument_state,
    physical_waveforms,
)
from idexdask.analysis.instrument_table import load_instrument_table
from idexdask.errors import ConfigError
from idexdask.packets.layout import EVENT_HEADER_FIELDS
from idexdask.packets.quality import QualityFlag
from tests.packet_damage import header_packets, split_packets, with_crc

from ..conftest import REAL_L0_FILES

TABLE = load_instrument_table()
EPS = np.finfo(np.float64).eps
GAINS = ("lg", "mg", "hg")
OFFICIAL_HIGH_SAMPLES = 8189  # the official L1a keeps 8189 of the 8192 TOF samples


def horner_bound(name: str, dn: np.ndarray) -> np.ndarray:
    """Largest difference two correct float64 evaluations of a table polynomial can show.

    Horner's scheme on a degree-n polynomial is within gamma_2n * sum|c_k| x^k of
    the exact value (Higham, Accuracy and Stability, eq. 5.3; gamma_m ~ m u, u =
    eps/2).  The official evaluates the 8-coefficient form (n = 7, zeros
    included), we the trimmed one; both are within that bound, so their
    difference is within twice it: 2 * 14 * eps/2 * sum|c_k| x^k < 16 eps * ...
    """
    q = TABLE.quantity(name)
    x = dn.astype(np.float64)
    magnitude = sum(abs(c) * x**k for k, c in enumerate(q.coefficients))
    return 16 * EPS * magnitude


def raw_dn(words: np.ndarray, name: str) -> np.ndarray:
    q = TABLE.quantity(name)
    return (words.astype(np.int64) >> q.shift) & ((1 << q.bits) - 1)


def assert_state_equal(ours: xr.Dataset, events: xr.Dataset, theirs: dict[str, np.ndarray]):
    """Every official quantity equals ours, to the tolerance of how each is computed."""
    n = ours.sizes["epoch"]
    checked = 0
    for q in TABLE.housekeeping:
        official = theirs[q.name]
        assert official.shape == (n,)
        bound = horner_bound(q.name, raw_dn(events[q.word].values, q.name))
        np.testing.assert_array_less(np.abs(ours[q.name].values - official), bound + 1e-300)
        checked += 1
    for gain in GAINS:
        # labels are exact strings; "" where the official gives None (gain not armed)
        assert (
            ours[f"trigger_mode_{gain}"].values.tolist() == theirs[f"trigger_mode_{gain}"].tolist()
        )
        # one product threshold x factor on each side: at most 1 ulp apart
        np.testing.assert_allclose(
            ours[f"trigger_level_{gain}"].values,
            theirs[f"trigger_level_{gain}"],
            rtol=2 * EPS,
            atol=0,
        )
        checked += 2
    assert ours["trigger_origin"].values.tolist() == theirs["trigger_origin"].tolist()
    # base * 2**shift is exact in float64; the block duration and the final product
    # are one rounding each, on both sides
    np.testing.assert_allclose(ours["dead_time"].values, theirs["dead_time"], rtol=2 * EPS, atol=0)
    checked += 2
    official_names = {k for k in theirs if not k.startswith(("wave_", "word_")) and k != "epoch"}
    assert checked == len(official_names) == 32 + 6 + 2  # nothing the official computes is left out


@pytest.mark.oracle
@pytest.mark.parametrize("file", REAL_L0_FILES, ids=lambda p: p.name)
def test_real_events_equal_official_l1b(file, official_instrument_state):
    events = idexdask.read_l0(file)
    ours = idexdask.instrument_state(events)
    with np.load(official_instrument_state[file.name]) as npz:
        theirs = dict(npz)
    if "epoch" not in theirs:  # the official finds no science event: neither do we
        assert events.sizes["epoch"] == 0 and ours.sizes["epoch"] == 0
        return
    # same events in the same order (the official epoch carries float64 rounding:
    # tens of ns at 3e17 ns; events are seconds apart)
    np.testing.assert_allclose(ours["epoch"].values, theirs["epoch"], rtol=0, atol=1_000)
    assert_state_equal(ours, events, theirs)
    # waveforms in mA / pC: one multiplication by the same factor on both sides
    physical = physical_waveforms(events)
    for name in TABLE.waveforms:
        official = theirs[f"wave_{name}"]
        mine = physical[name].values[:, : official.shape[1]]
        assert physical[name].attrs["units"] == ("mA" if name.startswith("TOF") else "pC")
        np.testing.assert_allclose(mine, official, rtol=2 * EPS, atol=0)


@pytest.mark.oracle
def test_random_header_words_equal_official_l1b(official_instrument_state):
    with np.load(official_instrument_state["synthetic"]) as npz:
        theirs = dict(npz)
    words = {k.removeprefix("word_"): v for k, v in theirs.items() if k.startswith("word_")}
    events = xr.Dataset({k: ("epoch", v) for k, v in words.items()})
    ours = instrument_state(events)
    assert_state_equal(ours, events, theirs)
    # the random words reach what the real files do not
    assert (ours["dead_time"].values > 0).mean() > 0.9
    assert {"MGSinglePulse", "LGDoublePulse", "HGThreshold"} <= set(
        np.concatenate([ours[f"trigger_mode_{g}"].values for g in GAINS]).tolist()
    )
    assert any(", " in label for label in ours["trigger_origin"].values)


def test_real_state_values_and_flags(l0_dir):
    """What the real files say, as the report in docs/products.md states it."""
    flight = instrument_state(idexdask.read_l0(l0_dir / "imap_idex_l0_raw_20231218_v001.pkts"))
    assert flight.sizes["epoch"] == 14
    np.testing.assert_allclose(flight["reflectron_voltage"].values, 2011 * 1.4652, rtol=1e-12)
    assert not flight["instrument_state_flags"].values.any()  # everything nominal
    assert set(flight["trigger_origin"].values) == {"HS ADC0I trigger (TOF HG)"}
    groups = group_by_high_voltage(flight)
    assert groups.n_groups == 1 and groups.count.tolist() == [14]
    # the 2023 ground test: HV off, LVPS housekeeping not reported, FPGA DN 0
    ground = instrument_state(idexdask.read_l0(l0_dir / "non_compressed_2023_102_14_22_26.pkts"))
    flags = ground["instrument_state_flags"].values
    assert (flags == InstrumentStateFlag.OUT_OF_RANGE).all()
    names = ground["instrument_range_mask"].attrs["flag_meanings"].split()
    masks = ground["instrument_range_mask"].attrs["flag_masks"]
    out = {
        n
        for n, m in zip(names, masks, strict=True)
        if ground["instrument_range_mask"].values[0] & m
    }
    assert {"reflectron_voltage", "target_voltage", "fpga_temperature", "voltage_pos5v_bus"} <= out
    assert "temperature_1" not in out and "voltage_1v_bus" not in out
    assert set(ground["trigger_origin"].values) == {"SW trigger"}
    assert (group_by_high_voltage(ground).count == 4).all()


# ---------------------------------------------------------------- damaged input
@pytest.fixture(scope="module")
def flight(l0_dir):
    data = (l0_dir / "imap_idex_l0_raw_20231218_v001.pkts").read_bytes()
    return split_packets(data), idexdask.read_l0(data)


def test_out_of_range_value_sets_the_flag(flight):
    packets, reference = flight
    field = next(f for f in EVENT_HEADER_FIELDS if f.name == "idx__txhdrhvpshkch45")
    start = field.bit_offset // 8
    third = header_packets(packets)[2]
    forged = bytearray(packets[third])
    word = int.from_bytes(forged[start : start + 4], "big")
    forged[start : start + 4] = ((word & ~0xFFF) | 0xFFF).to_bytes(4, "big")  # reflectron DN 4095
    damaged = idexdask.read_l0(
        b"".join(packets[:third] + [with_crc(bytes(forged))] + packets[third + 1 :])
    )
    state = instrument_state(damaged)
    np.testing.assert_allclose(state["reflectron_voltage"].values[2], 4095 * 1.4652, rtol=1e-12)
    flags = state["instrument_state_flags"].values
    assert flags[2] == InstrumentStateFlag.OUT_OF_RANGE
    bit = [q.name for q in TABLE.housekeeping].index("reflectron_voltage")
    assert state["instrument_range_mask"].values[2] == 1 << bit
    assert not np.delete(flags, 2).any()
    # the next setting: grouping puts the forged event on its own
    groups = group_by_high_voltage(state)
    assert groups.n_groups == 2 and sorted(groups.count.tolist()) == [1, 13]


def test_header_crc_failure_marks_the_state_suspect(flight):
    packets, reference = flight
    first = header_packets(packets)[0]
    corrupt = bytearray(packets[first])
    corrupt[-1] ^= 0x01
    damaged = idexdask.read_l0(b"".join(packets[:first] + [bytes(corrupt)] + packets[first + 1 :]))
    assert damaged["quality_flags"].values[0] & QualityFlag.HEADER_CRC_MISMATCH
    state = instrument_state(damaged)
    assert state["instrument_state_flags"].values[0] == InstrumentStateFlag.HEADER_SUSPECT
    assert np.isfinite(state["reflectron_voltage"].values[0])  # values kept, marked suspect
    assert not state["instrument_state_flags"].values[1:].any()


def test_dropped_header_packet_never_raises(flight):
    """No header packet: the event's data are orphans: its data are orphans, the rest intact."""
    packets, reference = flight
    second = header_packets(packets)[1]
    damaged = idexdask.read_l0(b"".join(packets[:second] + packets[second + 1 :]))
    assert damaged.attrs["orphan_packets"] > 0
    state = instrument_state(damaged)
    ref = instrument_state(reference)
    kept = np.isin(ref["epoch"].values, state["epoch"].values)
    assert kept.sum() == state.sizes["epoch"] == 13
    for q in TABLE.housekeeping:
        np.testing.assert_array_equal(state[q.name].values, ref[q.name].values[kept])


def test_events_without_header_words_get_fill_and_a_flag(flight, trc_dir):
    """Events of a source without header (as concatenated with lab captures): fill, no error."""
    packets, reference = flight
    words = [q.word for q in TABLE.housekeeping] + ["idx__txhdrtrigid", "idx__txhdrblocks"]
    mixed = reference.copy()
    for word in set(words) | {f"idx__txhdr{g}trig{k}" for g in GAINS for k in ("mode", "ctrl1")}:
        values = mixed[word].values.astype(np.float64)  # as xr.concat with NaN-filled rows
        values[[3, 7]] = np.nan
        mixed[word] = ("epoch", values)
    state = instrument_state(mixed)
    flags = state["instrument_state_flags"].values
    assert (flags[[3, 7]] == InstrumentStateFlag.HEADER_MISSING).all()
    assert not np.delete(flags, [3, 7]).any()
    assert np.isnan(state["reflectron_voltage"].values[[3, 7]]).all()
    assert np.isnan(state["dead_time"].values[[3, 7]]).all()
    assert state["trigger_origin"].values[3] == "" and state["trigger_mode_hg"].values[3] == ""
    assert (
        state["trigger_origin_bits"].values[3] == -1
        and state["trigger_mode_hg_code"].values[3] == -1
    )
    np.testing.assert_array_equal(
        state["reflectron_voltage"].values[0],
        instrument_state(reference)["reflectron_voltage"].values[0],
    )
    # a lab capture has no header words at all
    capture = idexdask.read_trc(trc_dir)
    lab = instrument_state(capture)
    assert (lab["instrument_state_flags"].values == InstrumentStateFlag.HEADER_MISSING).all()
    assert np.isnan(lab["target_voltage"].values).all()
    assert group_by_high_voltage(lab).n_groups == 0


def test_table_validation_rejects_a_bad_entry():
    import copy

    from idexdask.config import load_yaml

    good = load_yaml("instrument_state.yaml")
    assert len(load_instrument_table(good).housekeeping) == 32
    cases = {
        "no units": lambda d: d["housekeeping"][0].pop("units"),
        "bit field past 32": lambda d: d["housekeeping"][0].update(shift=28),
        "text coefficient": lambda d: d["housekeeping"][3]["coefficients"].__setitem__(1, "1e-5"),
        "empty range": lambda d: d["housekeeping"][5].update(valid_min=2.0, valid_max=1.0),
        "unknown key": lambda d: d["housekeeping"][0].update(offset=1),
        "unknown voltage": lambda d: d["high_voltage_groups"].update(voltages=["anode_voltage"]),
    }
    for what, damage in cases.items():
        bad = copy.deepcopy(good)
        damage(bad)
        with pytest.raises(ConfigError):
            load_instrument_table(bad)
        assert what


# ---------------------------------------------------------------- in every product
@pytest.mark.slow  # a real submit with exports, ~20-40 s on 2 shared cores
def test_analyze_store_and_exports_carry_the_state(l0_dir, trc_dir, tmp_path):
    """analyze() adds the state; a real submit stores it and exports it to HDF5 and CDF."""
    import subprocess
    import sys
    from pathlib import Path

    import cdflib.xarray
    import h5py

    from idexdask.pipeline.export import open_campaign

    flight_file = l0_dir / "imap_idex_l0_raw_20231218_v001.pkts"
    ground_file = l0_dir / "non_compressed_2023_102_14_22_26.pkts"
    events = idexdask.read_l0(flight_file)
    analysed = idexdask.analyze(events)
    state = instrument_state(events)
    for name in state.data_vars:
        np.testing.assert_array_equal(analysed[name].values, state[name].values, err_msg=name)
    assert "reflectron_voltage" not in idexdask.analyze(idexdask.read_trc(trc_dir))  # no header

    store = tmp_path / "state.zarr"
    bin_dir = Path(sys.executable).parent
    run = subprocess.run(
        [str(bin_dir / "idexdask"), "submit", str(flight_file), str(ground_file),
         "-o", str(store), "--workers", "1", "--export", "hdf5,cdf"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    stored = open_campaign(store).load()
    rows = np.flatnonzero(np.isin(stored["epoch"].values, events["epoch"].values))
    assert rows.size == 14
    for name in ("reflectron_voltage", "temperature_1", "trigger_level_hg", "dead_time"):
        np.testing.assert_array_equal(stored[name].values[rows], state[name].values, err_msg=name)
    assert [str(v) for v in stored["trigger_mode_hg"].values[rows]] == state[
        "trigger_mode_hg"
    ].values.tolist()
    others = ~np.isin(np.arange(stored.sizes["epoch"]), rows)
    assert (stored["instrument_state_flags"].values[others]
            == InstrumentStateFlag.OUT_OF_RANGE).all()  # fmt: skip
    exports = Path(str(store) + ".exports")
    with h5py.File(exports / "imap_idex_l0_raw_20231218_v001.h5") as h5:
        found: dict[str, np.ndarray] = {}

        def collect(name: str, obj) -> None:  # visititems stops at a non-None return
            if isinstance(obj, h5py.Dataset):
                found[name.split("/")[-1]] = obj[()]

        h5.visititems(collect)
    np.testing.assert_array_equal(found["reflectron_voltage"], state["reflectron_voltage"].values)
    # the state is an analysis product: in the input's SDC-named L2a CDF (its date is
    # the UTC date of the input's first event)
    cdf = cdflib.xarray.cdf_to_xarray(str(exports / "imap_idex_l2a_sci_20231218_v001.cdf"))
    np.testing.assert_array_equal(cdf["target_voltage"].values, state["target_voltage"].values)
    assert cdf["target_voltage"].attrs["UNITS"] == "V"
    assert cdf["trigger_origin"].values.tolist() == state["trigger_origin"].values.tolist()
