#!/usr/bin/env bash
# tools/device.sh eval — the accuracy grid (`kascade eval --backend cuda`) on a GPU machine.
#
# The default model's GGUF (98 MB) is more than one device call carries (64 MiB), so it travels
# in two parts to the same warm machine, in two calls made back to back (the machine stays warm
# ~30 s): the first stages part one, the second joins the parts, checks the SHA-256 and runs.
# Prepared here (split -b 50000000 -d MODEL.gguf /tmp/part.; parts in gitignored folders):
#   .carry/eval-model-a/part.00, .carry/eval-model-b/part.01, .carry/eval-gpu/kascade (CUDA build)
# Call 1 (carry .carry/eval-model-a):   tools/device.sh eval stage .carry/eval-model-a
# Call 2 (carry .carry/eval-gpu, .carry/eval-model-b):
#   KASCADE_COMMIT=SHA tools/device.sh eval run .carry/eval-model-b SHA256 SECONDS OUT_NAME -- EVAL-ARGS...
# `run` stops the eval after SECONDS (its tables are rewritten after every example, so what was
# finished comes back, marked partial) and writes $OUT/OUT_NAME/eval.{md,json} and $OUT/OUT_NAME.log.
# Several `run` groups can follow each other in one call: separate them with `;`.
set -uo pipefail
STAGE_DIR=/tmp/kascade-model
MODEL="$STAGE_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
BIN=${BIN:-.carry/eval-gpu/kascade}
OUT_DIR=${OUT:-device-out}

mode=${1:?usage: tools/device.sh eval stage DIR | run DIR SHA256 SECONDS OUT_NAME -- EVAL-ARGS...}
shift
case "$mode" in
  stage)
    mkdir -p "$STAGE_DIR"
    cp "$1"/* "$STAGE_DIR"/
    ls -l "$STAGE_DIR"
    ;;
  run)
    part_dir=$1 sha=$2 seconds=$3 name=$4
    shift 4
    [ "${1:-}" = "--" ] && shift
    if [ ! -f "$MODEL" ]; then
      cp "$part_dir"/* "$STAGE_DIR"/ || { echo "tools/device.sh eval: stage the first part first (machine not warm?)"; exit 3; }
      cat $(ls "$STAGE_DIR"/*part.* | sort) > "$MODEL"
    fi
    echo "$sha  $MODEL" | sha256sum -c - || exit 3
    source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
    cuda_library_path
    mkdir -p "$OUT_DIR/$name"
    echo "host: $(nproc) cores; gpu: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>&1)"
    timeout "$seconds" "$BIN" eval --backend cuda --model "$MODEL" --out "$OUT_DIR/$name" "$@" \
      > /dev/null 2> "$OUT_DIR/$name.log"
    status=$?
    tail -n 3 "$OUT_DIR/$name.log"
    [ $status -eq 124 ] && echo "tools/device.sh eval: $name stopped after $seconds s (partial tables kept)"
    exit $status
    ;;
  *)
    echo "tools/device.sh eval: unknown mode '$mode' (stage | run)"
    exit 2
    ;;
esac
