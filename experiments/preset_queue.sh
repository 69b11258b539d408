#!/usr/bin/env bash
# Runs of one preset at several seeds (a tuning variant or the final runs of a table):
#
#   bash experiments/preset_queue.sh ROOT PRESET "10 11 12" [extra statespaces-train flags ...]
#
# runs `statespaces train --preset PRESET --trainer.seed k [flags]` for each seed k into ROOT/<preset>-s<k>
# (log beside it, ROOT/<preset>-s<k>.log); a run whose summary.json exists is skipped. One thread per run.
# A validation round (experiments/preset_tuning.md) adds `--trainer.val_fraction 0.2 --trainer.test_eval off`
# (the test split is then never scored) and reads the result with `python experiments/val_table.py ROOT`
# (series right at the last epoch).
set -u
root=$1; preset=$2; seeds=$3; shift 3
py=${PYTHON:-.venv/bin/python}
mkdir -p "$root"
for k in $seeds; do
  out="$root/$preset-s$k"
  [ -f "$out/summary.json" ] && continue
  rm -rf "$out"
  OMP_NUM_THREADS=1 "$py" -m statespaces train --preset "$preset" --trainer.seed "$k" --trainer.out "$out" \
    --trainer.tensorboard off --no-progress "$@" > "$out.log" 2>&1
done
