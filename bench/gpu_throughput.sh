#!/bin/bash
# Issue 30's GPU figures on one CUDA GPU, in about ten minutes, one after the other (each alone on
# the GPU): `pytest tests/gpu` (the graph step's losses against the eager step's, a resumed graph run
# against an uninterrupted one, every model on CUDA eager and as a graph, a step a graph cannot hold,
# no wait for the GPU between reports), bench/dcgan_speed.py (canonical, canonical as a CUDA graph,
# and gantry's loop with compile=graph, at batch 64, 128, 512 and 2048), then with compile=eager at
# 64 for the comparison, the graph in bf16 and in bf16 channels-last at 64 and 128 (what `auto` may
# pick on a GPU), bench/job_speed.py (a real job against the synthetic rate) and
# bench/sample_speed.py (sampling against the PNG-encode ceiling).
#
#     bash bench/gpu_throughput.sh       # from the repository root, gantry[worker,dev] installed
#     bash bench/gpu_throughput.sh 1     # tests/gpu and the speed tables (at most 460 s)
#     bash bench/gpu_throughput.sh 2     # bf16 channels-last, the job and sampling (at most 210 s)
#
# Logs stay in $OUT (default /tmp/gpu_throughput); each step's tail is printed. PY: the python
# (default python3). Where .whl/ holds wheels (bench/gpu_wheels.sh: for a machine that has CUDA torch
# but no package index), they are installed first into /tmp/gantry-site, which goes first on the path.
set -u
PART=${1:-all}
PY=${PY:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/gantry-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/gantry-site PATH=/tmp/gantry-site/bin:$PATH
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
L=${OUT:-/tmp/gpu_throughput}; mkdir -p "$L"
nvidia-smi > "$L/nvidia-smi.txt" 2>&1
run() {  # run NAME SECONDS COMMAND...: the command's output in $L/NAME.log, its tail printed
    local name=$1 limit=$2; shift 2
    echo "== $name ($*)"
    timeout "$limit" "$@" > "$L/$name.log" 2>&1
    echo "exit $?"
    tail -n 14 "$L/$name.log"
}
if [ "$PART" != 2 ]; then
    # The step's equivalence first (should the limit cut the run short), then every model's jobs.
    run tests_gpu 210 $PY -m pytest -q -ra -p no:cacheprovider \
        tests/gpu/test_cuda_training.py tests/gpu/test_cuda_jobs.py  # no -x: one call tells all
    run dcgan_speed 150 $PY bench/dcgan_speed.py --steps 300
    run dcgan_speed_eager 40 $PY bench/dcgan_speed.py --batch 64 --steps 300 --compile eager
    run dcgan_speed_bf16 60 $PY bench/dcgan_speed.py --batch 64 --batch 128 --steps 300 --precision bf16
fi
if [ "$PART" != 1 ]; then
    run dcgan_speed_bf16_cl 60 $PY bench/dcgan_speed.py --batch 64 --batch 128 --steps 300 --precision bf16 --channels-last
    run job_speed 90 $PY bench/job_speed.py --steps 3000 --checkpoint-every 1000
    run sample_speed 60 $PY bench/sample_speed.py --count 20000
fi
