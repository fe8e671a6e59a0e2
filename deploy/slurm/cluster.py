"""Start a Dask cluster on SLURM with dask-jobqueue and keep it up for `idexdask submit`.

Install once (not an idexdask dependency):  pip install dask-jobqueue

    python deploy/slurm/cluster.py --jobs 8 --scheduler-file $SCRATCH/idex-scheduler.json &
    idexdask submit /data/idex/l0 -o $SCRATCH/campaign.zarr \
        --scheduler $SCRATCH/idex-scheduler.json --export hdf5,cdf

Each SLURM job runs one single-threaded worker process per core (the decode and
fits are vectorised inside a task, so processes, not threads, use the cores).
The store must be on a file system every node mounts, with working flock.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from dask_jobqueue import SLURMCluster

DASK_CONFIG_DIR = Path(__file__).resolve().parent.parent / "dask"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4, help="SLURM jobs (nodes or slices)")
    parser.add_argument("--cores", type=int, default=16, help="cores per job")
    parser.add_argument("--memory", default="64GiB", help="memory per job")
    parser.add_argument("--walltime", default="04:00:00")
    parser.add_argument("--queue", default=None, help="partition")
    parser.add_argument("--account", default=None)
    parser.add_argument("--scheduler-file", required=True)
    args = parser.parse_args()

    cluster = SLURMCluster(
        cores=args.cores,
        processes=args.cores,  # one single-threaded worker process per core
        memory=args.memory,
        walltime=args.walltime,
        queue=args.queue,
        account=args.account,
        job_script_prologue=[
            "export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1",
            # keep glibc's adaptive malloc (deploy/dask/idexdask-workers.yaml)
            f"export DASK_CONFIG={DASK_CONFIG_DIR}",
        ],
    )
    cluster.scale(jobs=args.jobs)
    with open(args.scheduler_file, "w") as stream:
        json.dump({"address": cluster.scheduler_address}, stream)
    print(f"scheduler {cluster.scheduler_address}  dashboard {cluster.dashboard_link}", flush=True)
    try:
        while True:
            time.sleep(60)
    except KeyboardInterrupt:
        cluster.close()


if __name__ == "__main__":
    main()
