"""``idexdask time2mass`` on a simulated L0 file and on the lab captures."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from idexdask.calibration.single_event import parse_lines
from idexdask.cli.time2mass import add_time2mass_parser, run_time2mass
from idexdask.errors import ConfigError, IdexDaskError
from idexdask.simulate import write_campaign


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_time2mass_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["time2mass", *argv])


@pytest.fixture(scope="module")
def sim_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("t2m") / "sim.pkts"
    sim = write_campaign(path, 4, seed=21, species_probability=0.9, total_area=(50.0, 150.0))
    return path, sim


def test_simulated_event_calibrates(sim_file, tmp_path, capsys):
    path, sim = sim_file
    png = tmp_path / "e0.png"
    rc = run_time2mass(_args(str(path), "--event", "0", "--plot", str(png)))
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "status             : calibrated" in text
    assert "coefficients" in text and "resid (ppm)" in text
    assert "Na+" in text or "K+" in text or "H+" in text
    a = float(sim.truth["tof_stretch"].values[0])
    line = next(s for s in text.splitlines() if s.startswith("stretch, shift"))
    assert abs(float(line.split(":")[1].split()[0]) / a - 1) < 1e-3
    assert png.exists() and png.stat().st_size > 5000


def test_direct_lines(sim_file, capsys):
    path, sim = sim_file
    tr = sim.truth
    sel = tr["line_event"].values == 0
    pairs = ",".join(f"{t:.4f}:{s}" for t, s in zip(tr["line_center"].values[sel],
                                                    tr["line_species"].values[sel], strict=True))
    rc = run_time2mass(_args(str(path), "--event", "0", "--lines", pairs))
    text = capsys.readouterr().out
    assert rc == 0 and "method             : lines" in text


def test_uncalibratable_event_exits_1(tmp_path, capsys):
    # one species only -> one line: no mass axis, exit 1, a clear status
    path = tmp_path / "one.pkts"
    write_campaign(path, 1, seed=4, species=("Na",), species_probability=1.0)
    rc = run_time2mass(_args(str(path), "--plot", str(tmp_path / "x.png")))
    text = capsys.readouterr().out
    assert rc == 1
    assert "uncalibrated" in text and "no mass axis" in text
    assert not (tmp_path / "x.png").exists()


def test_lab_captures(trc_dir, tmp_path, capsys):
    png = tmp_path / "lab.png"
    rc = run_time2mass(
        _args(str(trc_dir), "--event", "2", "--preset", "lab_peridot", "--plot", str(png))
    )
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "preset             : lab_peridot" in text and "Na+" in text
    assert png.exists()
    rc = run_time2mass(_args(str(trc_dir), "--event", "0"))
    assert rc == 1 and "no mass axis" in capsys.readouterr().out


def test_bad_inputs(tmp_path):
    with pytest.raises(ConfigError):
        parse_lines("5.0")
    with pytest.raises(ConfigError):
        parse_lines("5.0:Xx")
    t, m, lab = parse_lines("1.5:H, 7.0:22.99")
    assert lab[0] == "H+" and np.isclose(m[1], 22.99)
    with pytest.raises(IdexDaskError):
        run_time2mass(_args(str(tmp_path / "missing.pkts")))
