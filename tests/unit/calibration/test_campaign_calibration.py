"""Campaign-level mass calibration on simulated campaigns (issue 19).

The simulator draws each event's lines at ``t = t0 + a sqrt(m)``; here every
event of a campaign shares ``a`` (one geometry) and gets its own ``t0`` jitter.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from idexdask.calibration import load_calibration_settings, mass_axis
from idexdask.calibration.campaign import CampaignSettings, calibrate_campaign
from idexdask.simulate import simulate_events
from idexdask.workflow import analyze

STRETCH = 1.4437  # µs/sqrt(u), inside the flight range 1.30-1.65


def _campaign(**options):
    drawn = {"tof_stretch": (STRETCH, STRETCH), "tof_t0": (0.0, 0.1), **options}
    s = simulate_events(40, seed=3, **drawn)
    out = analyze(s.events)
    return s, out, json.loads(out["mass_calibration"].attrs["campaign_calibration"])["0"]


@pytest.fixture(scope="module")
def weak_campaign():
    """Few species per event (12 % each): many events cannot calibrate alone."""
    return _campaign(species_probability=0.12)


def test_shared_stretch_recovered(weak_campaign):
    s, out, summary = weak_campaign
    assert summary["calibrated"]
    # the joint scan's stretch, and the fitted shape's mean slope between 1 and
    # 56 u: both within 0.05 % of the truth (timing 1 ns on 1-11 µs lines)
    assert abs(summary["stretch_us_per_sqrt_u"] / STRETCH - 1) < 5e-4
    a = np.array(summary["shape"])
    s1, s2 = 1.0, np.sqrt(56.0)
    slope = sum(a[k] * (s2 ** (k + 1) - s1 ** (k + 1)) for k in range(3)) / (s2 - s1)
    assert abs(slope / STRETCH - 1) < 5e-4
    assert summary["rms_residual_ns"] < 3.0


def test_weak_events_calibrated_with_correct_masses(weak_campaign):
    s, out, summary = weak_campaign
    method = out["mass_calibration_method"].values
    st = out["mass_calibration_status"].values
    # events that do not calibrate alone (own bootstrap: fewer than min_matches)
    # are calibrated by the campaign's shape and their own shift
    own_alone = np.array([m == "event" for m in method])
    by_campaign = method == "campaign"
    assert by_campaign.sum() >= 15 and by_campaign.sum() > own_alone.sum()
    assert np.all(st[by_campaign] == "calibrated")
    # every matched line of a campaign-calibrated event lands within 0.1 u of
    # the species it was drawn from (truth line masses)
    tr = s.truth
    masses = (tr.line_center.values - tr.tof_t0.values[tr.line_event.values]) ** 2 / STRETCH**2
    coeffs = out["mass_calibration"].values
    for e in np.nonzero(by_campaign)[0]:
        sel = out["peak_event"].values == e
        good = sel & np.isfinite(out["peak_calibration_residual"].values)
        got = mass_axis(coeffs[[e]], out["peak_center"].values[good][None, :])[0]
        truth = masses[tr.line_event.values == e]
        assert got.size >= 2
        assert np.all(np.min(np.abs(got[:, None] - truth[None, :]), axis=1) < 0.1), e
    # their shifts agree with the drawn t0 (the shape's constant is shared)
    t0 = coeffs[by_campaign, 0]
    assert np.max(np.abs((t0 - t0.mean()) - (tr.tof_t0.values[by_campaign]
                                              - tr.tof_t0.values[by_campaign].mean()))) < 0.005


def test_off_comb_campaign_stays_uncalibrated():
    """A campaign whose stretch lies outside the preset's range (2.2 against
    1.30-1.65): its lines align with no comb, no event gets a mass axis."""
    _, out, summary = _campaign(tof_stretch=(2.2, 2.2))
    assert not summary["calibrated"]
    assert np.all(out["mass_calibration_status"].values == "uncalibrated")
    assert np.all(np.isnan(out["mass_calibration"].values))
    assert np.all(np.isnan(out["peak_mass"].values))


def test_random_line_lists_stay_uncalibrated():
    """Random line times (no comb at all) in 30 events: no campaign shape."""
    rng = np.random.default_rng(4)
    settings = load_calibration_settings("flight")
    event = np.repeat(np.arange(30), 8)
    t = rng.uniform(0.0, 12.0, event.size)
    res = calibrate_campaign(event, t, rng.uniform(1, 100, event.size), 30, settings,
                             CampaignSettings())
    assert not res.calibrated
    assert np.all(res.method == "none") and np.all(np.isnan(res.coefficients))


def test_result_independent_of_event_order():
    s = simulate_events(12, seed=8, tof_stretch=(STRETCH, STRETCH), tof_t0=(0.0, 0.1))
    out = analyze(s.events)
    good = out["peak_status"].values <= 2
    ev, c, a = (out[v].values[good] for v in ("peak_event", "peak_center", "peak_area"))
    settings = load_calibration_settings("flight")
    base = calibrate_campaign(ev, c, a, 12, settings)
    perm = np.random.default_rng(1).permutation(12)
    inverse = np.argsort(perm)
    shuffled = calibrate_campaign(inverse[ev], c, a, 12, settings)
    assert base.calibrated and shuffled.calibrated
    # same groups of lines, other order of events: the same least-squares
    # problem up to summation order (1e-12 µs ~ rounding of ~1e-16 relative)
    np.testing.assert_allclose(shuffled.coefficients[inverse], base.coefficients,
                               rtol=0, atol=1e-9)


def test_two_high_voltage_settings_of_one_input_get_separate_scales():
    """Events of one input at two reflectron voltages are calibrated in two groups (issue 22).

    The first half keeps the simulator's reflectron word (2011 DN = 2946 V), the
    second is set to 1709 DN = 2504 V: 442 V apart, far beyond the 25 V tolerance
    of configs/instrument_state.yaml.  The lines are those of one geometry, so only
    the grouping can separate the two halves.
    """
    drawn = {"tof_stretch": (STRETCH, STRETCH), "tof_t0": (0.0, 0.1)}
    s = simulate_events(40, seed=3, **drawn)
    events = s.events.copy()
    word = events["idx__txhdrhvpshkch45"].values.copy()
    second = np.arange(word.size) >= word.size // 2
    word[second] = (word[second] & np.uint32(0xFFFFF000)) | np.uint32(0x6AD)
    events["idx__txhdrhvpshkch45"] = ("epoch", word)
    out = analyze(events)
    reflectron = out["reflectron_voltage"].values
    assert np.ptp(reflectron[~second]) == 0 and np.ptp(reflectron[second]) == 0
    assert reflectron[second][0] < reflectron[~second][0] - 400  # V
    groups = json.loads(out["mass_calibration"].attrs["campaign_calibration"])
    assert sorted(groups) == ["0:hv0", "0:hv1"]
    # hv0 is the lower setting (groups numbered by increasing voltage)
    events_of = {key: set(value["events"]) for key, value in groups.items()}
    assert events_of["0:hv0"] <= set(np.flatnonzero(second).tolist())
    assert events_of["0:hv1"] <= set(np.flatnonzero(~second).tolist())
    assert all(value["calibrated"] for value in groups.values())
    assert min(len(v) for v in events_of.values()) >= 15  # most events of each half


def test_one_high_voltage_setting_keeps_the_input_group():
    """Every simulated event at one setting: the single group keeps the input's label."""
    s = simulate_events(6, seed=5)
    out = analyze(s.events)
    groups = json.loads(out["mass_calibration"].attrs["campaign_calibration"])
    assert list(groups) == ["0"]


def test_scan_takes_the_events_that_calibrate_alone_first():
    """Of more events than the scan takes, those with their own calibration come
    first (the surest anchors), then the richest in lines: a lab campaign of 300
    replicated impacts otherwise scanned 100 copies of one that does not calibrate."""
    from idexdask.calibration.campaign import _scan_events

    rng = np.random.default_rng(5)
    sizes = np.r_[np.full(140, 12), np.full(10, 5)]
    lines = [(np.sort(rng.uniform(1.0, 6.0, k)), np.ones(k)) for k in sizes]
    event = np.repeat(np.arange(sizes.size), sizes)
    area = np.ones(event.size)
    own = np.full((sizes.size, 4), np.nan)
    own[140:] = [-0.5, 0.515, 0.0, 0.0]
    by_lines = _scan_events(lines, area, event, 100)
    anchored = _scan_events(lines, area, event, 100, own)
    assert len(by_lines) == len(anchored) == 100 and anchored == sorted(anchored)
    assert not set(range(140, 150)) & set(by_lines)
    assert set(range(140, 150)) <= set(anchored)
    few = event < 80  # no more events than the scan takes: all of them
    assert _scan_events(lines[:80], area[few], event[few], 100, own) == list(range(80))


def test_own_disagreement_of_all_events_at_once_is_each_events():
    """The share of self-calibrated events the campaign's shape does not describe,
    from one batched mass inversion, counts the events the per-event inversion
    counts: events not matched, NaN masses, and lines placed exactly at the
    0.5 u limit by the event's own inversion (decided by that inversion)."""
    from types import SimpleNamespace

    from idexdask.calibration.campaign import _MASS_TOL, _own_disagree

    rng = np.random.default_rng(8)
    n = 80
    own = np.tile([0.1, 1.45, 0.01, 0.0], (n, 1)) + rng.normal(0.0, 0.002, (n, 4))
    own[rng.random(n) < 0.2, :2] = np.nan  # not calibrated on their own
    own[5, 3] = np.nan  # a NaN higher term counts as zero
    ev, t, m = [], [], []
    for e in range(n - 3):  # the last three events have no line in the joint fit
        k = rng.integers(1, 8)
        times = np.sort(rng.uniform(1.0, 20.0, k))
        mine = mass_axis(np.nan_to_num(own[[e]]), times[None, :])[0]
        masses = mine + rng.choice([0.0, 0.1, 0.6, -0.7], k, p=[0.7, 0.2, 0.05, 0.05])
        if e % 9 == 4:  # a line exactly at the limit, either side, by its own inversion
            masses[0] = mine[0] + _MASS_TOL * (1 if e % 2 else -1)
        if e == 11:
            times[-1] = np.nan
        ev += [e] * k
        t += list(times)
        m += list(masses)
    rows = (np.array(ev), np.array(t), np.array(m), np.zeros(len(ev)))
    ok = np.flatnonzero(np.all(np.isfinite(own[:, :2]), axis=1))
    expected = 0
    for e in ok:  # the definition, event by event
        sel = rows[0] == e
        if not sel.any():
            expected += 1
            continue
        mine = mass_axis(np.nan_to_num(own[[e]]), rows[1][sel][None, :])[0]
        expected += bool(np.any(~(np.abs(mine - rows[2][sel]) <= _MASS_TOL)))
    share = _own_disagree(own, SimpleNamespace(rows=rows))
    assert 0 < expected < ok.size
    assert round(share * ok.size) == expected
