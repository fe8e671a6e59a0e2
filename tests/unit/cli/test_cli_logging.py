"""The CLI keeps distributed's own INFO chatter (e.g. its tracebacks when a cluster
shuts down) out of the terminal, even though distributed is imported after it starts."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

SCRIPT = """
import contextlib, io, logging, sys
from idexdask.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    main(sys.argv[1:])
import distributed  # as the submit/demo commands do, after the CLI set the levels
print(logging.getLogger("distributed").getEffectiveLevel())
print(logging.getLogger("distributed.batched").getEffectiveLevel())
"""


@pytest.mark.parametrize(("flags", "level"), [([], logging.ERROR), (["-vv"], logging.INFO)])
def test_distributed_levels_survive_its_import(flags, level):
    out = subprocess.run([sys.executable, "-c", SCRIPT, *flags, "config"], check=True,
                         capture_output=True, text=True).stdout.split()
    assert [int(v) for v in out[-2:]] == [level, level]
