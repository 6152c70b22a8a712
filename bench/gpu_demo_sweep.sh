#!/bin/bash
# How reliably does the demo reach its quality? The demo's settings and variants, several training
# seeds each, on one CUDA GPU: one bench/demo_quality.py process per (variant, seed), up to
# $PARALLEL (default 14) side by side, each a real embedded train job and an evaluate job.
#
#     bash bench/gpu_demo_sweep.sh 'latent_codes=32' 'latent_codes=8,4'     # from the repository root
#
# Each argument is a demo_quality.py variant (key=value ...; '' is the demo as shipped), run once
# per seed in $SEEDS (default "1 2 3 4"). Prints the summary, demo_quality.py's table row for each
# (variant, seed), sorted: variant, job, wall time, images/s, sample_validity, pair_coverage,
# interpolation_validity, arithmetic_accuracy. In $OUT (default /tmp/gpu_sweep): summary.md, logs.tgz and
# grids.tgz (each run's sample grids at steps 4,000 and 8,000). Settings, all optional: PY (the
# python, default python3), CACHE (a folder holding a trained shapes classifier; without it each
# process trains its own), HARD_END (seconds after the start at which every process still running
# is stopped, default 480; its row is then missing from the summary).
set -u
T0=$(date +%s)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
export L=/tmp/sweep HARD=$(( T0 + ${HARD_END:-480} )) CACHE=${CACHE:-} PY=${PY:-python3}
mkdir -p $L
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $L/device.txt 2>&1
echo "setup $(( $(date +%s) - T0 ))s"

one() {  # one variant with one seed: its own GANTRY_HOME, so the runs share no SQLite file
  local variant=$1 seed=$2
  local name; name=$(echo "s$seed-$variant" | tr -c 'A-Za-z0-9_.\n-' '_')
  mkdir -p "$L/$name"; [ -n "$CACHE" ] && mkdir -p "$L/$name/cache" && cp "$CACHE"/* "$L/$name/cache/"
  timeout $(( HARD - $(date +%s) )) $PY bench/demo_quality.py --home "$L/$name" \
    --variant "$variant seed=$seed" > "$L/$name.log" 2>&1
}
export -f one
for variant in "$@"; do for seed in ${SEEDS:-1 2 3 4}; do printf '%s\0%s\0' "$variant" "$seed"; done; done |
  xargs -0 -n 2 -P "${PARALLEL:-14}" bash -c 'one "$1" "$2"' _
echo "runs done $(( $(date +%s) - T0 ))s"

O=${OUT:-/tmp/gpu_sweep}; mkdir -p $O
(cd $L && tar czf $O/logs.tgz *.log device.txt)
(cd $L && find . -path '*/samples/*' -name 'step-0000[48]000.png' | sort | tar czf $O/grids.tgz -T -)
grep -h '^| ' $L/*.log | grep -v '^| variant\|^|---' | sort > $O/summary.md
cat $O/summary.md
