#!/usr/bin/env python3
"""Pictures of a calibration report (`kascade calibrate --report REPORT.json`, SPEC 6).

    tools/plot_calibration.py REPORT.json OUTDIR/

writes three PNGs into OUTDIR (created if needed):
  layer_scores.png  heat maps of S[l1][l2] (log colour scale: w spans orders of magnitude) and of
                    the reuse coverage S[l1][l2] / w[l2] = mean over g2 of max over g1 of C, with
                    the chosen anchors' segments outlined
  importance.png    the layer importance w[l] = 1 - cos(x_l, x_l + attn_l(x_l)), anchors marked
  coverage.png      per layer: the coverage the chosen plan keeps (its head map) and the share
                    of the layer's attention mass in its own top-k_cal keys plus the diagonal

A malformed report is one error line on stderr and exit status 1, with nothing written.
"""
import argparse
import json
import math
import os
import sys


def fail(message):
    print(f"plot_calibration.py: error: {message}", file=sys.stderr)
    sys.exit(1)


def load_report(path):
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except OSError as e:
        fail(f"{path}: cannot read ({e.strerror})")
    except json.JSONDecodeError as e:
        fail(f"{path}: not valid JSON ({e})")
    if not isinstance(report, dict) or report.get("format") != "kascade-calibration-report":
        fail(f"{path}: not a kascade calibration report (format must be 'kascade-calibration-report')")
    if report.get("version") != 1:
        fail(f"{path}: unsupported report version {report.get('version')!r} (expected 1)")
    for key in ("layers", "importance", "layer_scores", "topk_mass_share", "chosen", "prompts"):
        if key not in report:
            fail(f"{path}: missing '{key}'")
    layers = report["layers"]
    if not isinstance(layers, int) or layers < 1:
        fail(f"{path}: layers must be a positive integer")
    w = report["importance"]
    if not (isinstance(w, list) and len(w) == layers and all(isinstance(x, (int, float)) and math.isfinite(x) for x in w)):
        fail(f"{path}: importance must be {layers} finite numbers")
    scores = report["layer_scores"]
    if not (isinstance(scores, list) and len(scores) == layers and all(isinstance(r, list) and len(r) == layers for r in scores)):
        fail(f"{path}: layer_scores must be a {layers} x {layers} matrix")
    for l1 in range(layers):
        for l2 in range(layers):
            v = scores[l1][l2]
            if l1 <= l2 and not (isinstance(v, (int, float)) and math.isfinite(v)):
                fail(f"{path}: layer_scores[{l1}][{l2}] must be a finite number")
    chosen = report["chosen"]
    for key in ("anchors", "coverage", "m", "score"):
        if key not in chosen:
            fail(f"{path}: chosen: missing '{key}'")
    if len(chosen["coverage"]) != layers or len(report["topk_mass_share"]) != layers:
        fail(f"{path}: chosen.coverage and topk_mass_share must have {layers} entries")
    anchors = chosen["anchors"]
    if not anchors or anchors[0] != 0 or any(not (0 <= a < layers) for a in anchors) or sorted(set(anchors)) != anchors:
        fail(f"{path}: chosen.anchors must be sorted distinct layers starting at 0")
    return report


def segments(anchors, layers):
    """(anchor, first layer, one past the last layer) of each anchor's reuse segment."""
    ends = anchors[1:] + [layers]
    return [(a, a, e) for a, e in zip(anchors, ends)]


def plot(report, outdir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    L = report["layers"]
    w = np.array(report["importance"], dtype=float)
    S = np.full((L, L), np.nan)
    for l1 in range(L):
        for l2 in range(l1, L):
            S[l1, l2] = report["layer_scores"][l1][l2]
    chosen = report["chosen"]
    anchors = chosen["anchors"]
    title = f"{report['prompts']} prompts, k_cal {report.get('k_cal')}, tile {report.get('tile')}"
    # The DP's layer weights: w under SPEC 6, else the variant recorded in the report's objective
    # (kascade calibrate --layer-weight / --tile-aggregate); S divided by them is the coverage.
    objective = report.get("objective", {"layer_weight": "spec", "tile_aggregate": "min"})
    weight_name = objective.get("layer_weight", "spec")
    if weight_name == "spec":
        weights = w
    elif weight_name == "uniform":
        weights = np.ones_like(w)
    elif weight_name == "sqrt":
        weights = np.sqrt(np.maximum(w, 0.0))
    else:
        fail(f"objective.layer_weight must be spec, uniform or sqrt, got {weight_name!r}")
    if weight_name != "spec" or objective.get("tile_aggregate", "min") != "min":
        title += f"; layer weight {weight_name}, tile {objective.get('tile_aggregate', 'min')} (not SPEC 6)"
    os.makedirs(outdir, exist_ok=True)

    # Heat maps: S itself, and S / w (the coverage part), rows l1 = anchor, columns l2 = reuser.
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    positive = S[np.isfinite(S) & (S > 0)]
    norm = LogNorm(vmin=max(positive.min(), positive.max() * 1e-4), vmax=positive.max()) if positive.size else None
    im = axes[0].imshow(np.where(S > 0, S, np.nan), cmap="viridis", norm=norm, origin="upper")
    fig.colorbar(im, ax=axes[0], fraction=0.046, pad=0.04)
    axes[0].set_title("layer score S[l1][l2] (log scale)")
    with np.errstate(divide="ignore", invalid="ignore"):
        cover = np.where(weights[None, :] > 0, S / weights[None, :], np.nan)
    im = axes[1].imshow(cover, cmap="magma", vmin=np.nanmin(cover) if np.isfinite(cover).any() else 0, vmax=1.0,
                        origin="upper")
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04)
    axes[1].set_title(f"reuse coverage S / {'w' if weight_name == 'spec' else weight_name + ' weight'} = mean_g2 max_g1 C")
    for ax in axes:
        ax.set_xlabel("reusing layer l2")
        ax.set_ylabel("anchor layer l1")
        for a, first, end in segments(anchors, L):
            ax.add_patch(Rectangle((first - 0.5, a - 0.5), end - first, 1, fill=False, edgecolor="red", linewidth=1.2))
    fig.suptitle(f"Kascade calibration: anchors {anchors} (m = {chosen['m']}), {title}")
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "layer_scores.png"), dpi=90)
    plt.close(fig)

    layers = np.arange(L)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(layers, w, marker="o", markersize=3, label="w[l]")
    ax.plot(anchors, w[anchors], linestyle="none", marker="s", color="red", label="anchors")
    ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.set_ylabel("importance w (log)")
    ax.set_title(f"layer importance 1 - cos(x, x + attn(x)), {title}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "importance.png"), dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(layers, chosen["coverage"], marker="o", markersize=3, label="coverage kept by the plan")
    ax.plot(layers, report["topk_mass_share"], marker=".", label=f"own top-{report.get('k_cal')} + diagonal mass share")
    for a in anchors:
        ax.axvline(a, color="red", alpha=0.25)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("layer (red: anchors)")
    ax.set_ylabel("share")
    ax.set_title(f"coverage per layer, plan m = {chosen['m']}")
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "coverage.png"), dpi=90)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", help="calibration report JSON (kascade calibrate --report)")
    parser.add_argument("outdir", help="directory for the PNGs (created if needed)")
    args = parser.parse_args()
    report = load_report(args.report)
    if os.path.exists(args.outdir) and not os.path.isdir(args.outdir):
        fail(f"{args.outdir}: exists and is not a directory")
    try:
        import matplotlib  # noqa: F401
        import numpy  # noqa: F401
    except ImportError as e:
        fail(f"needs matplotlib and numpy (pip install -r scripts/requirements.txt): {e}")
    plot(report, args.outdir)
    for name in ("layer_scores.png", "importance.png", "coverage.png"):
        print(os.path.join(args.outdir, name))


if __name__ == "__main__":
    main()
