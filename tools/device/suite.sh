#!/usr/bin/env bash
# tools/device.sh suite — the whole GPU suite in one run on a GPU machine: every op of
# test-gpu-ops against the CPU oracle, compute-sanitizer memcheck + racecheck on a small decode
# grid and memcheck + racecheck + synccheck on small prefill cases, and the engine's CUDA backend
# check.
#
# Binaries are built elsewhere (CUDA 13, sm_90a) and copied to BIN_DIR (default .carry/final):
#   cmake --preset release
#   cmake --build build --target test-gpu-ops engine-gpu-check
#   mkdir -p .carry/final && cp build/bin/{test-gpu-ops,engine-gpu-check} .carry/final/
# then, on the GPU machine from the repository root:  tools/device.sh suite
# Logs go to $OUT (or ./device-out). Exit status: 0 only when every step passed.
set -u -o pipefail
BIN_DIR=${BIN_DIR:-.carry/final}
OUT_DIR=${OUT:-device-out}
mkdir -p "$OUT_DIR"
status=0
step() {  # step NAME SECONDS COMMAND...: runs COMMAND with a time limit, logs to NAME.log
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  if timeout "$limit" "$@" >"$OUT_DIR/$name.log" 2>&1; then
    echo "PASS $name ($((SECONDS - start)) s)"
  else
    echo "FAIL $name (exit $?, $((SECONDS - start)) s): last lines of $name.log"
    tail -n 15 "$OUT_DIR/$name.log"
    status=1
  fi
}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | tee "$OUT_DIR/gpu.txt"
step test-gpu-ops 330 "$BIN_DIR/test-gpu-ops"
grep -E "passed|failed|FAIL" "$OUT_DIR/test-gpu-ops.log" | tail -n 5
step memcheck-decode 90 compute-sanitizer --tool memcheck --error-exitcode 3 "$BIN_DIR/test-gpu-ops" -p "hq=8,hkv=2,page=16,lens=[1 17 97"
step racecheck-decode 90 compute-sanitizer --tool racecheck --error-exitcode 3 "$BIN_DIR/test-gpu-ops" -p "hq=8,hkv=2,page=16,lens=[1 17 97"
step memcheck-prefill 150 compute-sanitizer --tool memcheck --error-exitcode 3 "$BIN_DIR/test-gpu-ops" -o prefill -p "nq/p1=300/300"
# The prefill kernels synchronise warp-specialised roles with mbarriers and named barriers.
step racecheck-prefill 150 compute-sanitizer --tool racecheck --error-exitcode 3 "$BIN_DIR/test-gpu-ops" -o prefill -p "nq/p1=300/300"
step synccheck-prefill 150 compute-sanitizer --tool synccheck --error-exitcode 3 "$BIN_DIR/test-gpu-ops" -o prefill -p "nq/p1=300/300"
step engine-check 150 env BIN_DIR="$BIN_DIR" tools/device.sh engine --check
exit $status
