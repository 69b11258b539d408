#!/usr/bin/env bash
# The final runs of the seeds table (docs/results.md, "Presets over seeds"): each preset at seeds 0, 1, 2,
#
#   bash experiments/seeds_queue.sh ROOT PRESET [PRESET ...]
#
# into ROOT/<preset>-s<k> (experiments/preset_queue.sh: skipped when its summary.json exists, one thread per
# run); then
#   python experiments/seeds_table.py P=ROOT/P-s0,ROOT/P-s1,ROOT/P-s2 ...
set -u
root=$1; shift
for p in "$@"; do
  bash "$(dirname "$0")/preset_queue.sh" "$root" "$p" "0 1 2"
done
