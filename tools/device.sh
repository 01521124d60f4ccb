#!/usr/bin/env bash
# tools/device.sh — every step of a GPU-machine call, as subcommands (run from the repository root
# on the GPU machine; logs and results go under $OUT). The steps of one area live in
# tools/device/AREA.sh; call them only through this script.
#
# The default model's GGUF (98 MB) is more than one call carries (64 MiB), so it travels in two
# parts to the same warm machine in two calls made back to back; binaries built here travel
# xz-compressed (a CUDA build of the CLI is ~9 MB, ~1.8 MB compressed). Prepared here:
#   split -b 50000000 -d MODEL.gguf /tmp/part.   ->  .carry/model-a/part.00, .carry/model-b/part.01
#   xz -c build/bin/kascade > .carry/bins/kascade.xz   (and the other binaries)
#
#   tools/device.sh stage DIR            copy a model part to the machine's staging folder
#   tools/device.sh model SHA256         join the parts, check the SHA-256, print the model's path
#   tools/device.sh bins DIR             unpack DIR/*.xz into /tmp/kascade-bin (executables)
#   source tools/device.sh env           LD_LIBRARY_PATH for cuBLAS; KASCADE_MODEL, BIN exported
#   tools/device.sh accuracy STEP ...    policy check, calibration, eval grid, anchor curve,
#                                        perplexity (tools/device/accuracy.sh)
#   tools/device.sh decode MODE ...      decode GPU suite, sanitizers, benchmark (tools/device/decode.sh)
#   tools/device.sh engine [OPTION ...]  engine-gpu-check, the engine benchmark and the engine soak
#                                        (tools/device/engine.sh)
#   tools/device.sh eval MODE ...        the accuracy grid over a staged model (tools/device/eval.sh)
#   tools/device.sh prefill BIN OUT COMMIT STEP...  prefill checks and benchmark (tools/device/prefill.sh)
#   tools/device.sh python MODE ...      the Python package: build, tests, benchmark (tools/device/python.sh)
#   tools/device.sh suite                the whole GPU suite with the sanitizers (tools/device/suite.sh)
set -uo pipefail
# The area scripts first, before any variable here is set: they read BIN_DIR and BIN from the
# caller's environment.
case "${1:-}" in
  accuracy | decode | engine | eval | prefill | python | suite)
    if [ "${BASH_SOURCE[0]}" = "$0" ]; then
      exec bash "$(dirname "${BASH_SOURCE[0]}")/device/$1.sh" "${@:2}"
    fi
    ;;
esac
STAGE_DIR=/tmp/kascade-model
MODEL_FILE="$STAGE_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
BIN_DIR=/tmp/kascade-bin
source "$(dirname "${BASH_SOURCE[0]}")/device/lib.sh"

device_env() {
  cuda_library_path
  export KASCADE_MODEL="$MODEL_FILE" BIN="$BIN_DIR"
}

device_usage() {
  cat >&2 <<'EOF'
usage: tools/device.sh SUBCOMMAND [ARGS...]
  stage DIR                       copy a model part to /tmp/kascade-model
  model SHA256                    join the staged parts, check the SHA-256, print the model's path
  bins DIR                        unpack DIR/*.xz into /tmp/kascade-bin
  env                             (source it) LD_LIBRARY_PATH for cuBLAS; KASCADE_MODEL, BIN
  accuracy check|calibrate|curve|grid|ppl SHA256 ... | pack NAME
  decode test|sanitize|bench ...
  engine [--check|--engine-bench] [OPTIONS...] | --soak [memcheck|llama8b]
  eval stage DIR | run DIR SHA256 SECONDS OUT_NAME -- EVAL-ARGS...
  prefill BUILD_BIN OUT_DIR COMMIT [test|sanitize|bench]...
  python prepare | stage DIR | run [MODEL_PART_DIR]
  suite
EOF
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
  # Sourced: only `env` may change the caller's shell.
  if [ "${1:-}" = env ]; then
    device_env
  else
    echo "tools/device.sh: only 'env' can be sourced (got '${1:-}')" >&2
    device_usage
    return 2
  fi
  return 0
fi

case "${1:-}" in
  stage)
    mkdir -p "$STAGE_DIR" && cp "${2:?stage DIR}"/* "$STAGE_DIR"/ && ls -l "$STAGE_DIR"
    ;;
  model)
    sha=${2:?model SHA256}
    if [ ! -f "$MODEL_FILE" ]; then
      ls "$STAGE_DIR"/part.* >/dev/null 2>&1 || { echo "device.sh: no staged parts (machine not warm?)" >&2; exit 3; }
      cat $(ls "$STAGE_DIR"/part.* | sort) > "$MODEL_FILE"
    fi
    echo "$sha  $MODEL_FILE" | sha256sum -c - >&2 || exit 3
    echo "$MODEL_FILE"
    ;;
  bins)
    mkdir -p "$BIN_DIR"
    for f in "${2:?bins DIR}"/*.xz; do
      xz -dc "$f" > "$BIN_DIR/$(basename "$f" .xz)" && chmod +x "$BIN_DIR/$(basename "$f" .xz)"
    done
    ls -l "$BIN_DIR"
    ;;
  env)
    device_env
    ;;
  *)
    [ -n "${1:-}" ] && echo "tools/device.sh: unknown subcommand '$1'" >&2
    device_usage
    exit 2
    ;;
esac
