#!/usr/bin/env python3
"""Dense decode baselines for kascade-bench-decode: PyTorch SDPA with the cuDNN backend (and the
flash backend where it accepts the shape), on the same shapes, timed the same way (CUDA events,
L2 flushed before every repetition, median).

    python3 bench/run_cudnn.py --out /tmp/cudnn.json [--models llama8b,smollm]
        [--contexts 8192,32768,131072] [--batches 1,8,64]

q is [B, Hq, 1, D]; K and V are contiguous [B, Hkv, n, D] bf16 passed with enable_gqa=True, so
the baseline reads each K/V byte once, as our kernels do. A backend that rejects a shape gets a
record with "ms": null and the error, never a silent substitute.
"""
import argparse
import json
import math
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
    for _ in range(2):
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default="llama8b,smollm")
    ap.add_argument("--contexts", default="8192,32768,131072")
    ap.add_argument("--batches", default="1,8,64")
    args = ap.parse_args()
    models = args.models.split(",")
    for m in models:
        if m not in MODELS:
            sys.exit(f"run_cudnn.py: unknown model '{m}' (expected one of {', '.join(MODELS)})")
    contexts = [int(x) for x in args.contexts.split(",")]
    batches = [int(x) for x in args.batches.split(",")]
    dev = torch.device("cuda")
    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device=dev)
    records = []
    for m in models:
        name, hq, hkv, d = MODELS[m]
        for b in batches:
            for n in contexts:
                k = torch.rand(b, hkv, n, d, device=dev, dtype=torch.bfloat16).mul_(3.4).sub_(1.7)
                v = torch.rand(b, hkv, n, d, device=dev, dtype=torch.bfloat16).mul_(3.4).sub_(1.7)
                q = torch.rand(b, hq, 1, d, device=dev, dtype=torch.bfloat16).mul_(8.6).sub_(4.3)
                reps = 10 if b * n >= 4_000_000 else 30
                kv_bytes = 2 * b * hkv * n * d * 2
                line = [f"{name:13s} B={b:<3d} n={n:<6d}"]
                for impl, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
                    rec = {"phase": "decode", "impl": impl, "role": "dense", "model": name, "batch": b,
                           "context": n, "hq": hq, "hkv": hkv, "head_dim": d, "dtype": "bf16", "rho": 1.0,
                           "page_size": n}
                    try:
                        with sdpa_kernel([backend]):
                            fn = lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
                            out = fn()
                            torch.cuda.synchronize()
                            if not torch.isfinite(out).all():
                                raise RuntimeError("non-finite output")
                            ms = median_ms(fn, reps, flush)
                        rec["ms"] = ms
                        rec["gbps"] = kv_bytes / (ms * 1e-3) / 1e9
                        line.append(f"{impl} {ms:8.3f} ms ({rec['gbps']:5.0f} GB/s)")
                    except Exception as e:  # a backend that rejects the shape is recorded, not replaced
                        rec["ms"] = None
                        rec["error"] = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
                        line.append(f"{impl} unsupported")
                    if impl == "cudnn" and rec["ms"] is not None:
                        rec["ratio_vs_cudnn"] = 1.0
                    records.append(rec)
                print(" | ".join(line), flush=True)
                del k, v, q
                torch.cuda.empty_cache()
    doc = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "cudnn": torch.backends.cudnn.version(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "command": " ".join(sys.argv), "records": records}
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
