#!/usr/bin/env python3
"""Plots a `kascade eval` result against the fraction of keys attended: exact match, the answer
log-likelihood change against dense, and the answer rows' KL and top-1 agreement with dense, one
line per selection policy through its rho points (95% bootstrap intervals as error bars), dense
as the reference. Comparing policies at equal keys attended is reading the panels vertically.

    tools/plot_eval.py bench/results/accuracy/eval.json             # writes eval.png beside it
    tools/plot_eval.py RESULT.json --out plot.png --group 2048       # one length (or task) only

Needs matplotlib (scripts/requirements.txt). Reads the "summary" rows of the JSON file (version
2; a version-1 file has exact match and the answer change only, without intervals).
"""
import argparse
import json
import math
import os
import sys

STYLE = {
    "oracle": ("tab:gray", "--", "o"),
    "kascade": ("tab:red", "-", "o"),
    "kascade-pooled": ("tab:orange", "-", "s"),
    "streaming": ("tab:blue", "-", "^"),
    "quest": ("tab:green", "-", "v"),
    "omnikv": ("tab:purple", "-", "D"),
    "tidal": ("tab:brown", "-", "P"),
}

# The common keys fractions of the equal-keys table (harness.h kEqualKeysFractions), in percent.
EQUAL_KEYS = (10, 20, 30)

# (summary key, axis label, scale of the values, panel title)
PANELS = [
    ("accuracy", "exact match (%)", 1.0, "exact match"),
    ("delta_logprob", "Δ answer log-likelihood vs dense (nats/token)", 1.0, "answer log-likelihood change"),
    ("kl_answer", "KL(dense ‖ policy), answer rows (nats)", 1.0, "answer-row KL"),
    ("top1_answer", "top-1 agreement with dense, answer rows (%)", 100.0, "answer-row top-1 agreement"),
]


def metric(row, key, scale):
    """(value, lower error, upper error) of a summary metric, None where it was not measured."""
    v = row.get(key)
    if v is None:
        return None
    if isinstance(v, dict):
        mean, lo, hi = v.get("mean"), v.get("lo"), v.get("hi")
        if mean is None or (isinstance(mean, float) and math.isnan(mean)):
            return None
        if lo is None or hi is None:
            return (mean * scale, 0.0, 0.0)
        return (mean * scale, (mean - lo) * scale, (hi - mean) * scale)
    return (v * scale, 0.0, 0.0)  # version 1: a plain number


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("result", help="eval.json written by kascade eval")
    parser.add_argument("--out", help="PNG to write (default: eval.png beside the result, or eval_<group>.png)")
    parser.add_argument("--group", default="all", help="'all' (default), a length or a task name")
    args = parser.parse_args()

    try:
        with open(args.result) as f:
            result = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"plot_eval: cannot read {args.result}: {e}")
    if result.get("format") != "kascade-eval":
        sys.exit(f"plot_eval: {args.result} is not a kascade eval result (format {result.get('format')!r})")
    if result.get("version") not in (1, 2):
        sys.exit(f"plot_eval: {args.result} has version {result.get('version')!r} (this script reads 1 and 2)")
    rows = [r for r in result["summary"] if r["group"] == args.group]
    if not rows:
        groups = sorted({r["group"] for r in result["summary"]})
        sys.exit(f"plot_eval: no summary rows for group {args.group!r} (groups: {', '.join(groups)})")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    dense = [r for r in rows if r["policy"] == "dense"]
    for ax, (key, label, scale, title) in zip(axes.flat, PANELS):
        if dense:
            d = metric(dense[0], key, scale)
            if d is not None:
                ax.axhline(d[0], color="black", lw=1.5, label="dense")
        drawn = 0
        for policy, (color, ls, marker) in STYLE.items():
            pts = []
            for r in rows:
                if r["policy"] != policy:
                    continue
                m = metric(r, key, scale)
                if m is not None:
                    pts.append((100.0 * r["keys_fraction"], r["rho"], *m))
            if not pts:
                continue
            pts.sort()
            drawn += 1
            ax.errorbar([p[0] for p in pts], [p[2] for p in pts], yerr=[[p[3] for p in pts], [p[4] for p in pts]],
                        color=color, ls=ls, marker=marker, capsize=3, label=policy)
        ax.set(xlabel="keys attended (% of dense)", ylabel=label, title=title)
        ax.grid(alpha=0.3)
        if drawn == 0:
            ax.text(0.5, 0.5, "not measured in this file", ha="center", va="center", transform=ax.transAxes)
            continue
        for x in EQUAL_KEYS:
            ax.axvline(x, color="gray", lw=0.8, ls=":")
    axes.flat[0].set_ylim(-5, 105)
    axes.flat[1].legend(fontsize=8, loc="best")
    cfg = result["config"]
    prov = result.get("provenance", {})
    n = dense[0].get("examples", dense[0].get("runs")) if dense else "?"
    where = "all lengths and tasks" if args.group == "all" else args.group
    fig.suptitle(f"{result.get('model', '')}: {where}, split {cfg.get('split', 'eval')}, N = {n} examples per point; "
                 f"rho {','.join(f'{r:g}' for r in cfg['rhos'])}, lengths {','.join(map(str, cfg['lengths']))}, "
                 f"k_min {cfg['k_min']}, commit {prov.get('commit', '?')}", fontsize=9)
    fig.tight_layout()
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.result)),
                                   "eval.png" if args.group == "all" else f"eval_{args.group}.png")
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
