#!/bin/bash
# The demo's settings and variants, several training seeds each, on one lent GPU: one
# bench/demo_quality.py process per (variant, seed), up to $PARALLEL side by side; their logs, the
# summary and the final grids come back in $OUT (or /tmp/gpu_sweep).
#
#     bash bench/gpu_demo_sweep.sh 'latent_codes=32' 'latent_codes=8,4'     # from the repository root
#
# Each argument is a demo_quality.py variant (key=value ...; '' is the demo as shipped), run once
# per seed in $SEEDS (default "1 2 3 4"). Where gantry's pure-Python dependencies are missing,
# put their wheels in .whl/ (installed into /tmp/site); CACHE: a folder holding a trained shapes
# classifier (else each process trains its own). HARD_END: seconds after the start at which every
# process still running is stopped (its row is then missing from the summary).
set -u
T0=$(date +%s)
[ -d .whl ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
export L=/tmp/sweep HARD=$(( T0 + ${HARD_END:-480} )) CACHE=${CACHE:-.gpu/cache} PY=${PY:-python3}
mkdir -p $L
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $L/device.txt 2>&1
echo "setup $(( $(date +%s) - T0 ))s"

one() {  # one variant with one seed: its own GANTRY_HOME, so the runs share no SQLite file
  local variant=$1 seed=$2
  local name; name=$(echo "s$seed-$variant" | tr -c 'A-Za-z0-9_.\n-' '_')
  mkdir -p "$L/$name/cache"; cp "$CACHE"/* "$L/$name/cache/" 2>/dev/null
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
