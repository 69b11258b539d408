#!/usr/bin/env bash
# One variant of a ucr tuning round (experiments/ucr_tuning.md protocol), validation only:
#
#   bash experiments/ucr_queue.sh ROOT "0 1 2 3 4" [extra statespaces-train flags ...]
#
# runs `statespaces train --preset ucr` on the four tuning problems for each split k (splits outer,
# so a stopped queue leaves whole splits), with 25% of the training split held out (seed k) and the
# test split never scored (`--trainer.test_eval off`: the logs hold no test figure to glance at), into
# ROOT/<Problem>-s<k>; a run whose summary.json exists is skipped. One thread per run; read the result
# with `python experiments/val_table.py ROOT` (test columns are never read). PROBLEMS="OSULeaf ..." runs a
# subset (a probe on one problem before a full round).
set -u
root=$1; splits=$2; shift 2
py=${PYTHON:-.venv/bin/python}
mkdir -p "$root"
for k in $splits; do
  for p in ${PROBLEMS:-ArrowHead PickupGestureWiimoteZ OSULeaf ACSF1}; do
    out="$root/$p-s$k"
    [ -f "$out/summary.json" ] && continue
    rm -rf "$out"
    OMP_NUM_THREADS=1 "$py" -m statespaces train --preset ucr --data.name "ucr:$p" \
      --trainer.val_fraction 0.25 --trainer.test_eval off --trainer.seed "$k" --trainer.out "$out" \
      --trainer.tensorboard off --no-progress "$@" > "$root.$p-s$k.log" 2>&1
  done
done
