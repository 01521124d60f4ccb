#!/usr/bin/env bash
# tools/device.sh engine — on a GPU machine, run engine-gpu-check (the CUDA backends' logits
# against the CPU backend's, batches against single sequences, decode graphs against eager
# launches), the engine benchmark (kascade-bench engine) or the engine soak (engine-soak: thousands
# of steps of changing batches under compute-sanitizer on the small shape, and on the 8B shape
# with device memory checked before and after).
#
# The binaries are built elsewhere (CUDA 13, sm_90a) and copied to BIN_DIR (default .carry/engine):
#   cmake --preset release
#   cmake --build build --target engine-gpu-check kascade-bench engine-soak
#   mkdir -p .carry/engine && cp build/bin/{engine-gpu-check,kascade-bench,engine-soak} .carry/engine/
# then on the GPU machine, from the repository root (the plan file is read from the tree):
#   tools/device.sh engine --check [engine-gpu-check options]              # -> $OUT/engine_check.json
#   tools/device.sh engine --engine-bench [kascade-bench engine options]   # -> $OUT/engine_bench.json
#   tools/device.sh engine --soak [memcheck|llama8b]   # engine-soak; both when none is named
# --soak memcheck: engine-soak on SmolLM2-135M's shape under compute-sanitizer memcheck (with
# --leak-check full; a short schedule: 100 steps per variant, batch <= 4, context <= 320) ->
# soak_memcheck.log, soak_memcheck.json; --soak llama8b: engine-soak on Llama-3.1-8B's shape
# without the sanitizer (3000 steps per variant, batch <= 8, context <= 2048, device memory
# checked) -> soak_llama8b.log, soak_llama8b.json. Each has a 540 s limit: where one call may run
# 10 minutes, name one per call.
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
soak() {  # soak NAME TIMEOUT [COMMAND-PREFIX...] -- ENGINE-SOAK-ARGS...: logs NAME.log, writes NAME.json
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  local prefix=()
  while [ "$1" != "--" ]; do
    prefix+=("$1")
    shift
  done
  shift
  if timeout "$limit" "${prefix[@]}" "$BIN_DIR/engine-soak" --out "$OUT_DIR/$name.json" "$@" >"$OUT_DIR/$name.log" 2>&1; then
    echo "PASS $name ($((SECONDS - start)) s)"
  else
    echo "FAIL $name (exit $?, $((SECONDS - start)) s): last lines of $name.log"
    tail -n 15 "$OUT_DIR/$name.log"
    return 1
  fi
}
if [ "${1:-}" = "--soak" ]; then
  which=${2:-all}
  case "$which" in
    all | memcheck | llama8b) ;;
    *)
      echo "tools/device.sh engine --soak: unknown run '$which' (memcheck or llama8b, or none for both)" >&2
      exit 2
      ;;
  esac
  status=0
  if [ "$which" != llama8b ]; then
    soak soak_memcheck 540 compute-sanitizer --tool memcheck --leak-check full --error-exitcode 3 -- \
      --shape smollm2 --steps 100 --max-batch 4 --max-context 320 --max-decode 32 --chunk 96 --check-every 50 \
      --no-memory-check || status=1
  fi
  if [ "$which" != memcheck ]; then
    soak soak_llama8b 540 -- --shape llama8b --steps 3000 --max-batch 8 --max-context 2048 || status=1
  fi
  exit $status
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
echo "tools/device.sh engine: unknown first argument '$1' (--check, --engine-bench or --soak, or none for check and bench)" >&2
exit 2
