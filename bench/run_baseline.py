#!/usr/bin/env python3
"""Dense attention baselines for kascade-bench: PyTorch SDPA with the cuDNN backend (and the flash
backend where it accepts the shape), on the benchmark's shapes, timed the same way (CUDA events,
L2 flushed before every repetition, median).

    python3 bench/run_baseline.py --phase decode --out /tmp/cudnn.json [--models llama8b,smollm]
        [--contexts 8192,32768,131072] [--batches 1,8,64]
    python3 bench/run_baseline.py --phase prefill --out /tmp/cudnn_prefill.json
        [--shapes llama8b:8192,llama8b:32768,llama8b:131072,smollm:8192]

decode:  q is [B, Hq, 1, D]; K and V are contiguous [B, Hkv, n, D] bf16 passed with
         enable_gqa=True, so the baseline reads each K/V byte once, as our kernels do; two
         warm-ups, median of 10 (B n >= 4M) or 30; gbps counts the K/V bytes.
prefill: q is [1, Hq, n, D], K and V are contiguous [1, Hkv, n, D] bf16, is_causal=True,
         enable_gqa=True (each K/V head is read for its whole group, as our kernels do); one
         warm-up, median of 10 (3 at n >= 100k); tflops counts the causal FLOPs
         4 * D * Hq * n (n + 1) / 2.

A backend that rejects a shape gets a record with "ms": null and the error, never a silent
substitute. --dry-run checks the options and writes the document without PyTorch or a GPU: every
record has "ms": null and the error "dry run: not measured".
"""
import argparse
import json
import os
import sys
import time

MODELS = {
    "llama8b": ("Llama-3.1-8B", 32, 8, 128),
    "smollm": ("SmolLM2-135M", 9, 3, 64),
}
L2_FLUSH_BYTES = 256 << 20
PROG = "run_baseline.py"


def fail(message):
    sys.exit(f"{PROG}: {message}")


def split_list(option, text):
    items = text.split(",")
    if any(not item for item in items):
        fail(f"{option}: empty item in '{text}'")
    return items


def positive_int(option, text):
    if not text.isdigit() or int(text) <= 0:
        fail(f"{option}: expected a positive integer, got '{text}'")
    return int(text)


def model_key(option, key):
    if key not in MODELS:
        fail(f"{option}: unknown model '{key}' (expected one of {', '.join(MODELS)})")
    return key


class DecodePhase:
    """One query token per sequence over a cache of n tokens, batch B."""
    name = "decode"
    warmups = 2
    options = {"--models": "llama8b,smollm", "--contexts": "8192,32768,131072", "--batches": "1,8,64"}

    @staticmethod
    def shapes(values):
        """(model key, batch, context) in the order kascade-bench decode measures them."""
        models = [model_key("--models", m) for m in split_list("--models", values["--models"])]
        contexts = [positive_int("--contexts", x) for x in split_list("--contexts", values["--contexts"])]
        batches = [positive_int("--batches", x) for x in split_list("--batches", values["--batches"])]
        return [(m, b, n) for m in models for b in batches for n in contexts]

    @staticmethod
    def label(name, b, n):
        return f"{name:13s} B={b:<3d} n={n:<6d}"

    @staticmethod
    def inputs(torch, dev, b, n, hq, hkv, d):
        k = torch.rand(b, hkv, n, d, device=dev, dtype=torch.bfloat16).mul_(3.4).sub_(1.7)
        v = torch.rand(b, hkv, n, d, device=dev, dtype=torch.bfloat16).mul_(3.4).sub_(1.7)
        q = torch.rand(b, hq, 1, d, device=dev, dtype=torch.bfloat16).mul_(8.6).sub_(4.3)
        return q, k, v

    @staticmethod
    def timed_call(F, q, k, v):
        """The call that is timed, as a closure over the inputs."""
        return lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)

    @staticmethod
    def reps(b, n):
        return 10 if b * n >= 4_000_000 else 30

    @staticmethod
    def add_rate(rec, ms, b, n, hq, hkv, d):
        """Sets the rate field; returns its text for the progress line."""
        kv_bytes = 2 * b * hkv * n * d * 2
        rec["gbps"] = kv_bytes / (ms * 1e-3) / 1e9
        return f"{ms:8.3f} ms ({rec['gbps']:5.0f} GB/s)"


class PrefillPhase:
    """A fresh causal prompt of n tokens, batch 1."""
    name = "prefill"
    warmups = 1
    options = {"--shapes": "llama8b:8192,llama8b:32768,llama8b:131072,smollm:8192"}

    @staticmethod
    def shapes(values):
        """(model key, batch, context) in the order kascade-bench prefill measures them."""
        shapes = []
        for item in split_list("--shapes", values["--shapes"]):
            model, colon, n = item.partition(":")
            if not colon:
                fail(f"--shapes: '{item}' is not MODEL:CONTEXT")
            shapes.append((model_key("--shapes", model), 1, positive_int("--shapes", n)))
        return shapes

    @staticmethod
    def label(name, b, n):
        return f"{name:13s} n={n:<6d}"

    @staticmethod
    def inputs(torch, dev, b, n, hq, hkv, d):
        q = torch.randn(b, hq, n, d, device=dev, dtype=torch.bfloat16).mul_(2.0)
        k = torch.randn(b, hkv, n, d, device=dev, dtype=torch.bfloat16)
        v = torch.randn(b, hkv, n, d, device=dev, dtype=torch.bfloat16)
        return q, k, v

    @staticmethod
    def timed_call(F, q, k, v):
        """The call that is timed, as a closure over the inputs."""
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    @staticmethod
    def reps(b, n):
        return 3 if n >= 100_000 else 10

    @staticmethod
    def add_rate(rec, ms, b, n, hq, hkv, d):
        flops = 4.0 * d * hq * n * (n + 1) / 2
        rec["tflops"] = flops / (ms * 1e-3) / 1e12
        return f"{ms:9.3f} ms ({rec['tflops']:5.0f} TFLOP/s)"


PHASES = {p.name: p for p in (DecodePhase, PrefillPhase)}
IMPLS = ("cudnn", "flash")  # SDPA backends, in the order they are measured


def parse_args(argv):
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phase", required=True, choices=sorted(PHASES))
    ap.add_argument("--out", required=True)
    ap.add_argument("--dry-run", action="store_true", help="check the options and write the document unmeasured")
    for phase in PHASES.values():
        for option, default in phase.options.items():
            ap.add_argument(option, help=f"{phase.name} only (default {default})")
    args = ap.parse_args(argv)
    out_dir = os.path.dirname(args.out)
    if out_dir and not os.path.isdir(out_dir):  # checked now rather than after minutes of measuring
        fail(f"--out: directory {out_dir} does not exist")
    phase = PHASES[args.phase]
    values = {}
    for other in PHASES.values():
        for option, default in other.options.items():
            given = getattr(args, option[2:].replace("-", "_"))
            if other is not phase and given is not None:
                fail(f"{option} is a {other.name} option, not a {phase.name} one")
            if other is phase:
                values[option] = default if given is None else given
    return args, phase, phase.shapes(values)


def base_record(phase, impl, model, b, n):
    name, hq, hkv, d = MODELS[model]
    return {"phase": phase.name, "impl": impl, "role": "dense", "model": name, "batch": b, "context": n,
            "hq": hq, "hkv": hkv, "head_dim": d, "dtype": "bf16", "rho": 1.0, "page_size": n}


def median_ms(torch, fn, reps, warmups, flush):
    for _ in range(warmups):
        fn()
    start = torch.cuda.Event(enable_timing=True)
    stop = torch.cuda.Event(enable_timing=True)
    times = []
    for i in range(reps):
        flush.fill_(i & 0xFF)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]


def measure(phase, shapes):
    """Times both SDPA backends on every shape; returns the records and the run's versions."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}
    dev = torch.device("cuda")
    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device=dev)
    records = []
    for model, b, n in shapes:
        name, hq, hkv, d = MODELS[model]
        q, k, v = phase.inputs(torch, dev, b, n, hq, hkv, d)
        line = [phase.label(name, b, n)]
        for impl in IMPLS:
            rec = base_record(phase, impl, model, b, n)
            try:
                with sdpa_kernel([backends[impl]]):
                    fn = phase.timed_call(F, q, k, v)
                    out = fn()
                    torch.cuda.synchronize()
                    if not torch.isfinite(out).all():
                        raise RuntimeError("non-finite output")
                    del out
                    ms = median_ms(torch, fn, phase.reps(b, n), phase.warmups, flush)
                rec["ms"] = ms
                line.append(f"{impl} " + phase.add_rate(rec, ms, b, n, hq, hkv, d))
            except Exception as e:  # a backend that rejects the shape is recorded, not replaced
                rec["ms"] = None
                rec["error"] = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
                line.append(f"{impl} unsupported")
            if impl == "cudnn" and rec["ms"] is not None:
                rec["ratio_vs_cudnn"] = 1.0
            records.append(rec)
        print(" | ".join(line), flush=True)
        del q, k, v
        torch.cuda.empty_cache()
    run = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "cudnn": torch.backends.cudnn.version()}
    return records, run


def dry_run(phase, shapes):
    records = []
    for model, b, n in shapes:
        for impl in IMPLS:
            rec = base_record(phase, impl, model, b, n)
            rec["ms"] = None
            rec["error"] = "dry run: not measured"
            records.append(rec)
        print(phase.label(MODELS[model][0], b, n) + " | dry run", flush=True)
    return records, {"device": "none (dry run)", "torch": None, "cudnn": None}


def main(argv=None):
    args, phase, shapes = parse_args(sys.argv[1:] if argv is None else argv)
    records, run = (dry_run if args.dry_run else measure)(phase, shapes)
    doc = dict(run, date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), command=" ".join(sys.argv),
               records=records)
    try:
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)
    except OSError as e:
        fail(f"--out: cannot write {args.out}: {e}")


if __name__ == "__main__":
    main()
