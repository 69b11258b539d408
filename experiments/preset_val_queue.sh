#!/usr/bin/env bash
# One variant of a preset tuning round (experiments/preset_tuning.md protocol), validation only:
#
#   bash experiments/preset_val_queue.sh ROOT PRESET "10 11 12" [extra statespaces-train flags ...]
#
# runs `statespaces train --preset PRESET` with 20% of the training data held out (seed k) for each seed k,
# into ROOT/<preset>-s<k>; a run whose summary.json exists is skipped. One thread per run; read the result
# with `python experiments/val_table.py ROOT` (series right at the last epoch; test columns are never read).
set -u
root=$1; preset=$2; seeds=$3; shift 3
py=${PYTHON:-.venv/bin/python}
mkdir -p "$root"
for k in $seeds; do
  out="$root/$preset-s$k"
  [ -f "$out/summary.json" ] && continue
  rm -rf "$out"
  OMP_NUM_THREADS=1 "$py" -m statespaces train --preset "$preset" --trainer.val_fraction 0.2 \
    --trainer.seed "$k" --trainer.out "$out" --trainer.tensorboard off --no-progress "$@" > "$out.log" 2>&1
done
