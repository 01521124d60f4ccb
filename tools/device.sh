#!/usr/bin/env bash
# tools/device.sh — the steps of a GPU-machine call, as subcommands (run from the repository root
# on the GPU machine; logs and results go under $OUT).
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
set -uo pipefail
STAGE_DIR=/tmp/kascade-model
MODEL_FILE="$STAGE_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
BIN_DIR=/tmp/kascade-bin

device_env() {
  local lib_dirs wheel
  lib_dirs=$(ls -d /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib 2>/dev/null | tr '\n' ' ')
  if ! ls /usr/local/cuda/lib64/libcublas.so.13 >/dev/null 2>&1; then
    wheel=$(python3 -c 'import glob, site; print(":".join(sorted({p.rsplit("/", 1)[0] for s in site.getsitepackages() for p in glob.glob(s + "/nvidia/**/libcublas.so.13", recursive=True)})))' 2>/dev/null || true)
    lib_dirs="$lib_dirs $wheel"
  fi
  export LD_LIBRARY_PATH="$(echo $lib_dirs | tr ' ' ':')${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export KASCADE_MODEL="$MODEL_FILE" BIN="$BIN_DIR"
}

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
    echo "usage: tools/device.sh stage DIR | model SHA256 | bins DIR | env" >&2
    exit 2
    ;;
esac
