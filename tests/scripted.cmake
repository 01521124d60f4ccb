# Tests that drive the `kascade` binary, registered with ctest. Included by tests/CMakeLists.txt;
# each subcommand appends its own block below.
#
#   kascade_cli_test(NAME <test> EXIT <code> MATCH <regex> ARGS <kascade arguments...>)
# runs `kascade ARGS...` from the source tree and checks the exit code and that stdout+stderr
# match MATCH (see run_expect.cmake: a failure must also be one stderr line, no stdout).
if(NOT TARGET kascade)
  return()
endif()

function(kascade_cli_test)
  cmake_parse_arguments(T "" "NAME;EXIT;MATCH" "ARGS" ${ARGN})
  string(REPLACE ";" "|" joined "$<TARGET_FILE:kascade>;${T_ARGS}")
  add_test(NAME ${T_NAME}
           COMMAND ${CMAKE_COMMAND} "-DCOMMAND=${joined}" "-DEXIT=${T_EXIT}" "-DMATCH=${T_MATCH}"
                   -P ${CMAKE_CURRENT_LIST_DIR}/run_expect.cmake
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(${T_NAME} PROPERTIES LABELS cli)
endfunction()

# ---- kascade plan ------------------------------------------------------------------------------
set(plans tests/data/plans)
kascade_cli_test(NAME cli_plan_show_smollm2 EXIT 0
  MATCH "anchors \\(5\\): 0 2 8 14 21\nroles \\(D dense layer 0, A anchor, \\. reuse\\): D\\.A\\.\\.\\.\\.\\.A\\. \\.\\.\\.\\.A.*layer 3 \\(anchor 2\\): kv0<-kv2"
  ARGS plan show ${plans}/smollm2-135m.json)
kascade_cli_test(NAME cli_plan_show_calibration EXIT 0
  MATCH "budget fixed, pooling group.*candidate \\(3 anchors\\): 0 2 3  score 0\\.963"
  ARGS plan show ${plans}/tiny-fixed-budget.json)
kascade_cli_test(NAME cli_plan_show_identity EXIT 0 MATCH "head map: identity\n.*pooling all"
  ARGS plan show ${plans}/llama3-8b-all-pooled.json)
kascade_cli_test(NAME cli_plan_check_ok EXIT 0 MATCH "^ok: .*matches 30 layers, hq 9, hkv 3, head_dim 64\n$"
  ARGS plan check ${plans}/smollm2-135m.json --layers 30 --hq 9 --hkv=3 --head-dim 64)
kascade_cli_test(NAME cli_plan_check_mismatch EXIT 1 MATCH "model\\.hkv is 3 but the model has 1"
  ARGS plan check ${plans}/smollm2-135m.json --layers 30 --hq 9 --hkv 1 --head-dim 64)
kascade_cli_test(NAME cli_plan_check_missing_option EXIT 1 MATCH "--head-dim is required"
  ARGS plan check ${plans}/smollm2-135m.json --layers 30 --hq 9 --hkv 3)
kascade_cli_test(NAME cli_plan_check_unknown_option EXIT 1 MATCH "unknown option '--heads'"
  ARGS plan check ${plans}/smollm2-135m.json --layers 30 --heads 9)
kascade_cli_test(NAME cli_plan_check_options_first EXIT 0 MATCH "^ok: "
  ARGS plan check --layers=30 --hq 9 --hkv 3 --head-dim 64 ${plans}/smollm2-135m.json)
kascade_cli_test(NAME cli_plan_check_repeated_option EXIT 1 MATCH "--hq given more than once"
  ARGS plan check ${plans}/smollm2-135m.json --layers 30 --hq 9 --hq 3 --hkv 3 --head-dim 64)
kascade_cli_test(NAME cli_plan_check_two_files EXIT 1 MATCH "more than one FILE"
  ARGS plan check ${plans}/smollm2-135m.json ${plans}/smollm2-135m.json --layers 30 --hq 9 --hkv 3 --head-dim 64)
kascade_cli_test(NAME cli_plan_check_bad_number EXIT 1 MATCH "--layers: expected an integer, got '3x'"
  ARGS plan check ${plans}/smollm2-135m.json --layers 3x --hq 9 --hkv 3 --head-dim 64)
kascade_cli_test(NAME cli_plan_show_invalid EXIT 1
  MATCH "head-map-out-of-range\\.json: head_map\\[4\\]\\[1\\]: 3 is not a kv head \\(hkv = 2\\)"
  ARGS plan show ${plans}/invalid/head-map-out-of-range.json)
kascade_cli_test(NAME cli_plan_show_missing_file EXIT 1 MATCH "nonexistent\\.json: cannot open"
  ARGS plan show ${plans}/nonexistent.json)
kascade_cli_test(NAME cli_plan_show_extra_argument EXIT 1 MATCH "unexpected argument 'more'"
  ARGS plan show ${plans}/smollm2-135m.json more)
kascade_cli_test(NAME cli_plan_no_action EXIT 1 MATCH "missing subcommand" ARGS plan)
kascade_cli_test(NAME cli_plan_unknown_action EXIT 1 MATCH "unknown subcommand 'edit'" ARGS plan edit x.json)

# ---- kascade reference: the independent NumPy oracle (tests/python) ----------------------------
# Random and adversarial SPEC 9 cases compared with tests/python/ref_numpy.py, plus malformed
# inputs. The script exits 77 (reported by ctest as skipped, with its message) without numpy.
find_package(Python3 COMPONENTS Interpreter)
if(Python3_Interpreter_FOUND)
  add_test(NAME reference_numpy_oracle
           COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/python/compare_reference.py
                   --kascade $<TARGET_FILE:kascade> --cases 150)
  set_tests_properties(reference_numpy_oracle PROPERTIES LABELS "cpu;cli" SKIP_RETURN_CODE 77 TIMEOUT 900)
else()
  message(WARNING "kascade: no Python 3 interpreter; the NumPy oracle comparison (reference_numpy_oracle) is not registered")
endif()

# ---- kascade demo --------------------------------------------------------------------------------
kascade_cli_test(NAME cli_demo_small EXIT 0
  MATCH "layer +role.*\n +0 +layer0 +256 \\(100\\.0%\\).*\n +1 +anchor +128 \\(50\\.0%\\).*\n +2 +reuse +128.*worst output error"
  ARGS demo --layers 3 --context 256)
kascade_cli_test(NAME cli_demo_unknown_option EXIT 1 MATCH "unknown option '--bogus'" ARGS demo --bogus)
kascade_cli_test(NAME cli_demo_bad_layers EXIT 1 MATCH "--layers: expected 2..64, got 1" ARGS demo --layers 1)
kascade_cli_test(NAME cli_demo_missing_plan EXIT 1 MATCH "no-such-plan.json" ARGS demo --plan no-such-plan.json)

# ---- kascade generate ----------------------------------------------------------------------------
kascade_cli_test(NAME cli_generate_chat_default_model EXIT 0
  MATCH "Paris.*prefill: [0-9]+ tokens.*tokens/s \\| decode: .*keys read by attention: 100\\.0% \\| peak RSS: [0-9]+ MiB"
  ARGS generate --model default --chat --prompt "What is the capital of France?" --max-tokens 24)
# Without the engine's CUDA backend in the build, or without a GPU: one clear error either way.
kascade_cli_test(NAME cli_generate_cuda_unavailable EXIT 1 MATCH "[Cc][Uu][Dd][Aa]|GPU"
  ARGS generate --backend cuda --prompt hi)
kascade_cli_test(NAME cli_generate_needs_one_prompt EXIT 1 MATCH "exactly one of --prompt and --prompt-file"
  ARGS generate --model default)
kascade_cli_test(NAME cli_generate_unknown_option EXIT 1 MATCH "unknown option '--frobnicate'"
  ARGS generate --prompt hi --frobnicate)
kascade_cli_test(NAME cli_generate_missing_model EXIT 1 MATCH "model file 'no/such.gguf' does not exist"
  ARGS generate --model no/such.gguf --prompt hi)
kascade_cli_test(NAME cli_generate_bad_top_p EXIT 1 MATCH "top_p must be in .0, 1. "
  ARGS generate --prompt hi --temperature 0.5 --top-p 0)
kascade_cli_test(NAME cli_generate_plan_shape_mismatch EXIT 1 MATCH "plan"
  ARGS generate --model default --prompt hi --plan tests/data/plans/tiny-fixed-budget.json)
kascade_cli_test(NAME cli_generate_not_a_gguf EXIT 1 MATCH "not a GGUF file"
  ARGS generate --model tests/data/engine/golden_prompts.json --prompt hi)
kascade_cli_test(NAME cli_generate_with_plan EXIT 0
  MATCH "Paris.*attention: kascade plan tests/data/plans/smollm2-135m.json.*keys read by attention: [0-9.]+%"
  ARGS generate --model default --chat --prompt "What is the capital of France?" --max-tokens 24
       --plan tests/data/plans/smollm2-135m.json)
kascade_cli_test(NAME cli_generate_context_limit EXIT 1 MATCH "exceeds the model's context length of 8192 tokens"
  ARGS generate --model default --prompt hi --max-tokens 9000)
