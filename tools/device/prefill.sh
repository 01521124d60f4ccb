#!/bin/bash
# tools/device.sh prefill — the prefill checks and benchmark, run on the GPU machine over binaries
# built on the CPU machine (cmake --build BUILD --target test-gpu-ops kascade-bench).
#
#   tools/device.sh prefill BUILD_BIN OUT_DIR COMMIT [test|sanitize|bench]...
#
# test      test-gpu-ops -o prefill (every prefill case against the CPU oracle)
# sanitize  compute-sanitizer memcheck over the prefill cases of test-gpu-ops
# bench     cuDNN SDPA causal baseline (bench/run_baseline.py --phase prefill), then
#           kascade-bench prefill;
#           writes OUT_DIR/cudnn_prefill.json and OUT_DIR/prefill_bench.json
set -u -o pipefail
usage='usage: tools/device.sh prefill BUILD_BIN OUT_DIR COMMIT [test|sanitize|bench]...'
bin=${1:?$usage} out=${2:?$usage} commit=${3:?$usage}
shift 3
mkdir -p "$out"
status=0
for step in "$@"; do
  case $step in
    test) "$bin/test-gpu-ops" -o prefill 2>&1 | tee "$out/prefill_test.log" || status=1 ;;
    sanitize)
      compute-sanitizer --tool memcheck --error-exitcode 3 "$bin/test-gpu-ops" -o prefill 2>&1 |
        tail -n 40 | tee "$out/prefill_memcheck.log" || status=1 ;;
    bench)
      python3 bench/run_baseline.py --phase prefill --out "$out/cudnn_prefill.json" ${SHAPES:+--shapes $SHAPES} || status=1
      "$bin/kascade-bench" prefill --baseline "$out/cudnn_prefill.json" --out "$out/prefill_bench.json" \
        --commit "$commit" ${SHAPES:+--shapes $SHAPES} || status=1 ;;
    *) echo "tools/device.sh prefill: unknown step '$step' (test, sanitize, bench)" >&2; exit 2 ;;
  esac
done
exit $status
