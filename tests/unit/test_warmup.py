"""`idexdask compile`: the warm-up compiles every kernel a first campaign runs.

The probe runs in a fresh process (this one's kernels may have run in other
tests): the warm-up, then a lab campaign (the shared peridot captures) and a
flight campaign (the shared real L0 files) through ``run_campaign`` with the
embedded cluster's worker in that process, so that every task of ``submit``
(packs, region writes, the campaign step, exports) runs where its kernels can
be seen.  Every numba dispatcher of idexdask is then listed with the
signatures it holds: any signature the campaigns added to those the warm-up
left is a kernel a worker would compile on a user's first run.  The check
needs no list of kernels: a new kernel, or a new signature of one, that the
warm-up misses fails it.
"""

from __future__ import annotations

import json
import subprocess
import sys

from idexdask.cli import main

#: kernels of every kind of task the campaigns must reach (decode, Rice, gain
#: merge with a saturated stretch, line search and fits, bootstrap calibration,
#: the campaign step's shift search and targeted search): the probe shows that
#: the campaigns ran the paths the comparison is about.  Only kernels called
#: from Python are listed: a kernel loaded from the cache carries the kernels it
#: calls compiled in (the targeted search's matched filter), which then hold no
#: signature of their own in that process.
REACHED = [
    "idexdask.analysis.fitting.engine_compiled.lm_compiled",
    "idexdask.packets.assemble._decode_jobs",  # the Rice decoder is compiled into it
    "idexdask.analysis.gain_merge_kernels.merge_rows",
    "idexdask.analysis.peaks._search_rows",
    "idexdask.analysis.signal_quality.kernels.trace_rows",
    "idexdask.analysis.signal_quality.kernels.formula_interval",
    "idexdask.calibration.comb_search.scan_events",
    "idexdask.calibration.shift_search._joint_totals",
    "idexdask.calibration.shift_search._best_shifts",
    "idexdask.composition.targeted_kernel.search_events",
]

_PROBE = """
import json, sys, tempfile
from pathlib import Path
from numba.core.dispatcher import Dispatcher

def signatures():
    found = {}
    for name, module in list(sys.modules.items()):
        if name.startswith("idexdask"):
            for value in list(vars(module).values()):
                if isinstance(value, Dispatcher):
                    key = value.py_func.__module__ + "." + value.py_func.__qualname__
                    found[key] = sorted(map(str, value.signatures))
    return found

from idexdask.pipeline.warmup import compile_kernels
compile_kernels()
warm = signatures()
from idexdask.config import load_config
from idexdask.pipeline.cluster import ClusterOptions
from idexdask.pipeline.runner import run_campaign
options = ClusterOptions(workers=1, threads_per_worker=1, memory_limit="0", dashboard="",
                         processes=False)
runs = []
with tempfile.TemporaryDirectory() as tmp:
    for name, inputs in INPUTS.items():
        summary = run_campaign(inputs, Path(tmp) / (name + ".zarr"), load_config({}),
                               cluster=options)
        runs.append([name, summary.events_done, len(summary.failures)])
after = signatures()
added = {k: sorted(set(v) - set(warm.get(k, []))) for k, v in after.items()}
print("PROBE" + json.dumps({
    "runs": runs,
    "reached": sorted(k for k, v in after.items() if v),
    "added": {k: v for k, v in added.items() if v},
}))
"""


def test_a_first_lab_and_flight_campaign_compile_nothing_after_the_warm_up(trc_dir, l0_dir):
    inputs = {"lab": [str(trc_dir)], "flight": sorted(str(p) for p in l0_dir.glob("*.pkts"))}
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.replace("INPUTS", repr(inputs))],
        capture_output=True, text=True, timeout=900, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(s for s in result.stdout.splitlines() if s.startswith("PROBE"))
    probe = json.loads(line[len("PROBE"):])
    # the probe means something: both campaigns processed their events without failures ...
    assert [(name, failures) for name, _, failures in probe["runs"]] == [
        ("lab", 0), ("flight", 0)]
    assert all(done > 0 for _, done, _ in probe["runs"])
    # ... and reached every kind of kernel
    assert [k for k in REACHED if k not in probe["reached"]] == []
    # every kernel signature the campaigns ran was compiled by the warm-up
    assert probe["added"] == {}


def test_compile_command(capsys):
    assert main(["compile"]) == 0
    assert "compiled and cached the kernels in" in capsys.readouterr().out
