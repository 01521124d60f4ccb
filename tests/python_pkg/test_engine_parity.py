"""transformers + SmolLM2 with Kascade against the C++ engine on the eval tasks (issue 15).

`kascade eval --write-tokens` makes the examples exactly as the accuracy study does (the tasks of
src/eval/tasks.cpp, split eval) and scores each with dense attention and with the shipped plan
(policy kascade), writing the prompt and answer token ids and, per run, the greedy (argmax)
token and log p(answer token) of every answer row, teacher forced. This test gives transformers
the same token ids, computes the same quantities and asserts per run: the same greedy answer
tokens (hence the same exact-match outcome) and the same mean answer log-likelihood, within
the Tolerance of the device below. Dense attention (the engine's dense run against transformers'
sdpa) is the control: no Kascade in it, so its differences are the model numerics alone.

Two protocols, each the same computation on both sides:
  sparse  `kascade eval --prefill sparse`, which is what kascade.hf does: the whole prompt
          (context and query) through one Kascade prefill (SPEC 5 tiles; the engine prefills in
          chunks of 512 tokens, whole tiles, so the tiling is the same), then each answer token
          as one decode step (SPEC 4). The full method.
  dense   the eval's default protocol: the context prefilled with dense attention (sdpa in
          transformers), then the query and the answer tokens as Kascade decode steps.
The engine's sparse prefill runs the policy through the host reference attention (fp64, tens of
seconds per 1k tokens), so long prompts use the dense protocol (decode on the GPU kernels).

Numerics (why the tolerance is not zero): both sides hold the same fp32 weights. The engine
(`kascade eval` loads the GGUF as fp32) and transformers (kascade.models: the GGUF dequantized by
the `gguf` package, saved as fp32 safetensors) dequantize the same Q4_1 matrices and Q8_0
embedding (the engine's dequantizers are tested against the `gguf` package). What differs is the
arithmetic: the order of fp32 sums in the matrix products (engine: blocks of 64 products over
16-row panels; torch: MKL), RMSNorm, RoPE (the engine takes the angles in fp64), and attention
(eval policies: the fp64 host reference; kascade.hf: the package's fp32 CPU operators or its bf16
CUDA kernels). A top-k selection is discrete, so where two keys' pooled masses nearly tie at the
k-th place these small differences can move one across, and the change compounds over the layers.

Measured (2-core CPU, eval split, all seven tasks, 1024 and 2048 tokens; sparse protocol 2
examples per task and length, 56 runs; dense protocol 1 example, 28 runs):
  fp32 (the CPU test):  every greedy token equal, so every exact-match outcome; |mean answer
    log-lik difference| dense <= 1.6e-5 nats/token (per token <= 1.6e-4), Kascade <= 5.1e-5 on
    55 of 56 sparse runs and 4.5e-4 on one (kv-uuid, 2k; one token 8.7e-3: a moved key).
  transformers bf16 against the fp32 engine (sparse, 1k, 7 runs each; the stand-in for the GPU):
    dense <= 1.4e-2 nats/token with one greedy flip at an exact bf16 tie; Kascade <= 4.5e-2 on 6
    of 7, 0.118 on copy (one token 3.5 nats, a greedy change at margin 1.9: a moved key).
  For scale: Kascade itself changes the answer log-likelihood of these examples by 2e-3 to 0.8
    nats/token against dense (median 0.08). transformers with a plan one step off against the
    engine with the shipped one (anchor 9 moved to 10, or k_min 112 for 128; passkey,
    niah-single, vartrack at 1k and this file's CPU grid at 384): 4.5e-4 to 2.4e-2 nats/token,
    every run past the CPU bound.

Sizes: the CPU default is short enough for CI (< 60 s on an idle 2-core machine); with a GPU
(`device` cuda: a CUDA build of the package and of the CLI) the same test runs longer prompts
and every task. Environment:
  KASCADE_CLI              the kascade binary (default build/bin/kascade); absent: skipped
  KASCADE_PARITY_LENGTHS   override the lengths of every (device, protocol), e.g. 1024,2048
  KASCADE_PARITY_TASKS     override the tasks
  KASCADE_PARITY_EXAMPLES  override the examples per task and length
  KASCADE_PARITY_REPORT    a directory: each (device, protocol) writes its measured differences there
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import kascade
from conftest import HAS_GPU, SMOLLM_PLAN, default_model_or_skip

transformers = pytest.importorskip("transformers")
import kascade.hf  # noqa: E402
import kascade.models  # noqa: E402

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parents[2]
PLAN = Path(SMOLLM_PLAN).resolve()
ALL_TASKS = ("passkey", "niah-single", "niah-multikey", "vartrack", "kv-uuid", "common-words", "copy")


@dataclass(frozen=True)
class Tolerance:
    loglik: float           # |mean answer log-lik difference| of a run, nats per answer token
    tie_margin: float       # a greedy token may differ only where transformers' top-2 logits are closer
    flipped_share: float    # share of Kascade runs allowed past both (a key moved across the k-th place)
    flipped_loglik: float   # the bound on those runs' loglik difference


# CPU, fp32 on both sides (the measurements above): 2e-4 is 12x the largest dense difference and
# 4x the largest Kascade one without a moved key, and 10x below the smallest change Kascade
# makes to an answer here; one Kascade run in ten may show a moved key, within 1e-2 (20x the one
# seen). Logit differences are ~1e-5, so a greedy token may change only at a real tie (< 1e-3).
CPU_TOLERANCE = Tolerance(loglik=2e-4, tie_margin=1e-3, flipped_share=0.1, flipped_loglik=1e-2)
# GPU: transformers in bf16 (the Kascade CUDA kernels take bf16) against the engine's CUDA
# backend (bf16 weights and K/V, fp32 residual stream). Not measured on a GPU yet: the bounds are
# from transformers in bf16 against the fp32 engine (above), with room for the engine's own bf16
# rounding: dense 0.1 (7x the 1.4e-2 seen), greedy changes only within 0.25 (bf16 logits of
# 16-32 are 1/8 apart); one Kascade run in five may show moved keys, up to 1 nat/token (the
# engine's own CUDA-vs-CPU logits of a sparse plan are reported, not gated, for this reason:
# docs/engine.md).
GPU_TOLERANCE = Tolerance(loglik=0.1, tie_margin=0.25, flipped_share=0.2, flipped_loglik=1.0)
TOLERANCES = {"cpu": CPU_TOLERANCE, "cuda": GPU_TOLERANCE}


@dataclass(frozen=True)
class Grid:
    lengths: tuple
    tasks: tuple
    examples: int


# (device, protocol) -> what runs by default. CPU: sized for CI, about 45 s on the shared 2-core
# machine (transformers in fp32 on one thread: 2-4 s per 384-token prefill, 0.1-0.2 s per decode
# step; tasks with short answers). GPU: longer prompts and every task; the sparse protocol at 1k
# only, since the engine's sparse prefill runs the host reference.
GRIDS = {
    ("cpu", "sparse"): Grid((384,), ("passkey", "niah-single"), 1),
    ("cpu", "dense"): Grid((384,), ("passkey",), 1),
    ("cuda", "sparse"): Grid((1024,), ALL_TASKS, 1),
    ("cuda", "dense"): Grid((4096, 8192), ALL_TASKS, 1),
}


def grid_for(device: str, protocol: str) -> Grid:
    g = GRIDS[(device, protocol)]
    env = os.environ
    lengths = tuple(int(x) for x in env["KASCADE_PARITY_LENGTHS"].split(",")) if env.get(
        "KASCADE_PARITY_LENGTHS") else g.lengths
    tasks = tuple(env["KASCADE_PARITY_TASKS"].split(",")) if env.get("KASCADE_PARITY_TASKS") else g.tasks
    examples = int(env.get("KASCADE_PARITY_EXAMPLES") or g.examples)
    return Grid(lengths, tasks, examples)


def cli_path() -> Path:
    return Path(os.environ.get("KASCADE_CLI") or ROOT / "build" / "bin" / "kascade")


@pytest.fixture(scope="module", params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request):
    if request.param == "cuda" and not HAS_GPU:
        pytest.skip("needs a CUDA device and a build with the CUDA kernels")
    return request.param


@pytest.fixture(scope="module")
def hf_model(device):
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    model, _ = default_model_or_skip(dtype, device=device)
    # One torch thread: on the shared 2-core CI machine, two OpenMP threads competing with other
    # work made a 384-token prefill take 15 s instead of 3 s (wall).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield model
    torch.set_num_threads(threads)


def run_engine(device: str, protocol: str, grid: Grid, out: Path) -> dict:
    """`kascade eval --write-tokens` on the grid: its tokens.json. Without the natural-text corpus
    the copy task is left out (said on stdout); without a CUDA build of the CLI, skipped."""
    cli = cli_path()
    if not cli.is_file():
        pytest.skip(f"the kascade CLI is not at {cli} (build it, or set KASCADE_CLI)")
    plan = kascade.Plan.load(PLAN)
    tasks = list(grid.tasks)
    while True:
        command = [str(cli), "eval", "--model", str(kascade.models.default_gguf_path()), "--plan", str(PLAN),
                   "--policies", "kascade", "--rho", repr(plan.rho), "--k-min", str(plan.k_min),
                   "--prefill", protocol, "--split", "eval", "--backend", device, "--write-tokens",
                   "--tasks", ",".join(tasks), "--lengths", ",".join(map(str, grid.lengths)),
                   "--examples", str(grid.examples), "--out", str(out)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode == 0:
            break
        error = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        if "natural text corpus" in error and "copy" in tasks and len(tasks) > 1:
            print(f"[{device} {protocol}] copy task left out: {error}")
            tasks.remove("copy")
            continue
        if "does not include the engine's CUDA backend" in error or "natural text corpus" in error:
            pytest.skip(f"kascade eval: {error}")
        pytest.fail(f"{' '.join(command)}\n{error}")
    tokens = json.loads((out / "tokens.json").read_text())
    config = tokens["config"]
    # The engine ran the plan's sparsity, as kascade.hf will.
    assert (config["prefill"], config["k_min"], config["tile"], config["budget"], config["rhos"]) == (
        protocol, plan.k_min, plan.tile, "rolling" if plan.rolling else "fixed", [plan.rho])
    assert len(tokens["examples"]) == len(tasks) * len(grid.lengths) * grid.examples
    return tokens


def forward_rows(model, ids, cache=None):
    """One forward of `ids` after `cache`: the logits of its last position and the cache."""
    out = model(torch.tensor([ids], device=model.device), past_key_values=cache, use_cache=True, logits_to_keep=1)
    return out.logits[0, -1].float(), out.past_key_values


def answer_logits(model, protocol, ex, context_cache=None):
    """[answer tokens, vocab] logits of the answer rows, teacher forced, with the model's current
    attention. sparse: one prefill of context + query, then the answer tokens as decode steps;
    dense: after the (dense) context cache, the query and answer tokens as decode steps."""
    answer = ex["answer"]
    rows = []
    with torch.no_grad():
        if protocol == "sparse":
            logits, cache = forward_rows(model, ex["context"] + ex["query"])
            rows.append(logits)
            steps = answer[:-1]
        else:
            cache = context_cache
            steps = ex["query"] + answer[:-1]
        for t in steps:
            logits, cache = forward_rows(model, [t], cache)
            rows.append(logits)
    return torch.stack(rows[-len(answer):]).double().cpu()


@dataclass
class Comparison:
    task: str
    length: int
    index: int
    policy: str
    engine_greedy: list
    hf_greedy: list
    answer: list
    loglik_diff: float       # |mean answer log-lik difference|, nats/token
    token_diff: float        # max |log p difference| over the answer tokens
    tie_margins: list        # transformers' top-2 logit margin where the greedy tokens differ

    def row(self) -> str:
        same = "same" if self.engine_greedy == self.hf_greedy else f"differs (margins {self.tie_margins})"
        return (f"{self.task} @ {self.length} #{self.index} {self.policy}: greedy {same}, exact match "
                f"{self.engine_greedy == self.answer}/{self.hf_greedy == self.answer}, |d loglik| "
                f"{self.loglik_diff:.2e}, max |d token| {self.token_diff:.2e}")


def compare(ex, run, logits) -> Comparison:
    answer = ex["answer"]
    logprobs = torch.log_softmax(logits, dim=-1)[torch.arange(len(answer)), torch.tensor(answer)].tolist()
    hf_greedy = logits.argmax(dim=-1).tolist()
    top2 = torch.topk(logits, 2, dim=-1).values
    margins = [float(top2[j, 0] - top2[j, 1]) for j in range(len(answer)) if hf_greedy[j] != run["greedy"][j]]
    engine_lp = run["answer_logprobs"]
    assert len(engine_lp) == len(answer) and all(math.isfinite(x) for x in logprobs)
    return Comparison(ex["task"], ex["length"], ex["index"], run["policy"], run["greedy"], hf_greedy, answer,
                      abs(sum(logprobs) / len(answer) - sum(engine_lp) / len(answer)),
                      max(abs(a - b) for a, b in zip(logprobs, engine_lp)), margins)


@pytest.fixture(scope="module", params=["sparse", "dense"])
def parity(request, device, hf_model, tmp_path_factory):
    """Every example of the grid through the engine and through transformers: their comparisons."""
    protocol = request.param
    grid = grid_for(device, protocol)
    tokens = run_engine(device, protocol, grid, tmp_path_factory.mktemp(f"eval-{device}-{protocol}"))
    model = hf_model
    comparisons = []
    for ex in tokens["examples"]:
        assert [r["policy"] for r in ex["runs"]] == ["dense", "kascade"]
        assert len(ex["context"]) + len(ex["query"]) == ex["length"]
        total = ex["length"] + len(ex["answer"])
        context_cache = None
        if protocol == "dense":
            kascade.hf.disable(model)
            with torch.no_grad():
                _, context_cache = forward_rows(model, ex["context"])
        for run in ex["runs"]:
            if run["policy"] == "dense":
                kascade.hf.disable(model)
            else:
                kascade.hf.enable(model, PLAN, max_seq_len=total)
            # Each run appends to its own copy of the dense context (the engine truncates back to it).
            logits = answer_logits(model, protocol, ex, copy.deepcopy(context_cache))
            comparisons.append(compare(ex, run, logits))
        kascade.hf.disable(model)
    report = os.environ.get("KASCADE_PARITY_REPORT")
    if report:
        Path(report).mkdir(parents=True, exist_ok=True)
        rows = [dict(vars(c)) for c in comparisons]
        (Path(report) / f"engine_parity_{device}_{protocol}.json").write_text(json.dumps(
            {"device": device, "protocol": protocol, "grid": vars(grid), "tolerance": vars(TOLERANCES[device]),
             "comparisons": rows}, indent=1) + "\n")
    for c in comparisons:
        print(f"[{device} {protocol}] {c.row()}")
    return device, comparisons


def check(comparisons, device, policy):
    tol = TOLERANCES[device]
    mine = [c for c in comparisons if c.policy == policy]
    assert mine, f"no {policy} runs"
    # Equal greedy tokens give the same exact-match outcome; a tie is the only allowed difference.
    beyond = [c for c in mine if c.loglik_diff > tol.loglik or any(m > tol.tie_margin for m in c.tie_margins)]
    allowed = int(tol.flipped_share * len(mine)) if policy == "kascade" else 0
    worst = max(c.loglik_diff for c in mine)
    assert len(beyond) <= allowed and all(c.loglik_diff <= tol.flipped_loglik for c in beyond), (
        f"{len(beyond)} of {len(mine)} {policy} runs (allowed {allowed}, each within {tol.flipped_loglik}) differ "
        f"beyond |d loglik| <= {tol.loglik} or changed a greedy token at a top-2 margin above {tol.tie_margin} "
        f"(max |d loglik| {worst:.2e}):\n" + "\n".join(c.row() for c in beyond))


def test_dense_control_sdpa_matches_the_engine(parity):
    """sdpa against the engine's dense run: the model numerics alone."""
    device, comparisons = parity
    check(comparisons, device, "dense")


def test_kascade_matches_the_engine(parity):
    """kascade.hf with the shipped plan against the engine's kascade run on the same examples."""
    device, comparisons = parity
    check(comparisons, device, "kascade")
