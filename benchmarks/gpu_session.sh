#!/bin/bash
# Everything a short GPU lease should measure, in one call (about 5 minutes on an H200):
#   bash benchmarks/gpu_session.sh OUTDIR        (PYTHON=/path/to/python to use another interpreter than python3)
# gpu_check (correctness, syncs, timing incl. the graphed column, op counts) -> OUTDIR/gpu_check.json,
# gpu_profile (per-kernel time, host-bound check) -> OUTDIR/profile.txt, and, when .peers/ holds the
# official code (benchmarks/README.md), bench_peers in the same session -> OUTDIR/peers.txt; the official
# CUDA extension is built in the background meanwhile if its sources are in .peers/extensions/kernels.
set -o pipefail
OUT=${1:?usage: bash benchmarks/gpu_session.sh OUTDIR}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$OUT/env.txt" || {
  echo "gpu_session: no working GPU (nvidia-smi failed): nothing measured" | tee -a "$OUT/env.txt"; exit 1; }
PY=${PYTHON:-python3}
"$PY" -c "import torch" 2>>"$OUT/env.txt" || {
  echo "gpu_session: $PY cannot import torch (set PYTHON=... to the interpreter that has it): nothing measured" \
    | tee -a "$OUT/env.txt"; exit 1; }
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
  echo "gpu_session: torch sees no CUDA device: nothing measured" | tee -a "$OUT/env.txt"; exit 1; }
"$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" 2>&1 | tee -a "$OUT/env.txt"
EXT=
if [ -f .peers/extensions/kernels/setup.py ]; then
  ( cd .peers/extensions/kernels && TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=6 timeout 280 "$PY" setup.py build_ext --inplace \
      > "$OUT/ext_build.log" 2>&1 ) & EXT=$!
fi
PYTHONPATH=src timeout 270 "$PY" benchmarks/gpu_check.py --out "$OUT/gpu_check.json" --no-resources 2>&1 | tee "$OUT/gpu_check.log"
CHECK=$?                  # 1: a section raised (its "error" is in the JSON); 124: cut by the timeout
PYTHONPATH=src timeout 120 "$PY" benchmarks/gpu_profile.py --shapes 16,4096 1,65536 --host 2>&1 | tee "$OUT/profile.txt"
[ -n "$EXT" ] && wait $EXT
if [ -f .peers/official_s4.py ]; then
  LIN=(); [ -f .peers/official_linoss.py ] && LIN=(--linoss ../.peers/official_linoss.py --jax-python "$PY")
  (cd benchmarks && PYTHONPATH=../src:../.peers:../.peers/extensions/kernels timeout 150 "$PY" bench_peers.py \
     --s4 ../.peers/official_s4.py "${LIN[@]}" --d-model 256 --d-state 64 --shapes 16,4096 1,65536 \
     --layers S4D S4 --repeat 10 --steps 1000 2>&1 | tee "$OUT/peers.txt")
fi
if [ "$CHECK" -ne 0 ]; then
  echo "gpu_session: gpu_check.py exited $CHECK (a failed section or the timeout): see $OUT/gpu_check.log" >&2
  exit "$CHECK"
fi
