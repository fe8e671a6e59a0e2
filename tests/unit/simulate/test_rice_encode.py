"""Rice/Golomb encoder (idexdask.simulate.rice): bit layout, parameter choice, round trip."""

from __future__ import annotations

import numpy as np
import pytest

from idexdask.errors import PacketError
from idexdask.packets.rice import decode_channel
from idexdask.simulate import simulate_events
from idexdask.simulate.rice import choose_parameters, encode_channel, encode_channels

ESCAPE = 47


def _parse(stream: bytes, bits: int, n_samples: int) -> dict:
    """Walk a stream with a deliberately plain reader; report what each subframe used."""
    b = "".join(f"{byte:08b}" for byte in stream)
    pos = 0

    def take(n: int) -> int:
        nonlocal pos
        value = int(b[pos : pos + n], 2)
        pos += n
        return value

    predictors, ks, escapes, samples = [], [], 0, []
    for _ in range(n_samples // 64):
        p = take(2)
        predictors.append(p)
        k = take(4) if p >= 2 else None
        ks.append(k)
        if p == 0:
            samples += [take(bits)] * 64
            continue
        if p == 1:
            samples += [take(bits) for _ in range(64)]
            continue
        sub = [take(bits) for _ in range(p - 1)]
        while len(sub) < 64:
            q = b.index("1", pos) - pos
            pos += q + 1
            if q == ESCAPE:
                e = take(bits + 2)
                e -= (e >> (bits + 1)) << (bits + 2)
                escapes += 1
            else:
                high = q // 2 if q % 2 == 0 else -(q + 1) // 2
                e = high * 2 ** (k + 1) + take(k + 1)
            sub.append(e + (sub[-1] if p == 2 else 2 * sub[-1] - sub[-2]))
        samples += sub
    return {
        "predictors": predictors,
        "k": ks,
        "escapes": escapes,
        "samples": np.array(samples),
        "bits_used": pos,
        "padding": b[pos:],
    }


def _cost(x: np.ndarray, p: int, k: int, bits: int) -> int:
    """Reference size (bits) of one subframe under predictor p and parameter k."""
    if p == 0:
        return 2 + bits if np.all(x == x[0]) else 10**9
    if p == 1:
        return 2 + 64 * bits
    e = np.diff(x, n=p - 1)
    total = 2 + 4 + (p - 1) * bits
    for r in e.tolist():
        h = r >> (k + 1)
        q = 2 * h if h >= 0 else -2 * h - 1
        total += ESCAPE + 1 + bits + 2 if q >= ESCAPE else q + 1 + k + 1
    return total


RNG = np.random.default_rng(20240601)


@pytest.mark.parametrize("bits", [10, 12])
def test_constant_subframes_use_predictor_0(bits):
    x = np.repeat(np.array([0, (1 << bits) - 1, 17, 17]), 64)
    parsed = _parse(encode_channel(x, bits), bits, x.size)
    assert parsed["predictors"] == [0, 0, 0, 0]
    assert parsed["bits_used"] == 4 * (2 + bits)
    np.testing.assert_array_equal(parsed["samples"], x)


@pytest.mark.parametrize("bits", [10, 12])
def test_uncorrelated_data_is_stored_verbatim(bits):
    x = RNG.integers(0, 1 << bits, 512)
    parsed = _parse(encode_channel(x, bits), bits, x.size)
    assert set(parsed["predictors"]) == {1}
    np.testing.assert_array_equal(parsed["samples"], x)


def test_noisy_baseline_uses_first_order_prediction():
    # A slowly wandering baseline: first differences are small, second ones larger.
    x = 512 + np.cumsum(RNG.integers(-2, 3, 8192))
    x = np.clip(x, 0, 1023)
    parsed = _parse(encode_channel(x, 10), 10, x.size)
    assert np.mean(np.array(parsed["predictors"]) == 2) > 0.9
    np.testing.assert_array_equal(parsed["samples"], x)


@pytest.mark.parametrize(
    "x",
    [
        np.arange(512) * 7 % 4096,  # ramp (wrapping once)
        np.tile(10 + np.arange(64) * (np.arange(64) + 1) // 2, 8),  # parabola per subframe
    ],
    ids=["ramp", "parabola"],
)
def test_ramps_and_parabolas_use_second_order_prediction(x):
    parsed = _parse(encode_channel(x, 12), 12, x.size)
    smooth = [
        p
        for i, p in enumerate(parsed["predictors"])
        if np.ptp(np.diff(x[64 * i : 64 * i + 64], 2)) == 0
    ]
    assert smooth and set(smooth) == {3}
    np.testing.assert_array_equal(parsed["samples"], x)


@pytest.mark.parametrize("bits", [10, 12])
def test_large_jumps_are_escaped(bits):
    top = (1 << bits) - 1
    x = np.full(128, 3)
    x[20:40] = top  # two full-scale jumps in a flat subframe
    x[64:] = np.arange(64) % 2 + 100
    x[100] = 0
    parsed = _parse(encode_channel(x, bits), bits, x.size)
    assert parsed["escapes"] >= 2
    assert parsed["predictors"][0] in (2, 3)
    np.testing.assert_array_equal(parsed["samples"], x)
    np.testing.assert_array_equal(decode_channel(encode_channel(x, bits), bits, x.size), x)


@pytest.mark.parametrize("bits,n", [(10, 8192), (12, 512), (12, 64), (10, 640)])
def test_streams_are_word_padded_with_zeros(bits, n):
    x = np.clip(np.rint(RNG.normal(300, 20, n)), 0, (1 << bits) - 1).astype(int)
    stream = encode_channel(x, bits)
    parsed = _parse(stream, bits, n)
    assert len(stream) % 4 == 0
    assert len(parsed["padding"]) < 32
    assert set(parsed["padding"]) <= {"0"}


def test_choice_is_the_cheapest_of_all_predictors_and_k():
    subframes = np.concatenate(
        [
            RNG.integers(0, 1024, (4, 64)),
            np.clip(512 + np.cumsum(RNG.integers(-3, 4, (4, 64)), axis=1), 0, 1023),
            np.clip(np.rint(np.arange(64) * RNG.uniform(-9, 9, (4, 1)) + 500), 0, 1023),
            np.full((1, 64), 77),
            np.where(RNG.random((3, 64)) < 0.1, 1023, 5),
        ]
    ).astype(np.int64)
    predictor, k, n_bits = choose_parameters(subframes, 10)
    for row, p, kk, size in zip(subframes, predictor, k, n_bits, strict=True):
        best = min(_cost(row, pp, q, 10) for pp in range(4) for q in range(16))
        assert size == best == _cost(row, p, kk, 10)


def test_compressed_is_smaller_than_raw_on_realistic_data():
    events = simulate_events(2, seed=5).events
    for name, bits, raw_words in [
        ("TOF_High", 10, 2731),
        ("TOF_Low", 10, 2731),
        ("Ion_Grid", 12, 256),
    ]:
        for row in events[name].values:
            stream = encode_channel(row, bits)
            assert len(stream) < 0.6 * 4 * raw_words
            np.testing.assert_array_equal(decode_channel(stream, bits, row.size), row)


def test_batch_encoding_matches_single_records():
    x = np.clip(np.rint(RNG.normal(512, 30, (3, 8192))), 0, 1023).astype(np.uint16)
    assert encode_channels(x, 10) == [encode_channel(row, 10) for row in x]


def test_partial_last_subframe_repeats_the_last_sample():
    x = np.arange(100) % 50
    stream = encode_channel(x, 12)
    np.testing.assert_array_equal(decode_channel(stream, 12, 100), x)


@pytest.mark.parametrize(
    "x,bits",
    [
        (np.array([0, 1024]), 10),
        (np.array([-1, 5]), 12),
        (np.array([0.5, 1.0]), 12),
        (np.zeros(64), 11),
    ],
)
def test_invalid_input_is_rejected(x, bits):
    with pytest.raises(PacketError):
        encode_channel(x, bits)
