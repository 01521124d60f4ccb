#!/usr/bin/env python3
"""Dense causal prefill baselines for kascade-bench-prefill: PyTorch SDPA with the cuDNN backend
(and the flash backend), on the same shapes, timed the same way (CUDA events, L2 flushed before
every repetition, median).

    python3 bench/run_cudnn_prefill.py --out /tmp/cudnn_prefill.json
        [--shapes llama8b:8192,llama8b:32768,llama8b:131072,smollm:8192]

q is [1, Hq, n, D], K and V are contiguous [1, Hkv, n, D] bf16, is_causal=True, enable_gqa=True
(each K/V head is read for its whole group, as our kernels do). A backend that rejects a shape gets
a record with "ms": null and the error, never a silent substitute. tflops counts the causal FLOPs
4 * D * Hq * n (n + 1) / 2.
"""
import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

MODELS = {
    "llama8b": ("Llama-3.1-8B", 32, 8, 128),
    "smollm": ("SmolLM2-135M", 9, 3, 64),
}
L2_FLUSH_BYTES = 256 << 20


def median_ms(fn, reps, flush):
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


def parse_shapes(text):
    shapes = []
    for item in text.split(","):
        model, _, n = item.partition(":")
        if model not in MODELS or not n.isdigit() or int(n) <= 0:
            sys.exit(f"run_cudnn_prefill.py: bad shape '{item}' (expected MODEL:CONTEXT, MODEL in {', '.join(MODELS)})")
        shapes.append((model, int(n)))
    return shapes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--shapes", default="llama8b:8192,llama8b:32768,llama8b:131072,smollm:8192")
    args = ap.parse_args()
    dev = torch.device("cuda")
    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device=dev)
    records = []
    for model, n in parse_shapes(args.shapes):
        name, hq, hkv, d = MODELS[model]
        q = torch.randn(1, hq, n, d, device=dev, dtype=torch.bfloat16).mul_(2.0)
        k = torch.randn(1, hkv, n, d, device=dev, dtype=torch.bfloat16)
        v = torch.randn(1, hkv, n, d, device=dev, dtype=torch.bfloat16)
        flops = 4.0 * d * hq * n * (n + 1) / 2
        reps = 3 if n >= 100_000 else 10
        line = [f"{name:13s} n={n:<6d}"]
        for impl, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
            rec = {"phase": "prefill", "impl": impl, "role": "dense", "model": name, "batch": 1, "context": n,
                   "hq": hq, "hkv": hkv, "head_dim": d, "dtype": "bf16", "rho": 1.0, "page_size": n}
            try:
                with sdpa_kernel([backend]):
                    fn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
                    out = fn()
                    torch.cuda.synchronize()
                    if not torch.isfinite(out).all():
                        raise RuntimeError("non-finite output")
                    del out
                    ms = median_ms(fn, reps, flush)
                rec["ms"] = ms
                rec["tflops"] = flops / (ms * 1e-3) / 1e12
                line.append(f"{impl} {ms:9.3f} ms ({rec['tflops']:5.0f} TFLOP/s)")
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
    doc = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "cudnn": torch.backends.cudnn.version(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "command": " ".join(sys.argv), "records": records}
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
