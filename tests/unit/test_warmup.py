"""`idexdask compile`: the warm-up runs the pipeline's compiled kernels once."""

from __future__ import annotations

import subprocess
import sys

from idexdask.cli import main

#: kernels every campaign task runs: the warm-up must compile each of them
KERNELS = [
    ("idexdask.analysis.fitting.engine_compiled", "lm_compiled"),
    ("idexdask.packets.assemble", "_decode_jobs"),  # the Rice decoder is compiled into it
    ("idexdask.analysis.gain_merge_kernels", "merge_rows"),
    ("idexdask.analysis.peaks", "_search_rows"),
    ("idexdask.analysis.signal_quality.kernels", "trace_rows"),
    ("idexdask.analysis.signal_quality.kernels", "baseline_bounds"),
    ("idexdask.calibration.comb_search", "scan_events"),
    ("idexdask.calibration.comb_search", "finish_events"),
]

_PROBE = """
import importlib, sys
from idexdask.pipeline.warmup import compile_kernels
kernels = {kernels!r}
assert not [n for m, n in kernels if getattr(importlib.import_module(m), n).signatures]
compile_kernels()
missing = [m + "." + n for m, n in kernels if not getattr(importlib.import_module(m), n).signatures]
print("missing:", missing)
"""


def test_the_warm_up_compiles_every_kernel_a_task_runs():
    """In a fresh process (this one's kernels may have run in other tests):
    nothing is compiled before the warm-up, every listed kernel after it."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(kernels=KERNELS)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "missing: []" in result.stdout


def test_compile_command(capsys):
    assert main(["compile"]) == 0
    assert "compiled and cached the kernels in" in capsys.readouterr().out
