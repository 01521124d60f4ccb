#!/usr/bin/env python3
"""Pictures of a calibration report (`kascade calibrate --report REPORT.json`).

    tools/plot_calibration.py REPORT.json OUTDIR/

For a report of version 2 (statistics propose, held-out loss chooses; docs/calibration.md) it
writes into OUTDIR (created if needed):
  candidates.png          held-out next-token KL (left, log scale) and answer log-loss (right) of
                          every scored plan against its anchor count m, one series per source
                          (spec DP, paper DP, even spacing with either map, the search, all-heads
                          pooling), the dense answer loss as a line, the chosen plan starred
  search.png              the coordinate search: every plan it scored in order, the accepted path
                          and the anchors of each accepted step
  layer_scores_spec.png   per statistic: heat maps of S[l1][l2] (log colour scale) and of the
  layer_scores_paper.png  reuse coverage S / w, with the statistic's DP set at the chosen m outlined
  importance.png          the layer importance w[l] = 1 - cos(x_l, x_l + attn_l(x_l)), the chosen
                          plan's anchors marked
A report of version 1 (the SPEC 6 statistic alone) gives layer_scores.png, importance.png and
coverage.png as before.

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


def finite(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_anchors(anchors, layers, what):
    if (not isinstance(anchors, list) or not anchors or anchors[0] != 0
            or any(not isinstance(a, int) or not (0 <= a < layers) for a in anchors) or sorted(set(anchors)) != anchors):
        fail(f"{what} must be sorted distinct layers starting at 0")


def check_statistic(stat, path, what):
    """One statistic's section (or a whole version-1 report): w, S, the DP set."""
    for key in ("layers", "importance", "layer_scores", "topk_mass_share", "prompts"):
        if key not in stat:
            fail(f"{path}: {what}missing '{key}'")
    layers = stat["layers"]
    if not isinstance(layers, int) or layers < 1:
        fail(f"{path}: {what}layers must be a positive integer")
    w = stat["importance"]
    if not (isinstance(w, list) and len(w) == layers and all(finite(x) for x in w)):
        fail(f"{path}: {what}importance must be {layers} finite numbers")
    scores = stat["layer_scores"]
    if not (isinstance(scores, list) and len(scores) == layers and all(isinstance(r, list) and len(r) == layers for r in scores)):
        fail(f"{path}: {what}layer_scores must be a {layers} x {layers} matrix")
    for l1 in range(layers):
        for l2 in range(l1, layers):
            if not finite(scores[l1][l2]):
                fail(f"{path}: {what}layer_scores[{l1}][{l2}] must be a finite number")
    if len(stat["topk_mass_share"]) != layers:
        fail(f"{path}: {what}topk_mass_share must have {layers} entries")
    return layers


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
    version = report.get("version")
    if version == 1:
        layers = check_statistic(report, path, "")
        chosen = report.get("chosen")
        if not isinstance(chosen, dict) or any(k not in chosen for k in ("anchors", "coverage", "m", "score")):
            fail(f"{path}: chosen must have anchors, coverage, m and score")
        if len(chosen["coverage"]) != layers:
            fail(f"{path}: chosen.coverage must have {layers} entries")
        check_anchors(chosen["anchors"], layers, f"{path}: chosen.anchors")
        return report
    if version != 2:
        fail(f"{path}: unsupported report version {version!r} (expected 1 or 2)")
    for key in ("model", "statistics", "evaluations", "search_path", "chosen", "dense", "best_candidate"):
        if key not in report:
            fail(f"{path}: missing '{key}'")
    layers = report["model"].get("layers") if isinstance(report["model"], dict) else None
    if not isinstance(layers, int) or layers < 1:
        fail(f"{path}: model.layers must be a positive integer")
    stats = report["statistics"]
    if not isinstance(stats, dict) or set(stats) != {"spec", "paper"}:
        fail(f"{path}: statistics must hold 'spec' and 'paper'")
    for name, stat in stats.items():
        if check_statistic(stat, path, f"statistics.{name}: ") != layers:
            fail(f"{path}: statistics.{name}.layers differs from model.layers")
        if "dp_at_chosen_m" not in stat:
            fail(f"{path}: statistics.{name}: missing 'dp_at_chosen_m'")
        check_anchors(stat["dp_at_chosen_m"].get("anchors"), layers, f"{path}: statistics.{name}.dp_at_chosen_m.anchors")
    evaluations = report["evaluations"]
    if not isinstance(evaluations, list) or not evaluations:
        fail(f"{path}: evaluations must be a non-empty list")
    for i, e in enumerate(evaluations):
        for key in ("anchors", "kl", "answer_loss", "stage", "pooling", "sources", "statistic", "accepted"):
            if key not in e:
                fail(f"{path}: evaluations[{i}]: missing '{key}'")
        check_anchors(e["anchors"], layers, f"{path}: evaluations[{i}].anchors")
        if not (finite(e["kl"]) and e["kl"] >= 0 and finite(e["answer_loss"])):
            fail(f"{path}: evaluations[{i}]: kl must be finite and >= 0, answer_loss finite")
        if e["stage"] not in ("candidate", "search", "pooling"):
            fail(f"{path}: evaluations[{i}].stage must be candidate, search or pooling")
    n = len(evaluations)
    for key in ("chosen", "best_candidate"):
        if not isinstance(report[key], int) or not (0 <= report[key] < n):
            fail(f"{path}: {key} must be an index into evaluations")
    if not isinstance(report["search_path"], list) or any(not isinstance(i, int) or not (0 <= i < n) for i in report["search_path"]):
        fail(f"{path}: search_path must be indices into evaluations")
    if not finite(report["dense"].get("answer_loss")):
        fail(f"{path}: dense.answer_loss must be a finite number")
    return report


def segments(anchors, layers):
    """(anchor, first layer, one past the last layer) of each anchor's reuse segment."""
    ends = anchors[1:] + [layers]
    return [(a, a, e) for a, e in zip(anchors, ends)]


def layer_weights(stat, w):
    import numpy as np

    # The DP's layer weights: w under SPEC 6, else the variant recorded in the objective (version
    # 1 reports of `--layer-weight`); S divided by them is the coverage.
    name = stat.get("objective", {}).get("layer_weight", "spec")
    if name == "spec":
        return name, w
    if name == "uniform":
        return name, np.ones_like(w)
    if name == "sqrt":
        return name, np.sqrt(np.maximum(w, 0.0))
    fail(f"objective.layer_weight must be spec, uniform or sqrt, got {name!r}")


def plot_scores(stat, anchors, title, filename, outdir):
    """Heat maps of S and S / weight, the anchors' segments outlined."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    L = stat["layers"]
    w = np.array(stat["importance"], dtype=float)
    S = np.full((L, L), np.nan)
    for l1 in range(L):
        for l2 in range(l1, L):
            S[l1, l2] = stat["layer_scores"][l1][l2]
    weight_name, weights = layer_weights(stat, w)
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
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, filename), dpi=90)
    plt.close(fig)


def plot_importance(w, anchors, title, outdir):
    import matplotlib.pyplot as plt
    import numpy as np

    w = np.array(w, dtype=float)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(np.arange(len(w)), w, marker="o", markersize=3, label="w[l]")
    ax.plot(anchors, w[anchors], linestyle="none", marker="s", color="red", label="anchors")
    if (w > 0).all():
        ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.set_ylabel("importance w")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "importance.png"), dpi=90)
    plt.close(fig)


def source_series(e):
    """The series a scored plan is drawn in: what proposed it first."""
    if e["stage"] == "search":
        return "search"
    if e["stage"] == "pooling":
        return "all-heads pooling"
    first = e["sources"][0] if e["sources"] else ""
    if first.startswith("even"):
        return "even spacing (" + ("spec" if "spec map" in first else "paper") + " map)"
    return first.split(" m=")[0]  # "spec dp" / "paper dp"


def plot_version2(report, outdir):
    import matplotlib.pyplot as plt

    evaluations = report["evaluations"]
    chosen = evaluations[report["chosen"]]
    model = report["model"]
    held = report.get("dev_set", {}).get("held_out_prompts", [])
    subtitle = f"{model.get('name', '')}, {len(held)} held-out prompts"

    # Every scored plan against m, one series per source.
    markers = {"spec dp": "o", "paper dp": "s", "even spacing (spec map)": "^", "even spacing (paper map)": "v",
               "search": ".", "all-heads pooling": "x"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for series, marker in markers.items():
        points = [e for e in evaluations if source_series(e) == series]
        if not points:
            continue
        # Offsets keep the series at one m apart.
        offset = (list(markers).index(series) - 2.5) * 0.06
        for ax, key in zip(axes, ("kl", "answer_loss")):
            ax.plot([len(e["anchors"]) + offset for e in points], [e[key] for e in points], linestyle="none",
                    marker=marker, markersize=6 if marker != "." else 8, label=series, alpha=0.8)
    counts = sorted({len(e["anchors"]) for e in evaluations})
    for ax, key in zip(axes, ("kl", "answer_loss")):
        ax.plot([len(chosen["anchors"])], [chosen[key]], marker="*", markersize=16, color="red", linestyle="none",
                label=f"chosen: {' '.join(map(str, chosen['anchors']))} ({chosen['pooling']})")
        ax.set_xticks(range(counts[0], counts[-1] + 1))
        ax.set_xlabel("anchors m")
        ax.grid(alpha=0.3)
    if all(e["kl"] > 0 for e in evaluations):
        axes[0].set_yscale("log")
    axes[0].set_ylabel("held-out next-token KL vs dense (nats)")
    axes[0].set_title("the choice: mean KL, kinds weighted equally")
    axes[1].axhline(report["dense"]["answer_loss"], color="black", linestyle="--", linewidth=1, label="dense")
    axes[1].set_ylabel("held-out answer log-loss (nats/token)")
    axes[1].set_title("the tie-break: answer log-loss")
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(f"Kascade calibration: every scored plan, {subtitle}")
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "candidates.png"), dpi=90)
    plt.close(fig)

    # The search: its plans in order, the accepted path.
    searched = [(i, e) for i, e in enumerate(evaluations) if e["stage"] == "search"]
    path = report["search_path"]
    fig, ax = plt.subplots(figsize=(9, 4))
    start = evaluations[path[0]] if path else chosen
    steps = [0] + [k + 1 for k in range(len(searched))]
    ax.plot([0], [start["kl"]], marker="o", color="black", linestyle="none", label="start: best candidate")
    if searched:
        ax.plot(steps[1:], [e["kl"] for _, e in searched], marker=".", color="grey", linestyle="none", label="scored moves")
    step_of = {i: k + 1 for k, (i, _) in enumerate(searched)}
    xs, ys = [0], [start["kl"]]
    for i in path[1:]:
        xs.append(step_of[i])
        ys.append(evaluations[i]["kl"])
    ax.plot(xs, ys, color="tab:blue", marker="o", label="accepted path")
    # Each accepted step by the anchor it moved (alternately above and below); the start and the
    # end by their whole anchor sets in the legend.
    for k, (x, i) in enumerate(zip(xs[1:], path[1:])):
        moved = [s.split("anchor ", 1)[1].split(" (")[0] for s in evaluations[i]["sources"] if s.startswith("search")]
        ax.annotate(moved[0] if moved else "", (x, evaluations[i]["kl"]), fontsize=7, textcoords="offset points",
                    xytext=(3, 6 if k % 2 == 0 else -11))
    ax.plot([], [], linestyle="none", label="start " + " ".join(map(str, start["anchors"])))
    ax.plot([], [], linestyle="none", label="end " + " ".join(map(str, evaluations[path[-1]]["anchors"])))
    ax.set_xlabel("search step (plans scored by the search)")
    ax.set_ylabel("held-out KL vs dense (nats)")
    ax.set_title(f"coordinate search from the best candidate: {len(searched)} plans scored, "
                 f"moves accepted: {len(path) - 1}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "search.png"), dpi=90)
    plt.close(fig)

    for name in ("spec", "paper"):
        stat = report["statistics"][name]
        dp = stat["dp_at_chosen_m"]["anchors"]
        rows = stat.get("decode_rows", {})
        extra = f", decode rows set {rows.get('minima_share', 0):.0%} of minima" if rows.get("counted") else ""
        plot_scores(stat, dp, f"statistic '{name}': k_cal {stat.get('k_cal')}, {stat['prompts']} prompts{extra}; "
                    f"DP set at m = {len(dp)}: {dp}", f"layer_scores_{name}.png", outdir)
    plot_importance(report["statistics"]["spec"]["importance"], chosen["anchors"],
                    f"layer importance 1 - cos(x, x + attn(x)); chosen anchors {chosen['anchors']}", outdir)
    return ["candidates.png", "search.png", "layer_scores_spec.png", "layer_scores_paper.png", "importance.png"]


def plot_version1(report, outdir):
    import matplotlib.pyplot as plt
    import numpy as np

    chosen = report["chosen"]
    anchors = chosen["anchors"]
    title = f"{report['prompts']} prompts, k_cal {report.get('k_cal')}, tile {report.get('tile')}"
    plot_scores(report, anchors, f"Kascade calibration: anchors {anchors} (m = {chosen['m']}), {title}",
                "layer_scores.png", outdir)
    plot_importance(report["importance"], anchors, f"layer importance 1 - cos(x, x + attn(x)), {title}", outdir)
    L = report["layers"]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(np.arange(L), chosen["coverage"], marker="o", markersize=3, label="coverage kept by the plan")
    ax.plot(np.arange(L), report["topk_mass_share"], marker=".", label=f"own top-{report.get('k_cal')} + diagonal mass share")
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
    return ["layer_scores.png", "importance.png", "coverage.png"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", help="calibration report JSON (kascade calibrate --report)")
    parser.add_argument("outdir", help="directory for the PNGs (created if needed)")
    args = parser.parse_args()
    report = load_report(args.report)
    if os.path.exists(args.outdir) and not os.path.isdir(args.outdir):
        fail(f"{args.outdir}: exists and is not a directory")
    try:
        import matplotlib
        import numpy  # noqa: F401
    except ImportError as e:
        fail(f"needs matplotlib and numpy (pip install -r scripts/requirements.txt): {e}")
    matplotlib.use("Agg")
    os.makedirs(args.outdir, exist_ok=True)
    written = plot_version2(report, args.outdir) if report["version"] == 2 else plot_version1(report, args.outdir)
    for name in written:
        print(os.path.join(args.outdir, name))


if __name__ == "__main__":
    main()
