"""Decoding throughput: idexdask against the official pipeline, same inputs, one run.

Usage: ``python bench/decode.py [--events 5000] [--copies 700]``

Inputs, made in a temporary directory (nothing is written to the repo):

* real-copies (plain / rice): the real uncompressed and compressed files
  (4 events each) repeated with fresh timestamps and event numbers, CRCs
  recomputed, so that every copy is a distinct event;
* the real 20231218 file as it is (14 events among 494 packets of all APIDs);
* simulated campaigns of ``--events`` events, uncompressed and Rice-compressed.

Each measurement runs in a fresh process pinned to one core (peak RSS is that
process's VmHWM; idexdask's figure is the best of three decodes).  idexdask is
timed after a warm-up call (numba kernels compiled and cached); "lazy" leaves
the float64 time axes to be computed on access, "full" also materialises them.
The official pipeline (imap-processing 1.0.40 in .venv-oracle) decodes about
3 events/s, so it is timed on a prefix of each large input (``--official-events``
events) and its rate per event is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ORACLE = REPO / ".venv-oracle" / "bin" / "python"
DATA = Path(os.environ.get("IDEXDASK_DATA", REPO.parent / "shared" / "data")) / "idex-l0"
ONE_CORE = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
}

CHILD = r"""
import json, sys, time
from idexdask import read_l0
path, mode = sys.argv[1], sys.argv[2]
read_l0(path)  # warm-up: load compiled kernels
best = float("inf")
for _ in range(3):
    start = time.perf_counter()
    ds = read_l0(path)
    if mode == "full":
        ds["time_high_sample_rate"].values; ds["time_low_sample_rate"].values
    best = min(best, time.perf_counter() - start)
    del ds
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"events": int(read_l0(path).sizes["epoch"]), "seconds": best,
                  "rss_mib": int(hwm.split()[1]) / 1024}))
"""


def split_packets(data: bytes) -> list[bytes]:
    packets, pos = [], 0
    while pos + 6 <= len(data):
        length = int.from_bytes(data[pos + 4 : pos + 6], "big") + 7
        packets.append(data[pos : pos + length])
        pos += length
    return packets


def is_science(packet: bytes) -> bool:
    return ((packet[0] & 7) << 8 | packet[1]) == 1424 and len(packet) > 44


def replicate(source: Path, copies: int) -> bytes:
    """Repeat a file's science events with fresh time stamps and event numbers."""
    from idexdask.packets.crc import crc16_ccitt_false

    packets = split_packets(source.read_bytes())
    out = []
    for copy in range(copies):
        for packet in packets:
            p = bytearray(packet)
            evt = (int.from_bytes(p[20:22], "big") + copy * 4) % 65536
            p[20:22] = evt.to_bytes(2, "big")
            if p[16] == 1:  # event header: TIMESEC2 and TXHDREVTNUM
                p[52:54] = ((copy * 7) % 65536).to_bytes(2, "big")
                p[58:60] = p[20:22]
            p[-2:] = crc16_ccitt_false(bytes(p[:-2])).to_bytes(2, "big")
            out.append(bytes(p))
    return b"".join(out)


def prefix_events(data: bytes, n_events: int) -> bytes:
    """The first ``n_events`` events (header + data packets) of a file."""
    packets = split_packets(data)
    kept, headers = [], 0
    for packet in packets:
        if is_science(packet) and packet[16] == 1:
            headers += 1
            if headers > n_events:
                break
        kept.append(packet)
    return b"".join(kept)


def run(cmd: list[str]) -> dict:
    env = {**os.environ, **ONE_CORE}
    env.pop("PYTHONPATH", None)
    taskset = ["taskset", "-c", "0"] if sys.platform == "linux" else []
    result = subprocess.run(taskset + cmd, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="simulated events per campaign")
    parser.add_argument("--copies", type=int, default=700, help="copies of the real 4-event files")
    parser.add_argument("--official-events", type=int, default=24)
    args = parser.parse_args()

    from idexdask.simulate import write_campaign

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = {
            "real copies, plain": replicate(
                DATA / "non_compressed_2023_102_14_22_26.pkts", args.copies
            ),
            "real copies, rice": replicate(DATA / "compressed_2023_102_14_24_55.pkts", args.copies),
            "real 20231218 file": (DATA / "imap_idex_l0_raw_20231218_v001.pkts").read_bytes(),
        }
        for compress in (False, True):
            path = tmp / f"sim_{compress}.pkts"
            write_campaign(path, args.events, compress=compress, seed=11)
            inputs[f"simulated, {'rice' if compress else 'plain'}"] = path.read_bytes()
        for label, data in inputs.items():
            path = tmp / (label.replace(" ", "_").replace(",", "") + ".pkts")
            path.write_bytes(data)
            small = tmp / ("official_" + path.name)
            small.write_bytes(prefix_events(data, args.official_events))
            lazy = run([sys.executable, "-c", CHILD, str(path), "lazy"])
            full = run([sys.executable, "-c", CHILD, str(path), "full"])
            official = run([str(ORACLE), str(REPO / "bench" / "_official_decode.py"), str(small)])
            mb = len(data) / 1e6
            ours_rate = lazy["events"] / lazy["seconds"]
            theirs_rate = official["events"] / official["seconds"]
            rows.append(
                (
                    label,
                    lazy["events"],
                    mb,
                    ours_rate,
                    mb / lazy["seconds"],
                    full["events"] / full["seconds"],
                    lazy["rss_mib"],
                    full["rss_mib"],
                    official["events"],
                    theirs_rate,
                    official["rss_mib"],
                    ours_rate / theirs_rate,
                )
            )
            print(f"measured {label}", file=sys.stderr, flush=True)

    print(
        "| input | events | MB | idexdask ev/s (lazy) | MB/s | ev/s (full time axes) | "
        "peak RSS MiB (lazy/full) | official events timed | official ev/s | "
        "official RSS MiB | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:,.0f} | {r[4]:,.0f} | {r[5]:,.0f} | "
            f"{r[6]:.0f}/{r[7]:.0f} | {r[8]} | {r[9]:.2f} | {r[10]:.0f} | {r[11]:,.0f}x |"
        )


if __name__ == "__main__":
    main()
