#!/usr/bin/env bash
# tools/device.sh decode — run the decode GPU suite and/or the decode benchmark on a GPU machine.
#
# Binaries are built elsewhere (CUDA 13, sm_90a) and copied to BIN_DIR (default .carry/bin):
#   cmake -S . -B build-decode -G Ninja -DKASCADE_CUDA=ON
#   cmake --build build-decode --target test-gpu-ops kascade-bench
#   mkdir -p .carry/bin && cp build-decode/bin/{test-gpu-ops,kascade-bench} .carry/bin/
# then on the GPU machine:
#   tools/device.sh decode test [-o FILTER]     the GPU-vs-oracle suite
#   tools/device.sh decode sanitize             compute-sanitizer memcheck + racecheck on a small grid
#   tools/device.sh decode bench OUT.json [--models ..] [--contexts ..] [--batches ..]
#                                               cuDNN baseline (bench/run_baseline.py --phase decode),
#                                               then kascade-bench decode (COMMIT=sha)
# Logs and results go to $OUT (or ./device-out when OUT is unset).
set -euo pipefail
BIN_DIR=${BIN_DIR:-.carry/bin}
OUT_DIR=${OUT:-device-out}
mkdir -p "$OUT_DIR"
mode=${1:?usage: tools/device.sh decode test|sanitize|bench ...}
shift
case "$mode" in
  test)
    "$BIN_DIR/test-gpu-ops" "$@" 2>&1 | tee "$OUT_DIR/test-gpu-ops.log"
    ;;
  sanitize)
    # Small cases only: the sanitizer slows kernels by 10-100x.
    for tool in memcheck racecheck; do
      for selection in "-p hq=8,hkv=2,page=16,lens=[1 17 97" "-o decode_graph" "-p D=64,hq=16,hkv=2,page=64"; do
        # shellcheck disable=SC2086
        compute-sanitizer --tool "$tool" --error-exitcode 3 "$BIN_DIR/test-gpu-ops" ${selection%% *} "${selection#* }" \
          2>&1 | tee -a "$OUT_DIR/sanitize-$tool.log"
      done
    done
    ;;
  bench)
    result=${1:?usage: tools/device.sh decode bench OUT.json [options]}
    shift
    PYTHONUNBUFFERED=1 python3 bench/run_baseline.py --phase decode --out "$OUT_DIR/cudnn.json" "$@" 2>&1 | tee "$OUT_DIR/cudnn.log"
    "$BIN_DIR/kascade-bench" decode --baseline "$OUT_DIR/cudnn.json" --out "$result" --commit "${COMMIT:-unknown}" "$@" 2>&1 | tee "$OUT_DIR/bench.log"
    ;;
  *)
    echo "tools/device.sh decode: unknown mode '$mode' (test, sanitize, bench)" >&2
    exit 2
    ;;
esac
