#!/usr/bin/env python3
"""Benchmarks of the Python package on a GPU: per-call overhead of the torch ops over the C++
call, and transformers generate() with attn_implementation "kascade" against "sdpa".

    python3 bench/python_bench.py --out bench/results/python_h100.json            # everything
    python3 bench/python_bench.py --only overhead --out /tmp/o.json
    python3 bench/python_bench.py --only generate --models smollm2 --contexts 8192 --batches 1

Overhead: one decode call of each role on a Llama-3.1-8B layer shape (32/8 heads, D 128, bf16) at
a short context, where the kernels are short and host time shows. Three loops of the same call,
each drained at the end: the library's C++ entry point called from C++ (`_bench_decode_direct`),
the torch op called from Python, and KascadeAttention.run. Overhead = op - C++ (microseconds).

generate(): prefill time (generate with 1 new token) and decode rate (the further tokens of a
longer generate, divided by the extra time), "kascade" (the model's plan) vs "sdpa", on SmolLM2
(the default model, its shipped plan) and on a random-weight Llama-3.1-8B-shaped model (a uniform
plan: anchors 0, 1, 8, 16, 24, identity head map). Random prompt tokens; times are medians.

The JSON follows DESIGN.md's benchmark format: {"device", "commit", "date", "command", "records"}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import kascade

ROOT = Path(__file__).resolve().parents[1]
SMOLLM_PLAN = ROOT / "plans" / "smollm2-135m-instruct.json"


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def uniform_plan(layers, hq, hkv, head_dim, anchors, name):
    return kascade.Plan.from_json(json.dumps({
        "format": "kascade-plan", "version": 1,
        "model": {"name": name, "layers": layers, "hq": hq, "hkv": hkv, "head_dim": head_dim},
        "anchors": anchors, "head_map": [list(range(hkv))] * layers,
        "sparsity": {"rho": 0.1, "k_min": 128, "k_multiple": 1, "tile": 32, "budget": "rolling", "pooling": "group"},
        "provenance": {"notes": "uniform benchmark plan (bench/python_bench.py)"},
    }), name)


# ---- per-call overhead ---------------------------------------------------------------------------

def bench_overhead(records, iters=2000, context=1024, batch=1):
    hq, hkv, d, page = 32, 8, 128, 16
    dev = torch.device("cuda")
    ops = kascade.ops
    pages = batch * context // page
    k = torch.randn(pages, page, hkv, d, device=dev, dtype=torch.bfloat16)
    v = torch.randn_like(k)
    page_indptr = torch.arange(0, pages + 1, context // page, dtype=torch.int32, device=dev)
    page_indices = torch.arange(pages, dtype=torch.int32, device=dev)
    seq_lens = torch.full((batch,), context, dtype=torch.int32, device=dev)
    q = torch.randn(batch, hq, d, device=dev, dtype=torch.bfloat16)
    out = torch.empty_like(q)
    sp = (0.1, 128, 1, False, 1.0 / d ** 0.5)
    shape = ops.decode_selection_shape(batch, hkv, context, *sp[:4])
    sel_i = torch.zeros(shape, dtype=torch.int32, device=dev)
    sel_c = torch.zeros(shape[:3], dtype=torch.int32, device=dev)
    head_map = torch.arange(hkv, dtype=torch.int32, device=dev)
    ws = torch.empty(max(ops.decode_workspace_size(batch, hq, hkv, d, torch.bfloat16, context, r, *sp[:4], dev)
                         for r in ("dense", "layer0", "anchor", "reuse")), dtype=torch.uint8, device=dev)
    common = (q, k, v, page_indptr, page_indices, seq_lens, out)
    ops.decode_anchor(*common, sel_i, sel_c, ws, *sp, context)  # a valid selection for reuse
    calls = {
        "dense": lambda: ops.decode_dense(*common, ws, sp[4], context),
        "layer0": lambda: ops.decode_layer0(*common, sel_i, sel_c, ws, *sp, context),
        "anchor": lambda: ops.decode_anchor(*common, sel_i, sel_c, ws, *sp, context),
        "reuse": lambda: ops.decode_reuse(*common, sel_i, sel_c, head_map, ws, *sp, context),
    }
    plan = uniform_plan(4, hq, hkv, d, [0, 2], "overhead")
    attn = kascade.KascadeAttention(plan, device=dev, dtype=torch.bfloat16, max_batch=batch, max_seq_len=context)
    attn.begin_decode(page_indptr, page_indices, seq_lens)
    wrapper_layer = {"layer0": 0, "reuse": 1, "anchor": 2}

    def timed(fn):
        fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - start) / iters

    for role, call in calls.items():
        cpp, op, wrap = [], [], []
        for _ in range(5):
            cpp.append(ops._bench_decode_direct(role, *common, sel_i, sel_c, head_map, ws, *sp, context, iters))
            op.append(timed(call))
            if role in wrapper_layer:
                wrap.append(timed(lambda: attn.run(wrapper_layer[role], q, k, v, out=out)))
        cpp_us, op_us = 1e6 * statistics.median(cpp), 1e6 * statistics.median(op)
        rec = {"phase": "decode", "impl": "torch_op", "role": role, "batch": batch, "context": context, "hq": hq,
               "hkv": hkv, "head_dim": d, "dtype": "bf16", "rho": 0.1, "page_size": page, "iters": iters,
               "cpp_us": round(cpp_us, 2), "op_us": round(op_us, 2), "overhead_us": round(op_us - cpp_us, 2)}
        if wrap:
            rec["wrapper_us"] = round(1e6 * statistics.median(wrap), 2)
        records.append(rec)
        print(f"overhead {role:7s}: C++ {cpp_us:8.2f} us  op {op_us:8.2f} us  (+{op_us - cpp_us:.2f})"
              + (f"  KascadeAttention.run {rec['wrapper_us']:.2f} us" if wrap else ""), flush=True)


# ---- generate() ---------------------------------------------------------------------------------

def load_model(kind):
    import transformers

    if kind == "smollm2":
        import kascade.models
        model, _ = kascade.models.load_default_model(dtype=torch.bfloat16, device="cuda")
        return model, kascade.Plan.load(SMOLLM_PLAN)
    config = transformers.LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                                      num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                      head_dim=128, max_position_embeddings=131072, rope_theta=500000.0)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = transformers.LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.set_attn_implementation("sdpa")
    return model.eval(), uniform_plan(32, 32, 8, 128, [0, 1, 8, 16, 24], "llama-3.1-8b-shape")


def generate_seconds(model, ids, new_tokens, repeats):
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                           min_new_tokens=new_tokens, do_sample=False)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_generate(records, kinds, contexts, batches, new_tokens, repeats, skip, save):
    import kascade.hf

    for kind in kinds:
        model, plan = load_model(kind)
        model.config.max_position_embeddings = max(model.config.max_position_embeddings, max(contexts) + new_tokens)
        vocab = model.config.vocab_size
        for context in contexts:
            for batch in batches:
                if f"{kind}:{context}:{batch}" in skip:
                    continue
                ids = torch.randint(100, vocab - 100, (batch, context), device="cuda",
                                    generator=torch.Generator("cuda").manual_seed(context + batch))
                result = {}
                for impl in ("sdpa", "kascade"):
                    if impl == "kascade":
                        kascade.hf.enable(model, plan, max_seq_len=context + new_tokens + 1, max_batch=batch)
                    else:
                        kascade.hf.disable(model)
                    try:
                        generate_seconds(model, ids[:, :256], 2, 1)  # warm-up
                        prefill = generate_seconds(model, ids, 1, repeats)
                        total = generate_seconds(model, ids, 1 + new_tokens, repeats)
                    except (torch.cuda.OutOfMemoryError, RuntimeError) as e:
                        # One configuration's failure is recorded; the others still run.
                        reason = "out of memory" if isinstance(e, torch.cuda.OutOfMemoryError) else \
                            str(e).splitlines()[0]
                        print(f"generate {kind} ctx {context} batch {batch} {impl}: FAILED: {reason}", flush=True)
                        records.append({"phase": "e2e", "impl": impl, "model": kind, "batch": batch,
                                        "context": context, "error": reason})
                        result[impl] = None
                        torch.cuda.empty_cache()
                        continue
                    finally:
                        if impl == "kascade":
                            kascade.hf.disable(model)
                    decode_tps = batch * new_tokens / max(total - prefill, 1e-9)
                    rec = {"phase": "e2e", "impl": impl, "model": kind, "batch": batch, "context": context,
                           "dtype": "bf16", "new_tokens": new_tokens, "prefill_s": round(prefill, 4),
                           "prefill_tokens_per_s": round(batch * context / prefill, 1),
                           "decode_tokens_per_s": round(decode_tps, 1), "generate_s": round(total, 4)}
                    result[impl] = rec
                    records.append(rec)
                    print(f"generate {kind:8s} ctx {context:6d} batch {batch}: {impl:7s} prefill {prefill:7.3f} s "
                          f"({rec['prefill_tokens_per_s']:.0f} tok/s), decode {decode_tps:8.1f} tok/s", flush=True)
                    torch.cuda.empty_cache()
                if result.get("sdpa") and result.get("kascade"):
                    s, k = result["sdpa"], result["kascade"]
                    k["prefill_speedup_vs_sdpa"] = round(s["prefill_s"] / k["prefill_s"], 3)
                    k["decode_speedup_vs_sdpa"] = round(k["decode_tokens_per_s"] / s["decode_tokens_per_s"], 3)
                save()  # after every configuration: a later failure or time-out keeps what was measured
        del model
        torch.cuda.empty_cache()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--only", choices=["overhead", "generate"], default=None)
    ap.add_argument("--models", default="smollm2,llama8b")
    ap.add_argument("--contexts", default="8192,32768")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--skip", default="llama8b:32768:8", help="model:context:batch triples to leave out (memory)")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--iters", type=int, default=2000)
    args = ap.parse_args(argv)
    if not (torch.cuda.is_available() and kascade.has_cuda()):
        print("python_bench: needs a CUDA device and a kascade build with the CUDA kernels", file=sys.stderr)
        return 2
    records = []
    doc = {"device": torch.cuda.get_device_name(), "commit": commit(),
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "torch": torch.__version__,
           "records": records}

    def save():
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")

    if args.only in (None, "overhead"):
        bench_overhead(records, iters=args.iters)
        save()
    if args.only in (None, "generate"):
        import transformers
        doc["transformers"] = transformers.__version__
        bench_generate(records, args.models.split(","), [int(x) for x in args.contexts.split(",")],
                       [int(x) for x in args.batches.split(",")], args.new_tokens, args.repeats,
                       set(args.skip.split(",")) if args.skip else set(), save)
        save()
    print(f"python_bench: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
