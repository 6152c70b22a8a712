#!/bin/bash
# Speed and quality on one CUDA GPU, in about nine minutes: first, alone on the GPU, the DCGAN speed
# table (bench/dcgan_speed.py: gantry's loop against the canonical step) and the canonical step's
# own table with its faster variants (bench/canonical_dcgan.py); then, side by side on the same GPU,
# seven bench/recipe_quality.py runs (text2img at 64x64 and at batch 64, two seeds each; stacked-
# digits DCGAN, three seeds), two bench/demo_quality.py sweeps of the demo's settings and
# `pytest tests/gpu`. The step times of the side-by-side runs are those of a shared GPU.
#
#     bash bench/gpu_speed_and_quality.sh       # from the repository root, gantry[worker] installed
#
# Prints the two speed tables, then one summary line per run (steps reached, the metrics of G's
# average and of G; the demo sweeps' validity and interpolation) and the tests' outcome. Logs,
# the runs' checkpoints (less D and the optimizers; ckpt/) and the sweeps' jobs with their grids
# (dq1/, dq2/) stay in $OUT (default /tmp/gpu_speed_and_quality). Settings, all optional: PY (the
# python, default python3), CACHE (a folder holding a trained shapes classifier, copied into each
# process's GANTRY_HOME cache; without it each process trains its own), TRAIN_END and HARD_END
# (seconds after the start by which training ends, default 470, and by which every process still
# running is stopped, default 540), RUN_ARGS (more arguments for every recipe_quality.py run),
# DEMO_SUFFIX (more key=value pairs for every demo variant).
set -u
T0=$(date +%s)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
L=${OUT:-/tmp/gpu_speed_and_quality}; mkdir -p $L/ckpt
nvidia-smi > $L/nvidia-smi.txt 2>&1
nproc >> $L/nvidia-smi.txt
cache() { [ -n "${CACHE:-}" ] && mkdir -p "$1/cache" && cp "$CACHE"/* "$1/cache/"; }
export GANTRY_HOME=$L/home; mkdir -p $GANTRY_HOME; cache $GANTRY_HOME
timeout 120 ${PY:-python3} bench/dcgan_speed.py --batch 64 --batch 256 --steps 150 > $L/speed.log 2>&1
timeout 60 ${PY:-python3} bench/canonical_dcgan.py --batch 64 --batch 256 --iters 30 > $L/speed_canonical.log 2>&1
cat $L/speed.log $L/speed_canonical.log
echo "speed done $(( $(date +%s) - T0 ))s"
U=$(( T0 + ${TRAIN_END:-470} ))
HARD=$(( T0 + ${HARD_END:-540} ))
run() { local name=$1; shift; timeout $(( HARD - $(date +%s) )) ${PY:-python3} bench/recipe_quality.py "$@" ${RUN_ARGS:-} --until $U --save $L/ckpt --name $name > $L/$name.log 2>&1 & }
timeout 150 ${PY:-python3} -m pytest -q -p no:cacheprovider tests/gpu > $L/gpu_tests.log 2>&1 &
run t2i64-s0 text2img --image-size 64 --seed 0
run t2i64-s1 text2img --image-size 64 --seed 1
run t2i32b64-s0 text2img --batch-size 64 --seed 0
run t2i32b64-s1 text2img --batch-size 64 --seed 1
run st-s0 stacked --seed 0
run st-s1 stacked --seed 1
run st-s2 stacked --seed 2
demo() { local name=$1; shift; mkdir -p $L/$name; cache $L/$name
  local args=(); for v in "$@"; do args+=(--variant "${v}${DEMO_SUFFIX:+ $DEMO_SUFFIX}"); done
  timeout $(( HARD - $(date +%s) )) ${PY:-python3} bench/demo_quality.py --home $L/$name "${args[@]}" > $L/$name.log 2>&1 & }
demo dq1 '' 'beta1=0.0 beta2=0.99' 'lr=5e-4' 'lr=2e-3' 'ngf=16 ndf=16 steps=8000' 'ngf=48 ndf=16' 'ngf=16 ndf=48'
demo dq2 'minibatch_discrimination=true mbd_kernels=10' 'feature_matching=true' 'batch_size=32 steps=2500' \
  'nz=8' 'nz=32' 'label_smoothing=1.0' 'lr_decay=linear steps=5000'
wait
echo "runs done $(( $(date +%s) - T0 ))s"
nvidia-smi --query-gpu=name,memory.used --format=csv >> $L/nvidia-smi.txt 2>&1
${PY:-python3} - $L <<'PYTHON'
"""One compact line per run, from the run logs."""
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
