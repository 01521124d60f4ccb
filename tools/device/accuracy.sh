#!/usr/bin/env bash
# tools/device.sh accuracy — the accuracy work of a GPU machine (docs/eval.md, docs/calibration.md,
# docs/perplexity.md), after tools/device.sh staged the model and unpacked the binaries:
#
#   tools/device.sh accuracy check SHA256              policy-gpu-check (native vs host policies)
#   tools/device.sh accuracy calibrate SHA256 SECONDS [ANCHORS [CALIBRATE-ARGS...]]
#                                                      the default model's plan -> plan.json, report,
#                                                      the best plan of every anchor count -> plans/
#                                                      (and /tmp/kascade-plan.json for later calls)
#   tools/device.sh accuracy curve SHA256 SECONDS NAME [EVAL-ARGS...]
#                                                      kascade eval of every plans/m*.json (policy
#                                                      kascade) -> $OUT/NAME/m*/
#   tools/device.sh accuracy grid SHA256 SECONDS NAME PLAN [EVAL-ARGS...]
#                                                      kascade eval --backend cuda -> $OUT/NAME/
#   tools/device.sh accuracy ppl SHA256 SECONDS NAME PLAN CONTEXT [PPL-ARGS...]
#                                                      kascade perplexity --backend cuda -> NAME.json
#   tools/device.sh accuracy pack NAME                 RESULTS -> $OUT/NAME.tgz
# Each step writes its log beside its results and stops after SECONDS (eval keeps what finished).
# The corpus travels in .carry/corpus (the device has no Debian packages).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source tools/device.sh env
export KASCADE_CORPUS_ROOT="${KASCADE_CORPUS_ROOT:-$PWD/.carry/corpus}"
# Results go to RESULTS (default /tmp/kascade-results, kept on the warm machine between calls);
# `tools/device.sh accuracy pack` tars them into $OUT (a call brings back at most 8 files).
OUT_DIR=${RESULTS:-/tmp/kascade-results}
mkdir -p "$OUT_DIR"
step=${1:?usage: tools/device.sh accuracy check|calibrate|curve|grid|ppl SHA256 ... | pack NAME}
if [ "$step" = pack ]; then
  tar czf "${OUT:-device-out}/${2:?pack NAME}.tgz" -C "$OUT_DIR" . && ls -l "${OUT:-device-out}"
  exit
fi
model=$(tools/device.sh model "${2:?SHA256}") || exit 3
shift 2
commit=${KASCADE_COMMIT:-unknown}
case "$step" in
  check)
    timeout 300 "$BIN/policy-gpu-check" --model "$model" --plan plans/smollm2-135m-instruct.json \
      --lengths 2048,8192 --out "$OUT_DIR/policy_check.json" > "$OUT_DIR/policy_check.log" 2>&1
    echo "policy-gpu-check exit $?"
    tail -n 40 "$OUT_DIR/policy_check.log"
    ;;
  calibrate)
    seconds=$1
    anchors=${2:-5}
    shift 2 2>/dev/null || shift $#
    mkdir -p "$OUT_DIR/plans"
    timeout "$seconds" "$BIN/kascade" calibrate --model "$model" --backend cuda --anchors "$anchors" --rho 0.1 \
      --dev-prompts 64 --name smollm2-135m-instruct --notes "commit $commit" --plans-dir "$OUT_DIR/plans" \
      --out "$OUT_DIR/plan.json" --report "$OUT_DIR/calibration.report.json" "$@" > "$OUT_DIR/calibrate.log" 2>&1
    echo "calibrate exit $?"
    tail -n 30 "$OUT_DIR/calibrate.log"
    cp "$OUT_DIR/plan.json" /tmp/kascade-plan.json 2>/dev/null
    ;;
  grid)
    seconds=$1 name=$2 plan=$3
    shift 3
    mkdir -p "$OUT_DIR/$name"
    echo "host: $(nproc) cores; gpu: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>&1)" | tee "$OUT_DIR/$name.log"
    KASCADE_COMMIT=$commit timeout "$seconds" "$BIN/kascade" eval --backend cuda --model "$model" --plan "$plan" \
      --out "$OUT_DIR/$name" "$@" > /dev/null 2>> "$OUT_DIR/$name.log"
    echo "eval exit $?"
    tail -n 4 "$OUT_DIR/$name.log"
    ;;
  curve)
    seconds=$1 name=$2
    shift 2
    end=$(( $(date +%s) + seconds ))
    for plan in "$OUT_DIR"/plans/m*.json; do
      m=$(basename "$plan" .json)
      left=$(( end - $(date +%s) ))
      [ "$left" -gt 10 ] || { echo "curve: out of time before $m"; break; }
      mkdir -p "$OUT_DIR/$name/$m"
      KASCADE_COMMIT=$commit timeout "$left" "$BIN/kascade" eval --backend cuda --model "$model" --plan "$plan" \
        --policies kascade --out "$OUT_DIR/$name/$m" "$@" > /dev/null 2>> "$OUT_DIR/$name.log"
      echo "curve $m: eval exit $?"
    done
    ;;
  ppl)
    seconds=$1 name=$2 plan=$3 context=$4
    shift 4
    KASCADE_COMMIT=$commit timeout "$seconds" "$BIN/kascade" perplexity --backend cuda --model "$model" \
      --plan "$plan" --context "$context" --out "$OUT_DIR/$name.json" "$@" > "$OUT_DIR/$name.md" 2> "$OUT_DIR/$name.log"
    echo "perplexity exit $?"
    cat "$OUT_DIR/$name.md"
    ;;
  *)
    echo "tools/device.sh accuracy: unknown step $step" >&2
    exit 2
    ;;
esac
