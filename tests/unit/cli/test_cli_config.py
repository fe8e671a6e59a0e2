"""`idexdask config`: the merged, validated configuration as YAML; bad configs exit 2."""

from __future__ import annotations

import yaml

from idexdask.cli import main
from idexdask.config import load_config


def test_prints_every_knob(capsys):
    assert main(["config"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown == load_config()
    assert shown["analysis"]["quality"]["baseline_window_us"] == [-7.0, -5.0]
    assert shown["analysis"]["velocity"]["rise_time_curve"]["log_a"] == 1.27


def test_config_file_then_set_overrides(tmp_path, capsys):
    path = tmp_path / "user.yaml"
    path.write_text("analysis:\n  peaks: {height_sigma: 6, prominence_sigma: 4}\n"
                    "cluster: {workers: 3}\n")
    argv = ["config", "--config", str(path), "--set", "analysis.peaks.height_sigma=7",
            "--set", "analysis.quality.polarity={QD_1: -1}"]
    assert main(argv) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["analysis"]["peaks"]["height_sigma"] == 7  # --set wins over --config
    assert shown["analysis"]["peaks"]["prominence_sigma"] == 4
    assert shown["analysis"]["quality"]["polarity"] == {"QD_1": -1}
    assert shown["cluster"]["workers"] == 3
    assert shown["decode"]["keep_samples_high"] == 8192


def test_one_key_stays_nested(capsys):
    assert main(["config", "analysis.peaks", "--set", "analysis.peaks.height_sigma=6"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert list(shown) == ["analysis"] and list(shown["analysis"]) == ["peaks"]
    assert shown["analysis"]["peaks"]["height_sigma"] == 6
    assert main(["config", "cluster.workers"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == {"cluster": {"workers": 2}}
    assert main(["config", "analysis.nope"]) == 2
    assert "no configuration key 'analysis.nope'" in capsys.readouterr().out


def test_bad_analysis_key_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("analysis:\n  peaks: {height_sigmaa: 6}\n")
    assert main(["config", "--config", str(path)]) == 2
    assert "unknown configuration key 'analysis.peaks.height_sigmaa'" in capsys.readouterr().out
    assert main(["config", "--set", "analysis.quality.flat_top_min_run=1"]) == 2
    assert "analysis.quality.flat_top_min_run" in capsys.readouterr().out
    assert main(["config", "--set", "analysis.peaks.height_sigma"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().out


def test_submit_rejects_a_bad_analysis_key_before_any_work(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("analysis:\n  velocity: {channels: [Target_Hi]}\n")
    l0 = tmp_path / "in.pkts"
    l0.write_bytes(b"")
    store = tmp_path / "out.zarr"
    assert main(["submit", str(l0), "-o", str(store), "--config", str(path)]) == 2
    assert "analysis.velocity.channels" in capsys.readouterr().out
    assert not store.exists()


def test_submit_set_overrides_reach_the_run_config(tmp_path, capsys):
    """submit --set KEY=VALUE: validated like --config, before any work."""
    l0 = tmp_path / "in.pkts"
    l0.write_bytes(b"")
    store = tmp_path / "out.zarr"
    argv = ["submit", str(l0), "-o", str(store), "--set", "analysis.peaks.height_sigmaa=6"]
    assert main(argv) == 2
    assert "analysis.peaks.height_sigmaa" in capsys.readouterr().out
    assert not store.exists()

    import argparse

    from idexdask.cli.config import config_from_args

    args = argparse.Namespace(
        config=None, set=["analysis.peaks.height_sigma=6", "pipeline.batch_events=64"],
        batch_events=None,
    )
    config = config_from_args(args)
    assert config["analysis"]["peaks"]["height_sigma"] == 6
    assert config["pipeline"]["batch_events"] == 64
    args.batch_events = 32  # an explicit flag wins over --set
    assert config_from_args(args)["pipeline"]["batch_events"] == 32
