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
  ARGS demo --synthetic --layers 3 --context 256)
kascade_cli_test(NAME cli_demo_synthetic_unknown_option EXIT 1 MATCH "unknown option '--bogus'" ARGS demo --synthetic --bogus)
kascade_cli_test(NAME cli_demo_synthetic_bad_layers EXIT 1 MATCH "--layers: expected 2..64, got 1" ARGS demo --synthetic --layers 1)
kascade_cli_test(NAME cli_demo_synthetic_missing_plan EXIT 1 MATCH "no-such-plan.json" ARGS demo --synthetic --plan no-such-plan.json)
kascade_cli_test(NAME cli_demo_unknown_option EXIT 1 MATCH "unknown option '--layers'" ARGS demo --layers 3)
kascade_cli_test(NAME cli_demo_bad_length EXIT 1 MATCH "--length: expected 256..8192 tokens, got 100" ARGS demo --length 100)
kascade_cli_test(NAME cli_demo_unknown_task EXIT 1 MATCH "--task: unknown task 'trivia'" ARGS demo --task trivia)
kascade_cli_test(NAME cli_demo_missing_plan EXIT 1 MATCH "no-such-plan.json" ARGS demo --plan no-such-plan.json)
kascade_cli_test(NAME cli_demo_bad_kv_cache EXIT 1 MATCH "--kv-cache must be f32, f16 or fp8, got 'f8'" ARGS demo --kv-cache f8)
kascade_cli_test(NAME cli_demo_wrong_model_plan EXIT 1 MATCH "layers"
  ARGS demo --backend cpu --plan tests/data/plans/llama3-8b-all-pooled.json)
# The model demo end to end on the default model (a short prompt, to keep CI fast).
kascade_cli_test(NAME cli_demo_model EXIT 0
  MATCH "hidden answer is \"[0-9]+\".*\ndense +\" [0-9]+.* yes .*\nkascade +\" [0-9]+.* yes .*agreement: same answer"
  ARGS demo --backend cpu --task niah-single --length 512 --plan tests/data/plans/smollm2-135m.json)

# ---- kascade generate ----------------------------------------------------------------------------
kascade_cli_test(NAME cli_generate_chat_default_model EXIT 0
  MATCH "Paris.*prefill: [0-9]+ tokens.*tokens/s \\| decode: .*keys read by attention: 100\\.0% \\| peak RSS: [0-9]+ MiB"
  ARGS generate --model default --chat --prompt "What is the capital of France?" --max-tokens 24)
# Without the engine's CUDA backend in the build, or without a GPU: one clear error either way.
kascade_cli_test(NAME cli_generate_cuda_unavailable EXIT 1 MATCH "[Cc][Uu][Dd][Aa]|GPU"
  ARGS generate --backend cuda --prompt hi)
kascade_cli_test(NAME cli_generate_needs_a_prompt EXIT 1 MATCH "give a prompt: --prompt TEXT or --prompt-file FILE"
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
kascade_cli_test(NAME cli_generate_print_ids EXIT 0 MATCH "prompt ids: 19556 905\ngenerated ids: 282 260"
  ARGS generate --model default --dense --prompt "Hello world" --max-tokens 2 --print-ids)
kascade_cli_test(NAME cli_generate_with_plan EXIT 0
  MATCH "Paris.*attention: kascade plan tests/data/plans/smollm2-135m.json.*keys read by attention: [0-9.]+%"
  ARGS generate --model default --chat --prompt "What is the capital of France?" --max-tokens 24
       --plan tests/data/plans/smollm2-135m.json)
kascade_cli_test(NAME cli_generate_context_limit EXIT 1 MATCH "exceeds the model's context length of 8192 tokens"
  ARGS generate --model default --prompt hi --max-tokens 9000)
# --kv-cache: f16 unless given; f32 or fp8 on request (the same greedy tokens here); cpu only.
kascade_cli_test(NAME cli_generate_kv_cache_default EXIT 0 MATCH "generated ids: 282\n.*cpu \\(f16 KV cache\\), attention: dense"
  ARGS generate --model default --dense --prompt "Hello world" --max-tokens 1 --print-ids)
kascade_cli_test(NAME cli_generate_kv_cache_f32 EXIT 0 MATCH "generated ids: 282 260\n.*cpu \\(f32 KV cache\\), attention: dense"
  ARGS generate --model default --dense --prompt "Hello world" --max-tokens 2 --print-ids --kv-cache f32)
kascade_cli_test(NAME cli_generate_kv_cache_fp8 EXIT 0 MATCH "generated ids: 282 260\n.*cpu \\(f8e4m3 KV cache\\), attention: dense"
  ARGS generate --model default --dense --prompt "Hello world" --max-tokens 2 --print-ids --kv-cache fp8)
kascade_cli_test(NAME cli_generate_bad_kv_cache EXIT 1 MATCH "--kv-cache must be f32, f16 or fp8, got 'bf16'"
  ARGS generate --prompt hi --kv-cache bf16)
kascade_cli_test(NAME cli_generate_kv_cache_not_cuda EXIT 1
  MATCH "--kv-cache applies to the cpu backend; backend 'cuda' keeps its own KV cache"
  ARGS generate --backend cuda --kv-cache f32 --prompt hi)

# ---- kascade calibrate ---------------------------------------------------------------------------
# A short end-to-end calibration of the default model (6 + 6 dev prompts of 160 tokens, anchor
# counts 2 and 3, one search step from each), whose plan and report the next tests read: the plan passes `kascade
# plan check` and records its choice, the report plots.
set(calibrate_out ${CMAKE_BINARY_DIR}/cli_calibrate)
file(MAKE_DIRECTORY ${calibrate_out})
kascade_cli_test(NAME cli_calibrate_small EXIT 0
  MATCH "statistics: 6 prompts \\(paper: [0-9]+ generated rows, decode rows set [0-9]+ of [0-9]+ minima\\).*\\*(search|candidate|pooling) .*chosen: anchors 0 [0-9 ]+, pooling (group|all), held-out kl [0-9.]+, answer loss [0-9.]+ \\([0-9]+ plans scored, 2 in 2 searches \\(one per anchor count\\)\\).*plan written to.*m 2: anchors 0 [0-9]+, pooling (group|all), held-out kl [0-9.]+ -> [^ ]*/m2.json.*m 3: anchors 0 [0-9]+ [0-9]+, pooling (group|all), held-out kl [0-9.]+ -> [^ ]*/m3.json.*calibrating .* on the cpu backend: dev split, seed 1: 6 statistics prompts of 160 tokens \\+ 6 held-out prompts of 160, 192 tokens.*calibrate candidates "
  ARGS calibrate --model default --dev-prompts 12 --length 160 --held-out-lengths 160,192 --continuation-rows 4
       --generated-rows 2 --anchors 2..3 --search-every-count --search-evaluations 1 --name smollm2-test --out ${calibrate_out}/plan.json
       --report ${calibrate_out}/report.json --plans-dir ${calibrate_out})
set_tests_properties(cli_calibrate_small PROPERTIES FIXTURES_SETUP calibrated_plan)
kascade_cli_test(NAME cli_calibrate_plan_checks EXIT 0 MATCH "^ok: .*matches 30 layers, hq 9, hkv 3, head_dim 64\n$"
  ARGS plan check ${calibrate_out}/plan.json --layers 30 --hq 9 --hkv 3 --head-dim 64)
kascade_cli_test(NAME cli_calibrate_per_m_plan_checks EXIT 0 MATCH "^ok: .*matches 30 layers, hq 9, hkv 3, head_dim 64\n$"
  ARGS plan check ${calibrate_out}/m2.json --layers 30 --hq 9 --hkv 3 --head-dim 64)
kascade_cli_test(NAME cli_calibrate_plan_provenance EXIT 0
  MATCH "model: smollm2-test.*anchors \\([23]\\).*dev_set: dev split, seed 1: 6 statistics.*tool_version: kascade [0-9.]+ calibrate.*k_cal: (32|64).*chosen by held-out loss among [0-9]+ plans \\(statistic (spec|paper)\\)"
  ARGS plan show ${calibrate_out}/plan.json)
set_tests_properties(cli_calibrate_plan_checks cli_calibrate_per_m_plan_checks cli_calibrate_plan_provenance
  PROPERTIES FIXTURES_REQUIRED calibrated_plan)
if(Python3_Interpreter_FOUND)
  add_test(NAME cli_calibrate_plot
           COMMAND ${Python3_EXECUTABLE} ${CMAKE_SOURCE_DIR}/tools/plot_calibration.py
                   ${calibrate_out}/report.json ${calibrate_out}/pictures)
  set_tests_properties(cli_calibrate_plot PROPERTIES FIXTURES_REQUIRED calibrated_plan LABELS cli
                       PASS_REGULAR_EXPRESSION "candidates\\.png\n.*search\\.png\n.*layer_scores_spec\\.png\n.*layer_scores_paper\\.png\n.*importance\\.png")
endif()
kascade_cli_test(NAME cli_calibrate_needs_out EXIT 1 MATCH "--out PLAN.json is required" ARGS calibrate --preset small)
kascade_cli_test(NAME cli_calibrate_unknown_option EXIT 1 MATCH "unknown option '--anchor'"
  ARGS calibrate --anchor 3..8 --out x.json)
kascade_cli_test(NAME cli_calibrate_old_option EXIT 1 MATCH "unknown option '--from-report'"
  ARGS calibrate --from-report r.json --out x.json)
kascade_cli_test(NAME cli_calibrate_bad_range EXIT 1 MATCH "--anchors: expected LO..HI with 1 <= LO <= HI, got '8..3'"
  ARGS calibrate --anchors 8..3 --out x.json)
kascade_cli_test(NAME cli_calibrate_bad_range_number EXIT 1 MATCH "--anchors \\(last count\\): expected an integer, got 'x'"
  ARGS calibrate --anchors 3..x --out x.json)
kascade_cli_test(NAME cli_calibrate_range_outside_model EXIT 1 MATCH "--anchors 3..31: the model has only 30 layers"
  ARGS calibrate --model default --anchors 3..31 --out ${calibrate_out}/never.json)
kascade_cli_test(NAME cli_calibrate_odd_prompts EXIT 1 MATCH "--dev-prompts must be even and >= 12.*got 13"
  ARGS calibrate --dev-prompts 13 --out x.json)
kascade_cli_test(NAME cli_calibrate_bad_preset EXIT 1 MATCH "--preset must be default or small, got 'tiny'"
  ARGS calibrate --preset tiny --out x.json)
kascade_cli_test(NAME cli_calibrate_bad_backend EXIT 1 MATCH "--backend must be cpu or cuda, got 'gpu'"
  ARGS calibrate --backend gpu --out x.json)
kascade_cli_test(NAME cli_calibrate_kv_cache_not_cuda EXIT 1 MATCH "--kv-cache applies to the cpu backend"
  ARGS calibrate --backend cuda --kv-cache f16 --out x.json)
if(NOT KASCADE_HAVE_CUDA)
  kascade_cli_test(NAME cli_calibrate_cuda_not_built EXIT 1 MATCH "this build does not include the engine's CUDA backend"
    ARGS calibrate --backend cuda --out ${calibrate_out}/never.json)
endif()
kascade_cli_test(NAME cli_calibrate_beyond_context EXIT 1
  MATCH "--length 8190 with 16 generated rows is beyond the model's context of 8192 tokens"
  ARGS calibrate --model default --length 8190 --out ${calibrate_out}/never.json)
kascade_cli_test(NAME cli_calibrate_bad_held_out_length EXIT 1 MATCH "--held-out-lengths: expected an integer, got 'x'"
  ARGS calibrate --held-out-lengths 1024,x --out x.json)
kascade_cli_test(NAME cli_calibrate_held_out_beyond_context EXIT 1
  MATCH "--held-out-lengths: 9000 tokens is beyond the model's context of 8192 tokens"
  ARGS calibrate --model default --held-out-lengths 1024,9000 --out ${calibrate_out}/never.json)
kascade_cli_test(NAME cli_calibrate_held_out_too_short EXIT 1
  MATCH "--held-out-lengths: 20 tokens cannot hold 32 continuation rows after a context"
  ARGS calibrate --model default --held-out-lengths 20 --out ${calibrate_out}/never.json)
kascade_cli_test(NAME cli_calibrate_plans_dir_missing EXIT 1 MATCH "--plans-dir: 'no/such' is not a directory"
  ARGS calibrate --out x.json --plans-dir no/such)
kascade_cli_test(NAME cli_calibrate_missing_dir EXIT 1 MATCH "--report: directory 'no/such' of 'no/such/r.json' does not exist"
  ARGS calibrate --out x.json --report no/such/r.json)
kascade_cli_test(NAME cli_calibrate_without_corpus EXIT 1
  MATCH "natural text corpus: .*jargon\\.txt\\.gz is missing: install the Debian package jargon-text"
  ARGS calibrate --model default --out ${calibrate_out}/never.json)
set_tests_properties(cli_calibrate_without_corpus PROPERTIES ENVIRONMENT KASCADE_CORPUS_ROOT=${CMAKE_BINARY_DIR}/no_corpus)
kascade_cli_test(NAME cli_calibrate_too_short EXIT 1
  MATCH "--length 100 is too short: with 32 continuation rows the statistics' prompts need more than 96 tokens \\(tile 32, k_cal 64\\)"
  ARGS calibrate --length 100 --out x.json)
kascade_cli_test(NAME cli_calibrate_bad_rho EXIT 1 MATCH "--rho must be in .0, 1., got 0" ARGS calibrate --rho 0 --out x.json)
kascade_cli_test(NAME cli_calibrate_same_outputs EXIT 1 MATCH "--report and --out name the same file"
  ARGS calibrate --out ${calibrate_out}/same.json --report ${calibrate_out}/same.json)
kascade_cli_test(NAME cli_calibrate_out_dir_missing EXIT 1 MATCH "--out: directory 'no/such/dir' of 'no/such/dir/plan.json' does not exist"
  ARGS calibrate --out no/such/dir/plan.json)
kascade_cli_test(NAME cli_generate_batch EXIT 0
  MATCH "\\[1\\] The capital of France is Paris\\.\n\\[2\\] .*cpu, batch of 2.*keys read by attention"
  ARGS generate --model default --chat --prompt "What is the capital of France?" --prompt "What is 2+2?"
       --max-tokens 16)
kascade_cli_test(NAME cli_generate_graphs_need_cuda EXIT 1 MATCH "--no-cuda-graphs applies to --backend cuda only"
  ARGS generate --no-cuda-graphs --prompt a --prompt b)

# ---- kascade generate: the default model runs with its shipped plan ------------------------------
kascade_cli_test(NAME cli_generate_default_plan EXIT 0
  MATCH "attention: kascade plan [^\n]*plans/smollm2-135m-instruct\\.json\n.*keys read by attention"
  ARGS generate --prompt "The capital of France is" --max-tokens 2)
kascade_cli_test(NAME cli_generate_dense_flag EXIT 0 MATCH "attention: dense\n"
  ARGS generate --dense --prompt "The capital of France is" --max-tokens 2)
kascade_cli_test(NAME cli_generate_dense_and_plan EXIT 1 MATCH "--dense and --plan exclude each other"
  ARGS generate --dense --plan plans/smollm2-135m-instruct.json --prompt hi)

# ---- kascade eval --------------------------------------------------------------------------------
kascade_cli_test(NAME cli_eval_small EXIT 0
  MATCH "\\*\\*Split: eval\\*\\*.*\\*\\*N = 1 examples\\*\\*.*\\| policy \\| group \\| N \\| exact match % \\| Δ answer log-lik \\| KL question \\| KL answer \\|.*\\| dense \\| all \\| 1 \\| [0-9.]+ \\[[0-9.]+, [0-9.]+\\] \\| — \\|.*\\| streaming @ 0\\.25 \\| all \\| 1 \\| [0-9.]+ \\[[0-9.]+, [0-9.]+\\] \\| [-+][0-9.]+ \\[[-+][0-9.]+, [-+][0-9.]+\\] \\| [0-9.]+ \\[[0-9.]+, [0-9.]+\\] \\|.*\\| quest @ 0\\.25 \\| all \\| 1 \\|.*Equal keys attended.*\\| quest \\| 20% \\|.*\\| quest @ 0\\.25 \\| passkey \\| 1 \\|"
  ARGS eval --tasks passkey --lengths 320 --examples 1 --policies streaming,quest --rho 0.25
       --out ${CMAKE_BINARY_DIR}/cli_eval_small)
kascade_cli_test(NAME cli_eval_needs_out EXIT 1 MATCH "--out DIR is required" ARGS eval --tasks passkey)
kascade_cli_test(NAME cli_eval_unknown_option EXIT 1 MATCH "unknown option '--needles'" ARGS eval --needles 3 --out x)
kascade_cli_test(NAME cli_eval_unknown_task EXIT 1 MATCH "--tasks: unknown 'haystack' \\(known: passkey, niah-single"
  ARGS eval --tasks passkey,haystack --out x)
kascade_cli_test(NAME cli_eval_unknown_policy EXIT 1 MATCH "--policies: unknown 'h2o'" ARGS eval --policies h2o --out x)
kascade_cli_test(NAME cli_eval_policy_needs_plan EXIT 1 MATCH "policy 'kascade' needs a plan \\(--plan\\)"
  ARGS eval --policies dense,kascade --out x)
kascade_cli_test(NAME cli_eval_bad_rho EXIT 1 MATCH "--rho: each value must be in \\(0, 1.*, got 1\\.5"
  ARGS eval --rho 0.1,1.5 --out x)
kascade_cli_test(NAME cli_eval_bad_length EXIT 1 MATCH "--lengths: expected an integer, got '1k'"
  ARGS eval --lengths 1k --out x)
kascade_cli_test(NAME cli_eval_bad_split EXIT 1 MATCH "--split must be dev or eval, got 'test'"
  ARGS eval --split test --out x)
kascade_cli_test(NAME cli_eval_copy_without_corpus EXIT 1
  MATCH "natural text corpus: .*jargon\\.txt\\.gz is missing: install the Debian package jargon-text"
  ARGS eval --tasks copy --lengths 1024 --policies dense --out ${CMAKE_BINARY_DIR}/cli_eval_no_corpus)
set_tests_properties(cli_eval_copy_without_corpus PROPERTIES ENVIRONMENT KASCADE_CORPUS_ROOT=${CMAKE_BINARY_DIR}/no_corpus)
kascade_cli_test(NAME cli_eval_bad_prefill EXIT 1 MATCH "--prefill must be dense or sparse, got 'half'"
  ARGS eval --prefill half --out x)
kascade_cli_test(NAME cli_eval_plan_mismatch EXIT 1 MATCH "model\\.layers is 32 but the model has 30"
  ARGS eval --plan tests/data/plans/llama3-8b-all-pooled.json --policies kascade --lengths 320 --out x)
kascade_cli_test(NAME cli_eval_out_is_a_file EXIT 1 MATCH "--out: 'README\\.md' exists and is not a directory"
  ARGS eval --policies dense --out README.md)
kascade_cli_test(NAME cli_eval_unknown_backend EXIT 1 MATCH "unknown backend 'tpu' \\(supported: cpu, cuda\\)"
  ARGS eval --backend tpu --out x)
kascade_cli_test(NAME cli_eval_bad_kv_cache EXIT 1 MATCH "--kv-cache must be f32, f16 or fp8, got 'f64'"
  ARGS eval --kv-cache f64 --out x)
kascade_cli_test(NAME cli_eval_kv_cache_f32 EXIT 0 MATCH "on the CPU backend \\(f32 KV cache\\)\\..*\\| streaming @ 0\\.25 \\| all \\| 1 \\|"
  ARGS eval --tasks passkey --lengths 320 --examples 1 --policies streaming --rho 0.25 --kv-cache f32
       --out ${CMAKE_BINARY_DIR}/cli_eval_kv_cache_f32)
set(eval_gpu_run bench/results/eval_gpu/run_calibrated/eval.json)
kascade_cli_test(NAME cli_eval_from_json EXIT 0
  MATCH "first 1 example\\(s\\) of every task and length.*\\*\\*Split: eval\\*\\*.*\\| kascade @ 0\\.10 \\| all \\| 24 \\| 12\\.5 \\[[0-9.]+, [0-9.]+\\] \\| -0\\.795 \\[-[0-9.]+, -[0-9.]+\\] \\| — \\| — \\|.*\\| kascade @ 0\\.10 \\| 12\\.5 \\| 33\\.3 \\| 16\\.7 \\| 0\\.0 \\| 0\\.0 \\|"
  ARGS eval --from-json ${eval_gpu_run} --examples 1 --out ${CMAKE_BINARY_DIR}/cli_eval_from_json)
kascade_cli_test(NAME cli_eval_from_json_incomplete EXIT 1
  MATCH "example #1 of passkey @ 2048 is not in the stored run" ARGS eval --from-json ${eval_gpu_run} --out x)
kascade_cli_test(NAME cli_eval_from_json_alone EXIT 1 MATCH "--from-json takes only --out and --examples"
  ARGS eval --from-json ${eval_gpu_run} --lengths 1024 --out x)
kascade_cli_test(NAME cli_eval_write_tokens EXIT 0
  MATCH "wrote [^\n]*cli_eval_tokens/eval\\.md and [^\n]*cli_eval_tokens/eval\\.json and [^\n]*cli_eval_tokens/tokens\\.json"
  ARGS eval --tasks passkey --lengths 256 --examples 1 --policies streaming --rho 0.25 --prefill sparse --write-tokens
       --out ${CMAKE_BINARY_DIR}/cli_eval_tokens)
kascade_cli_test(NAME cli_eval_from_json_tokens EXIT 1 MATCH "--from-json takes only --out and --examples"
  ARGS eval --from-json ${eval_gpu_run} --write-tokens --out x)
kascade_cli_test(NAME cli_eval_from_json_split EXIT 1 MATCH "--from-json takes only --out and --examples"
  ARGS eval --from-json ${eval_gpu_run} --split dev --out x)

# ---- Hugging Face model directories (tests/data/hf) ------------------------------------------------
kascade_cli_test(NAME cli_generate_hf_directory EXIT 0
  MATCH "model: Qwen2ForCausalLM \\(qwen2, 2 layers.*prefill: [0-9]+ tokens.*stopped at --max-tokens"
  ARGS generate --model tests/data/hf/qwen2 --chat --prompt "Hi" --max-tokens 4)
kascade_cli_test(NAME cli_generate_hf_sharded_llama EXIT 0 MATCH "model: LlamaForCausalLM \\(llama, 3 layers"
  ARGS generate --model tests/data/hf/llama --prompt "The sky is a map" --max-tokens 4)
kascade_cli_test(NAME cli_generate_directory_without_config EXIT 1 MATCH "is a directory without config.json"
  ARGS generate --model tests/data/hf --prompt hi)
kascade_cli_test(NAME cli_generate_hf_window_on_cuda EXIT 1 MATCH "sliding attention window of 16|does not include the engine's CUDA"
  ARGS generate --model tests/data/hf/mistral --backend cuda --prompt hi)

# ---- kascade perplexity --------------------------------------------------------------------------
set(ppl tests/data/perplexity)
kascade_cli_test(NAME cli_perplexity_small EXIT 0
  MATCH "N = 4 window\\(s\\) of 40 tokens, the last 8 scored \\(decode mode, k_min 4\\).*\\| dense \\| 32 \\| [0-9.]+ \\[[0-9.]+, [0-9.]+\\] \\|[^\n]*\\| 0\\.0000 \\[0\\.0000, 0\\.0000\\] \\| 1\\.000 \\[1\\.000, 1\\.000\\] \\|.*\\| streaming @ 0\\.25 \\| 32 \\|.*\\| oracle @ 0\\.25 \\| 32 \\|"
  ARGS perplexity --text ${ppl}/sample.txt --context 40 --score 8 --policy streaming,oracle --rho 0.25 --k-min 4
       --out ${CMAKE_BINARY_DIR}/cli_perplexity_small.json)
kascade_cli_test(NAME cli_perplexity_jsonl_skips_short EXIT 0
  MATCH "N = 1 window\\(s\\) of 32 tokens, the last 4 scored \\(prefill mode, k_min 16\\); 1 document\\(s\\) shorter than a window skipped"
  ARGS perplexity --jsonl ${ppl}/docs.jsonl --context 32 --score 4 --policy dense --mode prefill)
kascade_cli_test(NAME cli_perplexity_empty_text EXIT 1 MATCH "--text: '[^']*empty\\.txt' is empty"
  ARGS perplexity --text ${ppl}/empty.txt --context 64 --score 8 --out ${CMAKE_BINARY_DIR}/cli_perplexity_bad.json)
kascade_cli_test(NAME cli_perplexity_short_text EXIT 1
  MATCH "--text: too short: the longest document has [0-9]+ tokens, fewer than the 64 of one window \\(--context 64\\)"
  ARGS perplexity --text ${ppl}/short.txt --context 64 --score 8 --out ${CMAKE_BINARY_DIR}/cli_perplexity_bad.json)
kascade_cli_test(NAME cli_perplexity_plan_mismatch EXIT 1 MATCH "model\\.layers is 32 but the model has 30"
  ARGS perplexity --text ${ppl}/sample.txt --context 64 --score 8 --policy kascade
       --plan tests/data/plans/llama3-8b-all-pooled.json)
kascade_cli_test(NAME cli_perplexity_context_too_long EXIT 1
  MATCH "a context of 100000 tokens is beyond the model's context of 8192 tokens"
  ARGS perplexity --text ${ppl}/sample.txt --context 100000 --score 8 --policy dense)
kascade_cli_test(NAME cli_perplexity_unknown_policy EXIT 1 MATCH "--policy: unknown 'h2o' \\(known: dense, "
  ARGS perplexity --text ${ppl}/sample.txt --policy dense,h2o)
kascade_cli_test(NAME cli_perplexity_bad_rho EXIT 1 MATCH "--rho: each value must be in \\(0, 1.*, got 0"
  ARGS perplexity --text ${ppl}/sample.txt --policy oracle --rho 0.1,0)
kascade_cli_test(NAME cli_perplexity_score_not_below_context EXIT 1
  MATCH "--score must be in 1\\.\\.63 \\(below --context 64\\), got 64"
  ARGS perplexity --text ${ppl}/sample.txt --context 64 --score 64)
kascade_cli_test(NAME cli_perplexity_missing_file EXIT 1 MATCH "--text: '[^']*nonexistent\\.txt' does not exist"
  ARGS perplexity --text ${ppl}/nonexistent.txt --policy dense)
kascade_cli_test(NAME cli_perplexity_bad_jsonl EXIT 1 MATCH "--jsonl: line 2 of '[^']*bad\\.jsonl' has no \"text\" string"
  ARGS perplexity --jsonl ${ppl}/bad.jsonl --context 16 --score 4 --policy dense)
kascade_cli_test(NAME cli_perplexity_no_input EXIT 1 MATCH "no input: give --text FILE, --jsonl FILE or --corpus"
  ARGS perplexity --policy dense)
kascade_cli_test(NAME cli_perplexity_two_inputs EXIT 1 MATCH "give only one of --text, --jsonl and --corpus"
  ARGS perplexity --text ${ppl}/sample.txt --corpus natural-eval)
kascade_cli_test(NAME cli_perplexity_bad_corpus EXIT 1 MATCH "--corpus must be natural-dev or natural-eval, got 'natural'"
  ARGS perplexity --corpus natural)
kascade_cli_test(NAME cli_perplexity_bad_mode EXIT 1 MATCH "unknown mode 'sparse' \\(expected decode or prefill\\)"
  ARGS perplexity --text ${ppl}/sample.txt --mode sparse)
kascade_cli_test(NAME cli_perplexity_unknown_option EXIT 1 MATCH "unknown option '--ctx'"
  ARGS perplexity --text ${ppl}/sample.txt --ctx 64)
kascade_cli_test(NAME cli_perplexity_bad_kv_cache EXIT 1 MATCH "--kv-cache must be f32, f16 or fp8, got 'e5m2'"
  ARGS perplexity --text ${ppl}/sample.txt --kv-cache e5m2)
kascade_cli_test(NAME cli_perplexity_bad_reference_kv_cache EXIT 1
  MATCH "--reference-kv-cache must be f32, f16 or fp8, got 'bf16'"
  ARGS perplexity --text ${ppl}/sample.txt --reference-kv-cache bf16)
kascade_cli_test(NAME cli_perplexity_reference_kv_cache_is_the_cache EXIT 1
  MATCH "--reference-kv-cache f32 is the run's own KV cache \\(--kv-cache f32\\): name another type to compare against"
  ARGS perplexity --text ${ppl}/sample.txt --kv-cache f32 --reference-kv-cache f32)
kascade_cli_test(NAME cli_perplexity_reference_kv_cache_is_the_default_cache EXIT 1
  MATCH "--reference-kv-cache f16 is the run's own KV cache \\(--kv-cache f16, the default\\)"
  ARGS perplexity --text ${ppl}/sample.txt --reference-kv-cache f16)
kascade_cli_test(NAME cli_perplexity_reference_kv_cache_not_cuda EXIT 1
  MATCH "--reference-kv-cache applies to the cpu backend; backend 'cuda' keeps its own KV cache"
  ARGS perplexity --text ${ppl}/sample.txt --backend cuda --reference-kv-cache f32)
kascade_cli_test(NAME cli_perplexity_reference_kv_cache EXIT 0
  MATCH "The reference is dense attention on an f32 KV cache; every other row runs on an fp8 KV cache.*KL vs reference.*\\| dense \\(f32 cache, reference\\) \\| 8 \\|[^\n]*\\| 0\\.0000 \\[0\\.0000, 0\\.0000\\] \\| 1\\.000 \\[1\\.000, 1\\.000\\] \\|.*\\| dense \\(fp8 cache\\) \\| 8 \\|.*\\| streaming @ 0\\.25 \\(fp8 cache\\) \\| 8 \\|"
  ARGS perplexity --text ${ppl}/sample.txt --context 24 --score 4 --max-windows 2 --policy streaming --rho 0.25 --k-min 4
       --kv-cache fp8 --reference-kv-cache f32)
