#!/usr/bin/env python3
"""Plot kascade-bench results (bench/results/*.json) as a PNG beside them.

    python3 bench/plot_bench.py --phase decode bench/results/decode_h100_9a29f3f.json [-o OUT.png]
    python3 bench/plot_bench.py --phase prefill bench/results/prefill_h100_79df728.json [-o OUT.png]

decode:  one panel per (model, batch): time per layer against context length for the dense
         baselines (cuDNN SDPA, PyTorch flash) and each kascade role, plus the 32-layer schedule
         per layer.
prefill: left, the same curves for the Llama-3.1-8B shape (batch 1); right, every role's time as
         a ratio of cuDNN dense on the same shape, beside the targets.
Only the records of the chosen phase are plotted.
"""
import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PROG = "plot_bench.py"
KASCADE_SERIES = [  # (impl, role, label, style)
    ("kascade", "dense", "kascade dense", "C0-o"),
    ("kascade", "layer0", "kascade layer 0", "C1-o"),
    ("kascade", "anchor", "kascade anchor", "C2-o"),
    ("kascade", "reuse", "kascade reuse", "C3-o"),
    ("kascade", "schedule", "kascade 32-layer schedule (per layer)", "C4--s"),
]


def baseline_series(kind):
    """The dense baselines' curves; `kind` says what the dense call is ("dense", "causal")."""
    return [("cudnn", "dense", f"cuDNN SDPA {kind}", "k-"), ("flash", "dense", f"PyTorch flash {kind}", "k:")]


def plot_times(ax, records, series, title, **shape):
    """Time per layer against context of every series, over the records that match `shape`."""
    for impl, role, label, style in series:
        pts = sorted(
            (r["context"], r["ms_per_layer"] if role == "schedule" else r["ms"])
            for r in records
            if all(r.get(k) == v for k, v in shape.items()) and r.get("impl") == impl and r.get("role") == role
            and r.get("ms") is not None)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label, markersize=4)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("context (tokens)")
    ax.set_ylabel("ms per layer")
    ax.grid(True, which="both", alpha=0.3)


def plot_decode(doc, records, kascade):
    panels = sorted({(r["model"], r["batch"]) for r in kascade})
    models = sorted({m for m, _ in panels})
    batches = sorted({b for _, b in panels})
    fig, axes = plt.subplots(len(models), len(batches), figsize=(4.2 * len(batches), 3.6 * len(models)), squeeze=False)
    series = baseline_series("dense") + KASCADE_SERIES
    for i, model in enumerate(models):
        for j, batch in enumerate(batches):
            plot_times(axes[i][j], records, series, f"{model}, batch {batch}", model=model, batch=batch)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Decode attention per layer, bf16, rho 0.1, page 16 — {doc.get('device', '')}", fontsize=11)
    return fig


PREFILL_MODEL = "Llama-3.1-8B"  # the left panel's shape
PREFILL_ROLES = ["dense", "layer0", "anchor", "reuse", "schedule"]
PREFILL_TARGETS = {"dense": 1.0, "layer0": 1.5, "anchor": 1.25, "reuse": 0.13, "schedule": 1 / 3}  # x cuDNN


def plot_prefill(doc, records, kascade):
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
    plot_times(left, records, baseline_series("causal") + KASCADE_SERIES, f"{PREFILL_MODEL} (32/8/128), batch 1",
               model=PREFILL_MODEL)
    left.legend(fontsize=7)

    shapes = sorted({(r["model"], r["context"]) for r in kascade}, key=lambda s: (s[0] != PREFILL_MODEL, s[1]))
    width = 0.8 / len(shapes)
    for i, (m, n) in enumerate(shapes):
        ratios = []
        for role in PREFILL_ROLES:
            r = next((r for r in kascade if r["model"] == m and r["context"] == n and r["role"] == role), None)
            ratios.append(r.get("ratio_vs_cudnn") if r and r.get("ratio_vs_cudnn") is not None else 0.0)
        right.bar([k + i * width for k in range(len(PREFILL_ROLES))], ratios, width, label=f"{m} {n // 1024}k")
    for k, role in enumerate(PREFILL_ROLES):
        right.hlines(PREFILL_TARGETS[role], k - 0.05, k + 0.85, colors="r", linestyles="--", linewidth=1,
                     label="target (32k, 128k)" if k == 0 else None)
    right.set_xticks([k + 0.4 - width / 2 for k in range(len(PREFILL_ROLES))])
    right.set_xticklabels(["dense", "layer 0", "anchor", "reuse", "schedule\n(per layer)"])
    right.set_ylabel("time / cuDNN dense time")
    right.set_yscale("log")
    right.grid(True, axis="y", which="both", alpha=0.3)
    right.legend(fontsize=7)
    right.set_title("ratio to cuDNN SDPA causal (lower is faster)", fontsize=10)
    fig.suptitle(f"Prefill attention, bf16, rho 0.1, tile 32, page 16 — {doc.get('device', '')}, commit "
                 f"{doc.get('commit', '?')}", fontsize=11)
    return fig


PLOTTERS = {"decode": plot_decode, "prefill": plot_prefill}


def main():
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phase", required=True, choices=sorted(PLOTTERS))
    ap.add_argument("results")
    ap.add_argument("-o", "--output", help="the PNG (default: the results path with .png)")
    args = ap.parse_args()
    try:
        with open(args.results) as f:
            doc = json.load(f)
        records = [r for r in doc["records"] if r.get("phase") == args.phase]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        sys.exit(f"{PROG}: cannot read {args.results}: {e}")
    kascade = [r for r in records if r.get("impl") == "kascade"]
    if not kascade:
        sys.exit(f"{PROG}: {args.results} has no kascade {args.phase} records")
    fig = PLOTTERS[args.phase](doc, records, kascade)
    fig.tight_layout()
    out = args.output or args.results.rsplit(".", 1)[0] + ".png"
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
