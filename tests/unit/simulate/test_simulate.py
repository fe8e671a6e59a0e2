"""Packet simulator (idexdask.simulate): packet structure, event model, decoder round trip."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import idexdask
from idexdask.errors import ConfigError, PacketError
from idexdask.packets.crc import crc16_ccitt_false
from idexdask.packets.layout import CHANNELS, SCIENCE_HEADER_FIELDS
from idexdask.packets.timing import MET_EPOCH_TT2000_NS
from idexdask.simulate import simulate_events, write_campaign, write_packets
from idexdask.simulate.model import SPECIES

HIGH, LOW = "time_high_sample_rate_index", "time_low_sample_rate_index"
UNCOMPRESSED_TYPES = [1, 2, 2, 2, 4, 4, 4, 8, 8, 8, 16, 32, 64]


@pytest.fixture(scope="module")
def sim():
    return simulate_events(4, seed=11)


def _split(data: bytes) -> list[bytes]:
    packets, pos = [], 0
    while pos < len(data):
        length = int.from_bytes(data[pos + 4 : pos + 6], "big") + 7
        packets.append(data[pos : pos + length])
        pos += length
    assert pos == len(data)
    return packets


def _fields(packet: bytes) -> dict[str, int]:
    value = int.from_bytes(packet[:44], "big")
    return {
        f.name: (value >> (44 * 8 - f.bit_offset - f.bits)) & ((1 << f.bits) - 1)
        for f in SCIENCE_HEADER_FIELDS
    }


def _waveform_dataset(waveforms: dict[str, np.ndarray], epoch: np.ndarray) -> xr.Dataset:
    return xr.Dataset(
        {
            spec.name: (("epoch", HIGH if spec.high_rate else LOW), waveforms[spec.name])
            for spec in CHANNELS
        },
        coords={"epoch": epoch},
    )


# --------------------------------------------------------------------------- packets


@pytest.mark.parametrize("compress", [False, True])
def test_every_packet_has_valid_primary_header_sync_and_crc(sim, compress):
    packets = _split(write_packets(sim.events, compress=compress, start_sequence=16380))
    for i, packet in enumerate(packets):
        word0, word1, word2 = (int.from_bytes(packet[j : j + 2], "big") for j in (0, 2, 4))
        assert word0 == (1 << 11) | 1424  # version 0, type 0, secondary header, APID
        assert word1 >> 14 == 3
        assert word1 & 0x3FFF == (16380 + i) % 16384  # counts on across the wrap
        assert word2 == len(packet) - 7
        assert packet[-4:-2] == b"\x33\x33"
        assert int.from_bytes(packet[-2:], "big") == crc16_ccitt_false(packet[:-2])
        assert (len(packet) - 48) % 4 == 0 and len(packet) - 48 <= 4032
        assert _fields(packet)["idx__sci0comp"] == int(compress)


def test_uncompressed_packet_order_fragments_and_sizes(sim):
    packets = _split(write_packets(sim.events))
    assert len(packets) == 13 * 4
    for event in range(4):
        group = packets[13 * event : 13 * (event + 1)]
        fields = [_fields(p) for p in group]
        assert [f["idx__sci0type"] for f in fields] == UNCOMPRESSED_TYPES
        assert len(group[0]) == 48 + 256
        for start in (1, 4, 7):  # the three TOF channels: 1008, 1008, 715 words
            assert [(len(p) - 48) // 4 for p in group[start : start + 3]] == [1008, 1008, 715]
            assert [f["idx__sci0fragoff"] for f in fields[start : start + 3]] == [0, 1008, 2016]
            assert [f["idx__sci0frag"] for f in fields[start : start + 3]] == [1, 1, 0]
        assert [(len(p) - 48) // 4 for p in group[10:]] == [256, 256, 256]
        assert all(f["idx__sci0pack"] == 1 for f in fields)
        assert {f["idx__sci0evtnum"] for f in fields} == {int(sim.events.idx__sci0evtnum[event])}


def test_uncompressed_words_pack_samples_msb_first_last_word_right_aligned():
    rng = np.random.default_rng(0)
    waveforms = {
        spec.name: rng.integers(0, 1 << spec.bits, (1, spec.samples)).astype(np.uint16)
        for spec in CHANNELS
    }
    packets = _split(write_packets(_waveform_dataset(waveforms, np.array([MET_EPOCH_TT2000_NS]))))
    tof = b"".join(p[44:-4] for p in packets[1:4])
    words = np.frombuffer(tof, ">u4").astype(np.int64)
    x = waveforms["TOF_High"][0].astype(np.int64)
    assert np.all(words >> 30 == 0)
    np.testing.assert_array_equal(
        words[:2730], (x[0:8190:3] << 20) | (x[1:8190:3] << 10) | x[2:8190:3]
    )
    assert words[2730] == (x[8190] << 10) | x[8191]  # pad slot first, then the last two
    low = np.frombuffer(packets[10][44:-4], ">u4").astype(np.int64)
    y = waveforms["Target_Low"][0].astype(np.int64)
    np.testing.assert_array_equal(low, (y[0::2] << 12) | y[1::2])


def test_compressed_streams_fragment_at_word_boundaries():
    rng = np.random.default_rng(1)
    # White noise over the full range forces verbatim subframes: 2568 words per TOF record.
    waveforms = {
        spec.name: rng.integers(0, 1 << spec.bits, (2, spec.samples)).astype(np.uint16)
        for spec in CHANNELS
    }
    ds = _waveform_dataset(waveforms, MET_EPOCH_TT2000_NS + np.array([0, 10**9]))
    packets = _split(write_packets(ds, compress=True))
    fields = [_fields(p) for p in packets]
    tof = [(f, p) for f, p in zip(fields, packets, strict=True) if f["idx__sci0type"] == 2]
    assert [f["idx__sci0fragoff"] for f, _ in tof[:3]] == [0, 1008, 2016]
    assert [f["idx__sci0frag"] for f, _ in tof[:3]] == [1, 1, 0]
    assert [(len(p) - 48) // 4 for _, p in tof[:3]] == [1008, 1008, 2568 - 2016]
    assert all(f["idx__sci0comp"] == 1 for f in fields)


def test_missing_header_fields_get_defaults_from_epoch():
    rng = np.random.default_rng(2)
    waveforms = {
        spec.name: rng.integers(0, 1 << spec.bits, (1, spec.samples)).astype(np.uint16)
        for spec in CHANNELS
    }
    met = 0x1A434781  # a real TIME32
    epoch = np.array([MET_EPOCH_TT2000_NS + met * 10**9 + 37 * 20_000])
    header = _split(write_packets(_waveform_dataset(waveforms, epoch)))[0]
    fields = _fields(header)
    assert fields["idx__sci0type"] == 1 and fields["idx__sci0cont"] == 127
    assert fields["idx__sci0ver"] == 9 and fields["idx__sci0time32"] == met
    assert int.from_bytes(header[50:52], "big") == met >> 16  # TIMESEC1
    assert int.from_bytes(header[52:54], "big") == met & 0xFFFF  # TIMESEC2
    assert int.from_bytes(header[54:56], "big") == 37  # TIMESUBS


def test_writer_rejects_bad_waveforms_and_fields(sim):
    bad = sim.events.copy()
    bad["TOF_Mid"] = bad["TOF_Mid"].copy(data=np.full(bad["TOF_Mid"].shape, 1024, np.uint16))
    with pytest.raises(PacketError):
        write_packets(bad)
    with pytest.raises(PacketError):
        write_packets(sim.events.drop_vars("Ion_Grid"))
    wide = sim.events.copy()
    wide["idx__txhdrtrigid"] = ("epoch", np.full(4, 1 << 10, np.uint16))
    with pytest.raises(PacketError):
        write_packets(wide)


# --------------------------------------------------------------------------- model


def test_events_follow_the_decoded_layout(sim):
    ev = sim.events
    assert ev["TOF_High"].dims == ("epoch", HIGH) and ev["TOF_High"].shape == (4, 8192)
    assert ev["Ion_Grid"].dims == ("epoch", LOW) and ev["Ion_Grid"].shape == (4, 512)
    assert ev["epoch"].dtype == np.int64 and np.all(np.diff(ev["epoch"].values) > 0)
    for spec in CHANNELS:
        assert ev[spec.name].dtype == np.uint16
        assert int(ev[spec.name].max()) < 1 << spec.bits
    for field in SCIENCE_HEADER_FIELDS:
        assert ev[field.name].dtype == field.dtype
    assert "aid" in ev and "idx__txhdrfswaidcopy" not in ev
    assert np.all(ev["idx__syncsci0pkt"] == 0x3333)
    sec = (ev.idx__txhdrtimesec1.values.astype(np.int64) << 16) + ev.idx__txhdrtimesec2.values
    expected = (
        MET_EPOCH_TT2000_NS + sec * 10**9 + ev.idx__txhdrtimesubs.values.astype(np.int64) * 20_000
    )
    np.testing.assert_array_equal(ev["epoch"].values, expected)
    # BLOCKS 0x3B7DF: 3 high-rate and 31 low-rate pre-trigger blocks; high-gain trigger.
    delay = ev.idx__txhdrsampdelay.values.astype(np.int64) & 0x3FF
    np.testing.assert_allclose(
        ev.time_high_sample_rate.values[:, 0], -(512 * 4 - (delay - 1)) / 260.0
    )
    np.testing.assert_allclose(ev.time_low_sample_rate.values[:, 0], -8 * 32 / 4.0625)


def test_truth_is_consistent_with_the_waveforms(sim):
    truth, ev = sim.truth, sim.events
    event = truth.line_event.values
    np.testing.assert_allclose(
        truth.line_center.values,
        truth.tof_t0.values[event]
        + truth.tof_stretch.values[event] * np.sqrt(truth.line_mass.values),
    )
    np.testing.assert_allclose(
        truth.line_mass.values, [SPECIES[s] for s in truth.line_species.values]
    )
    np.testing.assert_allclose(truth.composition.sum("species"), 1.0)
    for e in range(4):
        lines = truth.isel(line=np.flatnonzero(event == e))
        biggest = lines.isel(line=int(np.argmax(lines.line_area.values)))
        t = ev.time_high_sample_rate.values[e]
        mid = ev.TOF_Mid.values[e].astype(float)
        window = np.abs(t - float(biggest.line_center)) < 0.3
        peak_time = t[window][np.argmax(mid[window])]
        assert abs(peak_time - float(biggest.line_center)) < 0.1
        # Charge signal: the target rises after the impact time, baseline before it.
        t_low = ev.time_low_sample_rate.values[e]
        target = ev.Target_High.values[e].astype(float)
        before = target[t_low < float(truth.target_high_impact_time[e]) - 1].mean()
        assert abs(before - float(truth.Target_High_baseline[e])) < 3


def test_model_saturates_the_high_gain_on_big_lines():
    ev = simulate_events(3, seed=2, total_area=(300.0, 400.0)).events
    assert int(ev.TOF_High.max()) == 1023
    assert int(ev.TOF_Low.max()) < 1023


def test_simulation_is_reproducible():
    a = simulate_events(2, seed=7)
    b = simulate_events(2, rng=np.random.default_rng(7))
    c = simulate_events(2, seed=8)
    xr.testing.assert_identical(a.events, b.events)
    xr.testing.assert_identical(a.truth, b.truth)
    assert not np.array_equal(a.events.TOF_High.values, c.events.TOF_High.values)


@pytest.mark.parametrize(
    "options",
    [
        {"no_such_option": 1},
        {"species": ("Xx",)},
        {"line_sigma": (0.02, 0.01)},
        {"tof_gains": (1.0,)},
    ],
)
def test_invalid_model_options_raise_config_error(options):
    with pytest.raises(ConfigError):
        simulate_events(1, **options)


def test_zero_events():
    sim = simulate_events(0)
    assert sim.events.sizes["epoch"] == 0 and sim.truth.sizes["line"] == 0


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("compress", [False, True])
def test_campaign_decodes_to_the_simulated_events(tmp_path, compress):
    path = tmp_path / "campaign.pkts"
    sim = write_campaign(path, 3, compress=compress, seed=4)
    decoded = idexdask.read_l0(path)
    for name, variable in sim.events.variables.items():
        assert decoded[name].dtype == variable.dtype, name
        np.testing.assert_array_equal(decoded[name].values, variable.values, err_msg=name)


def _segments(draw, n: int, top: int) -> np.ndarray:
    """A waveform of n samples built from drawn segments (constant, noise, ramp, steps)."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    cuts = draw(st.lists(st.integers(0, n), max_size=5))
    # Cuts near subframe edges matter most to the encoder: add some at 64k +- 1.
    cuts += [
        64 * draw(st.integers(0, n // 64)) + d
        for d in draw(st.lists(st.sampled_from([-1, 0, 1]), max_size=2))
    ]
    bounds = sorted({0, n, *[min(max(c, 0), n) for c in cuts]})
    out = np.empty(n, dtype=np.int64)
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        length = hi - lo
        kind = draw(st.sampled_from(["const", "extreme", "noise", "uniform", "ramp", "steps"]))
        level = draw(st.integers(0, top))
        if kind == "const":
            seg = np.full(length, level)
        elif kind == "extreme":
            seg = np.full(length, draw(st.sampled_from([0, top])))
        elif kind == "noise":
            seg = level + np.rint(rng.normal(0, draw(st.sampled_from([0.5, 3.0, 40.0])), length))
        elif kind == "uniform":
            seg = rng.integers(0, top + 1, length)
        elif kind == "ramp":
            seg = level + np.arange(length) * draw(st.integers(-40, 40))
        else:
            seg = np.where(rng.random(length) < 0.5, 0, top)
        out[lo:hi] = np.clip(seg, 0, top)
    return out


@st.composite
def _events(draw):
    n = draw(st.integers(1, 2))
    waveforms = {
        spec.name: np.stack(
            [_segments(draw, spec.samples, (1 << spec.bits) - 1) for _ in range(n)]
        ).astype(np.uint16)
        for spec in CHANNELS
    }
    seconds = np.sort(
        draw(st.lists(st.integers(0, 2**32 - 1), min_size=n, max_size=n, unique=True))
    )
    epoch = MET_EPOCH_TT2000_NS + np.array(seconds, dtype=np.int64) * 10**9
    return _waveform_dataset(waveforms, epoch)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)
@given(events=_events(), compress=st.booleans())
def test_any_waveforms_round_trip_through_read_l0(tmp_path_factory, events, compress):
    path = tmp_path_factory.mktemp("rt") / "events.pkts"
    path.write_bytes(write_packets(events, compress=compress))
    decoded = idexdask.read_l0(path)
    np.testing.assert_array_equal(decoded["epoch"].values, events["epoch"].values)
    for spec in CHANNELS:
        np.testing.assert_array_equal(decoded[spec.name].values, events[spec.name].values)
    assert np.all(decoded["idx__sci0comp"].values == int(compress))
