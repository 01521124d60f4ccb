#!/usr/bin/env bash
# tools/device.sh engine — on a GPU machine, run engine-gpu-check (the CUDA backends' logits
# against the CPU backend's, batches against single sequences, decode graphs against eager
# launches) or the engine benchmark (kascade-bench engine).
#
# The binaries are built elsewhere (CUDA 13, sm_90a) and copied to BIN_DIR (default .carry/engine):
#   cmake --preset release
#   cmake --build build --target engine-gpu-check kascade-bench
#   mkdir -p .carry/engine && cp build/bin/{engine-gpu-check,kascade-bench} .carry/engine/
# then on the GPU machine, from the repository root (the plan file is read from the tree):
#   tools/device.sh engine --check [engine-gpu-check options]              # -> $OUT/engine_check.json
#   tools/device.sh engine --engine-bench [kascade-bench engine options]   # -> $OUT/engine_bench.json
# With no options the check runs, then (a second process, so that a fault in one leaves the
# other's results) the bench on SmolLM2-135M's shape at 8k, batch 1, with the shipped test plan;
# logged to check.log and bench.log.
# It links cuBLAS and the CUDA runtime dynamically: the toolkit's lib64 and the cuBLAS wheel that
# ships with PyTorch are searched. Logs and JSON go to $OUT (or ./device-out when OUT is unset).
set -euo pipefail
BIN_DIR=${BIN_DIR:-.carry/engine}
OUT_DIR=${OUT:-device-out}
mkdir -p "$OUT_DIR"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cuda_library_path
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader 2>&1 | tee "$OUT_DIR/gpu.txt" || true
check() {
  local log=$1
  shift
  "$BIN_DIR/engine-gpu-check" --out "$OUT_DIR" --commit "${COMMIT:-unknown}" "$@" 2>&1 | tee "$OUT_DIR/$log"
}
bench() {
  local log=$1
  shift
  "$BIN_DIR/kascade-bench" engine --out "$OUT_DIR/engine_bench.json" --commit "${COMMIT:-unknown}" "$@" 2>&1 |
    tee "$OUT_DIR/$log"
}
if [ "${1:-}" = "--engine-bench" ]; then
  shift
  bench engine_bench.log "$@"  # set -e and pipefail: a failure exits with its status
  exit 0
fi
if [ "${1:-}" = "--check" ]; then
  shift
  check check.log "$@"
  exit 0
fi
if [ $# -eq 0 ]; then
  status=0
  check check.log || status=1
  bench bench.log --models smollm2-135m --plan tests/data/plans/smollm2-135m.json --contexts 8192 --batches 1 \
    --prefill-reps 3 || status=1
  exit $status
fi
echo "tools/device.sh engine: unknown first argument '$1' (--check or --engine-bench, or none for both)" >&2
exit 2
