"""RSF convention, per-event composition, minerals from synthetic spectra, batch products."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from idexdask.calibration.ions import ion_mass
from idexdask.composition import (
    PRESET_NAMES,
    CompositionStatus,
    composition_products,
    load_mineral_library,
    load_rsf_presets,
    load_species_library,
    molar_fractions,
    plot_ternary,
    rsf_values,
)
from idexdask.errors import AnalysisError, ConfigError

ELEMENTS = ("Na", "Mg", "Al", "Si", "K", "Ca", "Ti", "Cr", "Mn", "Fe", "Ni")


def cation_fractions(atoms: dict[str, float]) -> dict[str, float]:
    """Molar fractions of the quantified elements of a formula (O, S, ... dropped)."""
    kept = {e: float(n) for e, n in atoms.items() if e in ELEMENTS}
    total = sum(kept.values())
    return {e: n / total for e, n in kept.items()}


def mineral_atoms(name: str) -> dict[str, float]:
    lib = load_mineral_library()
    return dict(next(m for m in lib.minerals if m.name == name).atoms)


def synthetic_peaks(
    fractions: dict[str, float],
    *,
    preset: str = "lab",
    rng: np.random.Generator,
    scale: float = 1.0e4,
    noise: float = 0.03,
    mass_jitter_u: float = 0.03,
    contamination: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Peak list of one impact: fraction x RSF, split over isotopes by natural abundance."""
    library = load_species_library()
    symbols = list(fractions)
    rsf, _ = rsf_values(preset, symbols)
    mass, area = [], []
    for symbol, rsf_e in zip(symbols, rsf, strict=True):
        total = scale * fractions[symbol] * rsf_e  # area ∝ abundance x RSF
        for k in library.lines_of(symbol):
            line = library.lines[k]
            mass.append(line.mass_u)
            area.append(total * line.abundance)
    if contamination:  # lines of species that are identified but not quantified
        for formula, amount in (("H", 0.5), ("C", 0.2), ("H3O", 0.1), ("SiO", 0.05)):
            mass.append(ion_mass(formula))
            area.append(amount * scale)
    mass = np.array(mass) + mass_jitter_u * rng.standard_normal(len(mass))
    area = np.array(area)
    err = noise * area + 1.0
    area = area + err * rng.standard_normal(area.size)
    return mass, area, err


def products_for(spectra, config=None, **kwargs):
    event = np.concatenate([np.full(len(m), i) for i, (m, _, _) in enumerate(spectra)])
    peaks = xr.Dataset(
        {
            "peak_event": ("peak", event.astype(np.int64)),
            "peak_mass": ("peak", np.concatenate([s[0] for s in spectra])),
            "peak_area": ("peak", np.concatenate([s[1] for s in spectra])),
            "peak_area_err": ("peak", np.concatenate([s[2] for s in spectra])),
        }
    )
    return composition_products(peaks, len(spectra), config, **kwargs)


# --------------------------------------------------------------------------- RSF


def test_every_preset_loads_and_is_relative_to_si():
    presets = load_rsf_presets()
    assert set(PRESET_NAMES) <= set(presets)
    for name in PRESET_NAMES:
        rsf, rel = rsf_values(name, ELEMENTS)
        assert np.all(rsf > 0) and rsf[ELEMENTS.index("Si")] == 1.0
        assert presets[name].provenance
    lab = dict(zip(ELEMENTS, rsf_values("lab", ELEMENTS)[0], strict=True))
    assert (lab["Mg"], lab["Fe"], lab["K"], lab["Na"]) == (7.83, 2.43, 39.3, 22.6)
    # Mg/Si/Fe presets: own Mg, Si, Fe; the lab table for every other element
    suda = dict(zip(ELEMENTS, rsf_values("suda_fo87", ELEMENTS)[0], strict=True))
    assert (suda["Mg"], suda["Fe"], suda["Na"]) == (4.93, 1.50, lab["Na"])
    assert np.all(rsf_values("none", ELEMENTS)[0] == 1.0)


def test_rsf_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown RSF preset"):
        rsf_values("pumapia", ELEMENTS)
    with pytest.raises(ConfigError, match="no RSF for S"):
        rsf_values("lab", ("Mg", "S"))
    bad = tmp_path / "rsf.yaml"
    bad.write_text("presets:\n  x: {values: {Mg: 2.0, Zz: 1.0}}\n")
    with pytest.raises(ConfigError, match="unknown element symbol 'Zz'"):
        load_rsf_presets(str(bad))
    bad.write_text("presets:\n  x: {values: {Mg: -2.0}}\n")
    with pytest.raises(ConfigError, match="> 0"):
        load_rsf_presets(str(bad))
    bad.write_text("presets:\n  x: {fallback: y, values: {Mg: 2.0}}\n")
    with pytest.raises(ConfigError, match="unknown preset 'y'"):
        load_rsf_presets(str(bad))
    with pytest.raises(ConfigError, match="unknown RSF preset"):
        composition_products({"peak_event": [], "peak_mass": [], "peak_area": []}, 1,
                             {"rsf_preset": "nope"})  # fmt: skip


def test_rsf_convention_divides():
    area = np.array([[100.0, 100.0, 100.0]])
    var = np.zeros_like(area)
    x1, _, n1, _ = molar_fractions(area, var, np.array([1.0, 1.0, 1.0]))
    x2, _, n2, _ = molar_fractions(area, var, np.array([2.0, 1.0, 1.0]))
    assert n2[0, 0] == pytest.approx(n1[0, 0] / 2)  # doubling the RSF halves the abundance
    assert x2[0, 0] / x2[0, 1] == pytest.approx(0.5 * x1[0, 0] / x1[0, 1])
    assert np.nansum(x2) == pytest.approx(1.0)


def test_rsf_convention_end_to_end(tmp_path):
    rng = np.random.default_rng(3)
    spec = synthetic_peaks({"Mg": 0.5, "Si": 0.5}, preset="none", rng=rng, noise=0.0,
                           mass_jitter_u=0.0, contamination=False)  # fmt: skip
    base = products_for([spec], {"rsf_preset": "none"})
    doubled_file = tmp_path / "rsf.yaml"
    doubled_file.write_text("presets:\n  two: {default: 1.0, values: {Mg: 2.0}}\n")
    doubled = products_for([spec], {"rsf_preset": "two", "rsf_file": str(doubled_file)})
    mg, si = (base.composition.sel(element=e).item() for e in ("Mg", "Si"))
    mg2, si2 = (doubled.composition.sel(element=e).item() for e in ("Mg", "Si"))
    assert (mg / si) == pytest.approx(1.0, rel=1e-2)
    assert (mg2 / si2) == pytest.approx(0.5 * mg / si, rel=1e-6)


def test_none_preset_gives_raw_area_fractions():
    # monoisotopic Na and Al, all isotopes of Mg: fractions = area fractions
    mg = [ion_mass(f"{a}Mg") for a in (24, 25, 26)]
    mass = np.array([ion_mass("Na"), ion_mass("Al"), *mg])
    area = np.array([10.0, 30.0, 47.38, 6.01, 6.61])
    ds = composition_products(
        {"peak_event": np.zeros(5, int), "peak_mass": mass, "peak_area": area}, 1,
        {"rsf_preset": "none"},
    )  # fmt: skip
    comp = ds.composition.isel(epoch=0)
    total = area.sum()
    assert comp.sel(element="Na").item() == pytest.approx(10.0 / total, rel=1e-3)
    assert comp.sel(element="Al").item() == pytest.approx(30.0 / total, rel=1e-3)
    assert comp.sel(element="Mg").item() == pytest.approx(60.0 / total, rel=2e-3)
    assert np.isnan(ds.composition_err).all()  # no area errors given


# --------------------------------------------------------------------------- minerals


CASES = {
    "fo90": ({"Mg": 1.8, "Fe": 0.2, "Si": 1.0}, {"forsterite"}),
    "enstatite": (mineral_atoms("enstatite"), {"enstatite"}),
    "diopside": (mineral_atoms("diopside"), {"diopside"}),
    "albite": (mineral_atoms("albite"), {"albite"}),
    "anorthite": (mineral_atoms("anorthite"), {"anorthite"}),
}


@pytest.mark.parametrize("preset", ["lab", "suda_fo87"])
def test_known_minerals_recovered(preset):
    rng = np.random.default_rng(42)
    names = list(CASES)
    truths = [cation_fractions(CASES[n][0]) for n in names]
    spectra = [synthetic_peaks(t, preset=preset, rng=rng) for t in truths]
    ds = products_for(spectra, {"rsf_preset": preset})
    assert (ds.composition_status == CompositionStatus.OK).all()
    for i, (name, truth) in enumerate(zip(names, truths, strict=True)):
        comp = ds.composition.isel(epoch=i)
        assert float(comp.sum()) == pytest.approx(1.0)
        for element, value in truth.items():
            if value >= 0.05:  # major elements within 10 % relative
                assert comp.sel(element=element).item() == pytest.approx(value, rel=0.10), (
                    name, element,
                )  # fmt: skip
        assert ds.best_mineral.values[i] in CASES[name][1], name
        err = ds.composition_err.isel(epoch=i)
        assert np.all(err.values >= 0) and err.sel(element="Si").item() > 0
    fo = ds.fo_number.values
    assert fo[0] == pytest.approx(90.0, abs=3.0)
    assert np.isnan(fo[1:]).all()  # pyroxenes and feldspars are not olivine-like
    assert list(ds.best_mixture.values[0]) == ["forsterite", "fayalite"]
    assert ds.best_mixture_fraction.values[0] == pytest.approx(0.9, abs=0.03)
    assert ds.mg_number.values[0] == pytest.approx(0.9, abs=0.03)
    assert 0 < ds.mg_number_err.values[0] < 0.05
    # ternary coordinates sum to 1
    assert np.allclose(ds.ternary_mg_si_fe.sum("mg_si_fe"), 1.0)
    assert ds.ternary_mg_si_fe.values[0] == pytest.approx([0.6, 1 / 3, 0.2 / 3], abs=0.03)


def test_two_mineral_mixture_recovered():
    rng = np.random.default_rng(7)
    fo = cation_fractions(mineral_atoms("forsterite"))
    an = cation_fractions(mineral_atoms("anorthite"))
    f = 0.65
    mixed = {e: f * fo.get(e, 0.0) + (1 - f) * an.get(e, 0.0) for e in set(fo) | set(an)}
    ds = products_for([synthetic_peaks(mixed, rng=rng, noise=0.02)])
    assert list(ds.best_mixture.values[0]) == ["forsterite", "anorthite"]
    assert ds.best_mixture_fraction.values[0] == pytest.approx(f, abs=0.06)
    assert ds.best_mixture_score.values[0] < ds.best_mineral_score.values[0]


def test_uncertainty_propagation_matches_monte_carlo():
    rng = np.random.default_rng(11)
    truth = cation_fractions(mineral_atoms("diopside"))
    spectra = [synthetic_peaks(truth, rng=rng, noise=0.05, contamination=False)
               for _ in range(400)]  # fmt: skip
    ds = products_for(spectra)
    for element in ("Mg", "Si", "Ca"):
        values = ds.composition.sel(element=element).values
        predicted = np.median(ds.composition_err.sel(element=element).values)
        assert np.std(values) == pytest.approx(predicted, rel=0.2), element


# --------------------------------------------------------------------------- bad input


def test_status_and_nan_for_bad_events():
    rng = np.random.default_rng(5)
    good = synthetic_peaks(cation_fractions(mineral_atoms("enstatite")), rng=rng)
    unidentified = (np.array([100.5, 150.5]), np.array([5.0, 3.0]), np.array([0.1, 0.1]))
    only_h = (np.array([ion_mass("H")]), np.array([5.0]), np.array([0.1]))
    uncal = (np.full(3, np.nan), np.array([1.0, 2.0, 3.0]), np.ones(3))
    empty = (np.zeros(0), np.zeros(0), np.zeros(0))
    spectra = [good, empty, unidentified, only_h, uncal, good]
    calibrated = np.array([True, True, True, True, True, False])
    ds = products_for(spectra, calibrated=calibrated)
    expected = [
        CompositionStatus.OK, CompositionStatus.NO_LINES, CompositionStatus.UNIDENTIFIED,
        CompositionStatus.UNIDENTIFIED, CompositionStatus.UNCALIBRATED,
        CompositionStatus.UNCALIBRATED,
    ]  # fmt: skip
    assert list(ds.composition_status.values) == expected
    bad = ds.isel(epoch=slice(1, None))
    for name in ("composition", "composition_err", "mg_number", "ternary_mg_si_fe", "fo_number",
                 "best_mineral_score", "best_mixture_fraction"):  # fmt: skip
        assert np.isnan(bad[name].values).all(), name
    assert (bad.best_mineral.values == "").all()
    assert ds.peak_species.values.tolist().count("") >= 5
    assert ds.composition_status.attrs["flag_meanings"].split()[2] == "unidentified"


def test_empty_and_malformed_input():
    ds = composition_products({"peak_event": [], "peak_mass": [], "peak_area": []}, 3)
    assert (ds.composition_status == CompositionStatus.NO_LINES).all()
    assert ds.sizes["epoch"] == 3 and ds.sizes["peak"] == 0
    with pytest.raises(AnalysisError, match="lack"):
        composition_products({"peak_event": [0], "peak_mass": [1.0]}, 1)
    with pytest.raises(AnalysisError, match="outside"):
        composition_products({"peak_event": [2], "peak_mass": [1.0], "peak_area": [1.0]}, 1)


# --------------------------------------------------------------------------- simulator


def test_simulator_truth_line_list():
    """The simulator's truth lines (main isotopes only, no RSF) give its composition weights."""
    from idexdask.simulate.model import simulate_events

    truth = simulate_events(12, seed=4).truth
    species = list(truth.species.values)
    peaks = xr.Dataset(
        {
            "peak_event": ("peak", truth.line_event.values),
            "peak_mass": ("peak", truth.line_mass.values),
            "peak_area": ("peak", truth.line_area.values),
        }
    )
    # exact masses: a small mass_sigma separates CO+/28Si+ and MgO+/40Ca+
    cfg = {"composition": {"rsf_preset": "none", "mass_sigma_u": 0.002}}
    ds = composition_products(peaks, truth.sizes["epoch"], cfg)
    assert list(ds.peak_species.values) == [
        {"Mg": "24Mg", "Si": "28Si", "K": "39K", "Ca": "40Ca", "Fe": "56Fe", "C": "12C"}.get(s, s)
        for s in truth.line_species.values
    ]
    library = load_species_library()
    main = {ln.element: ln.abundance for ln in library.lines if ln.element and ln.main}
    weights = truth.composition.values
    for i in range(truth.sizes["epoch"]):
        n = {e: weights[i, species.index(e)] / main[e] for e in ELEMENTS if e in species}
        total = sum(n.values())
        if total == 0:
            assert ds.composition_status.values[i] == CompositionStatus.UNIDENTIFIED
            continue
        for e, value in n.items():
            assert ds.composition.sel(element=e).values[i] == pytest.approx(value / total, rel=1e-6)


# --------------------------------------------------------------------------- batch, plot


def test_batch_matches_single_events():
    rng = np.random.default_rng(9)
    names = ["forsterite", "albite", "enstatite", "anorthite"] * 50
    spectra = [synthetic_peaks(cation_fractions(mineral_atoms(n)), rng=rng) for n in names]
    batch = products_for(spectra)
    for i in (0, 57, 199):
        single = products_for([spectra[i]])
        np.testing.assert_allclose(batch.composition.values[i], single.composition.values[0])
        assert batch.best_mineral.values[i] == single.best_mineral.values[0]
    assert (batch.best_mineral.values == np.array(names)).mean() > 0.95
    assert batch.kappa.dims == ("epoch",) and np.isfinite(batch.kappa).all()


def test_plot_ternary_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(1)
    spectra = [synthetic_peaks(cation_fractions(mineral_atoms(n)), rng=rng)
               for n in ("forsterite", "enstatite", "fayalite")]  # fmt: skip
    ds = products_for(spectra)
    path = tmp_path / "ternary.png"
    fig = plot_ternary(
        ds.ternary_mg_si_fe.values, ("Mg", "Si", "Fe"),
        references={"Fo": (2 / 3, 1 / 3, 0.0), "En": (0.5, 0.5, 0.0)},
        color=ds.mg_number.values, path=path, title="Mg-Si-Fe",
    )  # fmt: skip
    assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_unknown_rsf_preset_is_rejected_on_load():
    from idexdask.composition import composition_settings
    from idexdask.config import load_config
    from idexdask.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown RSF preset 'bogus'"):
        composition_settings(load_config({"composition": {"rsf_preset": "bogus"}}))
