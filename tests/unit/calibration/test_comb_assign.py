"""The compiled line assignment of the campaign's joint fit against its NumPy reference."""

from __future__ import annotations

import numpy as np

from idexdask.calibration.comb_assign import assign, assign_events
from idexdask.calibration.shift_search import EventLines


def _events(rng: np.random.Generator, model_rel: np.ndarray, n: int) -> list[tuple]:
    """Events whose lines sit near the comb at a shift, with noise lines, empty
    events, a line half-way between two close comb lines (equal distances) and
    lines two comb ions claim."""
    lines = []
    for e in range(n):
        t0 = rng.uniform(-0.5, 0.5)
        near = model_rel[rng.random(model_rel.size) < 0.6] + t0
        t = np.concatenate([near + rng.normal(0.0, 0.004, near.size),
                            rng.uniform(0.0, 12.0, rng.integers(0, 6))])
        if e % 7 == 3:
            t = np.zeros(0)
        if e % 5 == 1:  # equidistant from the two closest comb lines
            t = np.append(t, t0 + 0.5 * (model_rel[4] + model_rel[5]))
        lines.append((np.sort(t), t0))
    return lines


def test_assign_events_makes_the_references_choices():
    """Every event's matches (comb index, line) are those of the per-event
    reference, in its order: integer choices, so equal, not within a tolerance."""
    rng = np.random.default_rng(21)
    comb_s = np.sqrt(np.array([1.008, 12.0, 15.995, 22.99, 23.985, 24.0, 27.977, 39.0, 56.0]))
    shape = np.array([1.45, 0.01, -0.0005])
    model_rel = sum(shape[k] * comb_s ** (k + 1) for k in range(3))
    events = _events(rng, model_rel, 60)
    flat = EventLines.from_lists([(t, np.ones(t.size)) for t, _ in events])
    t0 = np.array([s for _, s in events])
    t0[9] = np.nan  # an event without a shift matches nothing
    chosen = np.array([e for e in range(len(events)) if e % 4 != 2], dtype=np.int64)
    for tol in (0.002, 0.01, 0.3):
        ev, comb, line = assign_events(flat.t, flat.offsets, chosen, t0, model_rel, tol)
        expected_ev, expected_comb, expected_line = [], [], []
        for e in chosen:
            t = flat.t[flat.offsets[e]:flat.offsets[e + 1]]
            k_idx, l_idx = assign(t, t0[e] + model_rel, tol)
            expected_ev += [e] * k_idx.size
            expected_comb += list(k_idx)
            expected_line += list(l_idx + flat.offsets[e])
        assert ev.tolist() == expected_ev
        assert comb.tolist() == expected_comb
        assert line.tolist() == expected_line
        assert len(set(zip(ev.tolist(), line.tolist(), strict=True))) == line.size  # once each
    wide = assign_events(flat.t, flat.offsets, chosen, t0, model_rel, 0.3)[0].size
    assert 0 < assign_events(flat.t, flat.offsets, chosen, t0, model_rel, 0.002)[0].size < wide


def test_a_line_two_ions_claim_goes_to_the_closer_or_the_earlier():
    model_rel = np.array([1.0, 1.1, 2.0])
    t = np.array([1.06, 2.3])  # 0.06 from ion 0, 0.04 from ion 1
    offsets = np.array([0, 2, 3, 3])
    tt = np.append(t, 1.05)  # event 1: 1.05, equidistant from ions 0 and 1
    ev, comb, line = assign_events(tt, offsets, np.array([0, 1, 2]), np.zeros(3), model_rel, 0.5)
    assert list(zip(ev.tolist(), comb.tolist(), line.tolist(), strict=True)) == [
        (0, 1, 0), (0, 2, 1), (1, 0, 2)]
