"""The files of a comparison people open: ``compare.csv`` (the leaderboard) and ``compare.png``."""
from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path

from zoo.io.plots import _figure, _save


def leaderboard_csv(result: dict) -> str:
    board = result["leaderboard"]
    metric = result["rank_metric"]["metric"]
    keys = sorted({k for e in board for k in e["metrics"]}, key=lambda k: (k != metric, k))
    header = (["rank", "strategy", "runs", "failed"]
              + [f"{k}_{stat}" for k in keys for stat in ("mean", "std")]
              + ["wall_seconds_mean", "wall_seconds_std", "cpu_seconds_mean", "cpu_seconds_std",
                 "trainable_params", "chosen", "error"])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for e in board:
        row = [e.get("rank") or "", e["strategy"], e["runs"], e["failed"]]
        for k in keys:
            m = e["metrics"].get(k)
            row += [_fmt(m["mean"]), _fmt(m["std"])] if m else ["", ""]
        row += [_fmt(e["wall_seconds"].get("mean")), _fmt(e["wall_seconds"].get("std")),
                _fmt(e["cpu_seconds"].get("mean")), _fmt(e["cpu_seconds"].get("std")),
                e["trainable_params"] if e["trainable_params"] is not None else "",
                ";".join(f"{k}:{v}" for k, v in (e.get("chosen") or {}).items()),
                e["error"] or ""]
        writer.writerow(row)
    return buf.getvalue()


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.6g}"


def _val_curve(run_dir: str | None, metric: str) -> list[tuple[int, float]]:
    if not run_dir:
        return []
    path = Path(run_dir) / "metrics.jsonl"
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    points = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        value = rec.get("val", {}).get(metric)
        if value is not None:
            points.append((rec["epoch"], value))
    return points


def plot_compare(result: dict, path: Path) -> None:
    """Bars (mean ± std of the ranking metric) and mean val curves per strategy."""
    plt = _figure()
    metric = result["rank_metric"]["metric"]
    board = result["leaderboard"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = [e["strategy"] for e in board]
    means = [e["metrics"].get(metric, {}).get("mean", float("nan")) if e["runs"] else 0.0
             for e in board]
    stds = [e["metrics"].get(metric, {}).get("std", 0.0) if e["runs"] else 0.0 for e in board]
    means = [0.0 if math.isnan(m) else m for m in means]
    stds = [0.0 if math.isnan(s) else s for s in stds]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color_of = {n: colors[i % len(colors)] for i, n in enumerate(result["strategies"])}
    bars = ax1.bar(range(len(names)), means, yerr=stds, capsize=4,
                   color=[color_of[n] for n in names])
    for i, (bar, e) in enumerate(zip(bars, board)):
        label = "failed" if not e["runs"] else f"{means[i]:.3f}"
        ax1.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + stds[i], label,
                 ha="center", va="bottom", fontsize=8,
                 color="red" if not e["runs"] else "black")
    ax1.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax1.set_ylabel(f"test {metric} (mean ± std over seeds)")
    ax1.set_title(f"{result['model']} on {result['data']}")
    for strategy in result["strategies"]:
        curves = [_val_curve(r["run_dir"], metric) for r in result["runs"]
                  if r["strategy"] == strategy and r["status"] == "completed"]
        curves = [c for c in curves if c]
        if not curves:
            continue
        by_epoch: dict[int, list[float]] = {}
        for c in curves:
            for epoch, v in c:
                by_epoch.setdefault(epoch, []).append(v)
        epochs = sorted(by_epoch)
        ax2.plot(epochs, [statistics.fmean(by_epoch[e]) for e in epochs], "o-", markersize=3,
                 label=strategy, color=color_of[strategy])
    from matplotlib.ticker import MaxNLocator  # lazy: matplotlib

    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set_xlabel("epoch")
    ax2.set_ylabel(f"val {metric} (mean over seeds)")
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(fontsize=8, loc="best")
    ax2.set_title("validation curves")
    fig.suptitle(result.get("verdict", ""), fontsize=8, y=0.02, va="bottom")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    _save(fig, path)
    plt.close(fig)
