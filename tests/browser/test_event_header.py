"""The event header and the studio's calibration text on real and simulated stores (issue 17).

No browser: these are the HTML and text the pages show, built from the stores the
browser tests use.
"""

from __future__ import annotations

import numpy as np

from idexdask.config import load_config
from idexdask.dashboard.data import StoreData
from idexdask.dashboard.event_header import (
    accelerator_mass_per_megavolt,
    calibration_text,
    event_header,
)
from idexdask.dashboard.studio import StudioSession


def test_lab_header_shows_the_pickup_speed_charge_and_mass(trc_store):
    data = StoreData(trc_store)
    for row in range(data.n_events):
        text = event_header(data, row)
        assert "nan" not in text.lower()
        event = data.event(row).event
        speed = float(event["qd_speed"].values)
        assert "grain speed (pickup tubes)" in text and f"{speed:.4g} ±" in text
        assert "grain charge (pickup)" in text and "fC" in text
        assert "no target channel" in text
        # the mass per MV of accelerating voltage from the stored charge and speed
        per_mv = accelerator_mass_per_megavolt(float(event["qd_charge"].values), speed)
        assert f"{per_mv:.3g} kg × U/MV" in text


def test_accelerator_mass_is_kinetic_energy_over_speed_squared():
    # 1 fC through 1 MV is 1e-9 J; at 1 km/s, m = 2E/v² = 2e-9 / 1e6 kg
    assert np.isclose(accelerator_mass_per_megavolt(1.0, 1.0), 2e-15, rtol=1e-12)
    assert np.isnan(accelerator_mass_per_megavolt(np.nan, 9.0))


def test_flight_header_says_what_is_missing_instead_of_nan(l0_store):
    data = StoreData(l0_store)
    for row in range(data.n_events):
        text = event_header(data, row)
        assert "nan" not in text.lower(), text
        assert "impact speed" in text and "dust mass" in text and "pickup" not in text


def test_manual_calibration_shows_as_manual(sim_store):
    data = StoreData(sim_store)
    scalars = data.scalars()
    row = int(scalars.loc[scalars["mass_calibration_status"] == "calibrated", "event"].iloc[0])
    studio = StudioSession(data, row, load_config())
    lines = data.lines(row)
    named = lines[(lines["species"] != "") & np.isfinite(lines["mass"])]
    assert len(named) >= 3
    for line in named.itertuples():
        studio.assign_species(float(line.center), str(line.species))
    studio.calibrate()
    event = studio.refit().dataset.isel(epoch=0)
    assert str(event["mass_calibration_method"].values) == "manual"
    text = calibration_text(event)
    assert text.startswith("calibrated") and "manual: fitted to hand-assigned lines" in text
    # the stored (automatic) calibration does not say manual
    assert "manual" not in calibration_text(data.event(row).event)
