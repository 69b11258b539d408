#!/usr/bin/env bash
# The final runs of the seeds table (docs/results.md, "Presets over seeds"): each preset at seeds 0, 1, 2,
#
#   bash experiments/seeds_queue.sh ROOT PRESET [PRESET ...]
#
# into ROOT/<preset>-s<k> (skipped when its summary.json exists), one thread per run; then
#   python experiments/seeds_table.py P=ROOT/P-s0,ROOT/P-s1,ROOT/P-s2 ...
set -u
root=$1; shift
py=${PYTHON:-.venv/bin/python}
for p in "$@"; do
  for k in 0 1 2; do
    out="$root/$p-s$k"
    [ -f "$out/summary.json" ] && continue
    rm -rf "$out"
    mkdir -p "$root"
    OMP_NUM_THREADS=1 "$py" -m statespaces train --preset "$p" --trainer.seed "$k" --trainer.out "$out" \
      --trainer.tensorboard off --no-progress > "$out.log" 2>&1
  done
done
