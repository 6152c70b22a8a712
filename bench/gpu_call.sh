#!/bin/bash
# The script of one call on a lent GPU (bench/RESULTS.md, "H200"): the speed table first, alone on
# the GPU, then long runs side by side (bench/gpu_lease.py, two bench/demo_quality.py sweeps,
# pytest tests/gpu), then logs, checkpoints and grids in $OUT (or /tmp/gpu_call) and a summary.
#
#     bash bench/gpu_call.sh          # from the repository root, on the GPU machine
#
# Where gantry's pure-Python dependencies are missing there, put their wheels in .whl/ (they are
# installed into /tmp/site); REFERENCE is the canonical DCGAN step (../shared/bench/), CACHE a
# folder holding a trained shapes classifier (else each process trains its own). TRAIN_END and
# HARD_END: seconds after the start by which training ends and every process is stopped.
set -u
T0=$(date +%s)
[ -d .whl ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
L=/tmp/res; mkdir -p $L/ckpt
nvidia-smi > $L/nvidia-smi.txt 2>&1
nproc >> $L/nvidia-smi.txt
export GANTRY_HOME=$L/home; mkdir -p $GANTRY_HOME/cache; cp ${CACHE:-.gpu/cache}/* $GANTRY_HOME/cache/ 2>/dev/null
echo "setup $(( $(date +%s) - T0 ))s"
timeout 60 ${PY:-python3} bench/dcgan_speed.py --reference ${REFERENCE:-../shared/bench/dcgan_reference.py} --batch 64 --batch 256 --steps 150 > $L/speed.log 2>&1
timeout 25 ${PY:-python3} ${REFERENCE:-../shared/bench/dcgan_reference.py} --batch 64 --batch 256 --iters 30 > $L/speed_ref.log 2>&1
cat $L/speed.log $L/speed_ref.log
echo "speed done $(( $(date +%s) - T0 ))s"
U=$(( T0 + ${TRAIN_END:-470} ))
HARD=$(( T0 + ${HARD_END:-540} ))
run() { local name=$1; shift; timeout $(( HARD - $(date +%s) )) ${PY:-python3} bench/gpu_lease.py "$@" ${LEASE_ARGS:-} --until $U --save $L/ckpt --name $name > $L/$name.log 2>&1 & }
timeout 150 ${PY:-python3} -m pytest -q -p no:cacheprovider tests/gpu > $L/gpu_tests.log 2>&1 &
run t2i64-s0 text2img --image-size 64 --seed 0
run t2i64-s1 text2img --image-size 64 --seed 1
run t2i32b64-s0 text2img --batch-size 64 --seed 0
run t2i32b64-s1 text2img --batch-size 64 --seed 1
run st-s0 stacked --seed 0
run st-s1 stacked --seed 1
run st-s2 stacked --seed 2
demo() { local name=$1; shift; mkdir -p $L/$name/cache; cp ${CACHE:-.gpu/cache}/* $L/$name/cache/ 2>/dev/null
  local args=(); for v in "$@"; do args+=(--variant "${v}${DEMO_SUFFIX:+ $DEMO_SUFFIX}"); done
  timeout $(( HARD - $(date +%s) )) ${PY:-python3} bench/demo_quality.py --home $L/$name "${args[@]}" > $L/$name.log 2>&1 & }
demo dq1 '' 'beta1=0.0 beta2=0.99' 'lr=5e-4' 'lr=2e-3' 'ngf=16 ndf=16 steps=8000' 'ngf=48 ndf=16' 'ngf=16 ndf=48'
demo dq2 'minibatch_discrimination=true mbd_kernels=10' 'feature_matching=true' 'batch_size=32 steps=2500' \
  'nz=8' 'nz=32' 'label_smoothing=1.0' 'lr_decay=linear steps=5000'
wait
echo "runs done $(( $(date +%s) - T0 ))s"
nvidia-smi --query-gpu=name,memory.used --format=csv >> $L/nvidia-smi.txt 2>&1
# What comes back from a lent machine: at most 8 files of at most 16 MiB each. Logs, the
# checkpoints packed into tars of at most 15 MB, the demo sweeps' grids.
O=${OUT:-/tmp/gpu_call}; mkdir -p $O
tar czf $O/logs.tgz -C $L $(cd $L && ls *.log *.txt)
${PY:-python3} - $L/ckpt $O <<'PYTHON'
import sys, tarfile, pathlib
pack, size, n = [], 0, 0
def flush():
    global pack, size, n
    if pack:
        with tarfile.open(f"{sys.argv[2]}/ckpt{n}.tar", "w") as tar:
            for f in pack:
                tar.add(f, arcname=f.name)
        pack, size, n = [], 0, n + 1
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.pt")):
    if size + f.stat().st_size > 15e6:
        flush()
    pack.append(f)
    size += f.stat().st_size
flush()
PYTHON
tar czf $O/demo_grids.tgz -C $L --exclude='checkpoints' --exclude='*.db' dq1 dq2
ls -la $O
${PY:-python3} - $L <<'PYTHON'
"""Compact lines from the run logs (the reply shows only the output's tail)."""
import ast
import json
import pathlib
import sys

for log in sorted(pathlib.Path(sys.argv[1]).glob("*.log")):
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith('{"run"'):
            d = json.loads(line)
            if "average" not in d:
                print(d["run"], f"{d['seconds_per_step'] * 1e3:.1f} ms/step -> {d['steps']} steps")
                continue
            keys = ("modes", "kl_uniform", "faithfulness_seen", "faithfulness_held_out", "diversity",
                    "arithmetic_accuracy", "arithmetic_trials", "interpolation_validity")
            show = lambda m: " ".join(f"{k}={m[k]:.3f}" for k in keys if k in m)  # noqa: E731
            print(d["run"], f"reached {d['reached']}/{d['steps']} in {d['train_s']:.0f}s")
            print("   avg:", show(d["average"]))
            print("   G:  ", show(d["G"]))
        elif "sample_validity" in line and line.endswith("}"):
            head, _, values = line.partition("{")
            m = ast.literal_eval("{" + values)
            print(log.stem, head, f"validity {m['sample_validity']:.3f} interp {m['interpolation_validity']:.3f}")
        elif "passed" in line or "failed" in line or "Traceback" in line or "Error" in line:
            print(log.stem, line[:300])
PYTHON
