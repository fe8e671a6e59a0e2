"""The numerics variant run of `make test` really runs other SIMD code paths.

Without this check a NumPy that ignored (or renamed) the disabled features would
make the second run of the numerics tests a silent copy of the first.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.numerics import variant_environment

PROBE = """
import json
import numba
import numpy as np
from numpy.lib.introspect import opt_func_info
from numba.core.codegen import JITCPUCodegen

info = opt_func_info(func_name="^exp$", signature="float64")["exp"]
target = next(iter(info.values()))["current"]
codegen = JITCPUCodegen("probe")
print(json.dumps({"exp": target, "numba_cpu": codegen._get_host_cpu_name(),
                  "numba_features": codegen._get_host_cpu_features()}))
"""


def _probe(env: dict[str, str]) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.numerics
def test_variant_environment_takes_effect():
    got = _probe(variant_environment())
    assert got["exp"].startswith("baseline"), got  # NumPy's exp: no AVX2/AVX-512 loop
    assert got["numba_cpu"] == "generic" and got["numba_features"] == "", got
