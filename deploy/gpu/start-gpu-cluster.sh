#!/bin/bash
# A scheduler and one dask-cuda worker per GPU on this machine, then the campaign
# on them.  Needs: pip install 'idexdask[gpu]'  (dask-cuda, cupy) and NVIDIA GPUs.
#
#   deploy/gpu/start-gpu-cluster.sh /data/idex/l0 /scratch/campaign.zarr
#
# Workers offer the resource GPU=1; `idexdask submit --gpu` routes every task to
# them.  (On a single machine `idexdask submit --gpu` alone starts a
# LocalCUDACluster itself; this script is for a scheduler shared by several
# machines: run the `dask cuda worker` line on each GPU node.)
set -euo pipefail
INPUT=${1:?input}
STORE=${2:?store}
SCHED=${SCHED:-$PWD/scheduler-gpu.json}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1
# keep glibc's adaptive malloc in the workers (deploy/dask/idexdask-workers.yaml)
export DASK_CONFIG=${DASK_CONFIG:-$(dirname "$0")/../dask}

dask scheduler --scheduler-file "$SCHED" &
SCHED_PID=$!
while [ ! -f "$SCHED" ]; do sleep 1; done
dask cuda worker --scheduler-file "$SCHED" --resources "GPU=1" \
     --rmm-pool-size 0.8 --nthreads 1 &
WORKER_PID=$!
trap 'kill $WORKER_PID $SCHED_PID' EXIT
sleep 10
idexdask submit "$INPUT" -o "$STORE" --scheduler "$SCHED" --gpu --export hdf5,cdf
