"""Child process for bench/decode.py: time the official L1a decoder on one file.

Runs in .venv-oracle.  Prints one JSON line: events, seconds, peak RSS (MiB, VmHWM).
"""

import json
import logging
import sys
import time
from pathlib import Path

logging.disable(logging.WARNING)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "oracle"))
from official_l1a import furnish_time_kernels  # noqa: E402

furnish_time_kernels()
from imap_processing.idex.idex_l1a import PacketParser  # noqa: E402

start = time.perf_counter()
data = PacketParser(sys.argv[1]).data
seconds = time.perf_counter() - start
science = data.get("l1a_sci-10days")
events = 0 if science is None else int(science.sizes["epoch"])
# VmHWM: ru_maxrss would include the parent's footprint inherited at fork
rss = (
    int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])
    / 1024
)
print(json.dumps({"events": events, "seconds": seconds, "rss_mib": rss}))
