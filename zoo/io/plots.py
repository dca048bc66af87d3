"""Pictures a person can open: training curves and the confusion matrix (matplotlib, Agg)."""
from __future__ import annotations

import io
from pathlib import Path

from zoo.io import atomic


def _figure():
    import matplotlib  # lazy: matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: matplotlib

    return plt


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    atomic.write_bytes(path, buf.getvalue())


def plot_curves(history: list[dict], monitor: str, path: Path, title: str = "") -> None:
    """Train loss and the monitored val metric per epoch; phase boundaries as dashed lines."""
    plt = _figure()
    epochs = [r["epoch"] for r in history]
    fig, ax1 = plt.subplots(figsize=(7, 4))
    ax1.plot(epochs, [r["train"]["loss"] for r in history], "o-", color="tab:red",
             label="train loss")
    if any("loss" in r.get("val", {}) for r in history):
        ax1.plot(epochs, [r["val"].get("loss") for r in history], "s--", color="tab:orange",
                 label="val loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax2 = ax1.twinx()
    vals = [r.get("val", {}).get(monitor) for r in history]
    if any(v is not None for v in vals):
        ax2.plot(epochs, vals, "o-", color="tab:blue", label=f"val {monitor}")
        ax2.set_ylabel(f"val {monitor}")
    for prev, cur in zip(history, history[1:]):
        if prev["phase"] != cur["phase"]:
            ax1.axvline(prev["epoch"] + 0.5, color="grey", linestyle=":", linewidth=1)
            ax1.text(prev["epoch"] + 0.55, ax1.get_ylim()[1], cur["phase"], fontsize=8,
                     va="top", color="grey")
    lines = ax1.get_legend_handles_labels()
    more = ax2.get_legend_handles_labels()
    ax1.legend(lines[0] + more[0], lines[1] + more[1], loc="best", fontsize=8)
    ax1.set_title(title)
    _save(fig, path)
    plt.close(fig)


def plot_confusion(matrix, classes: list[str], path: Path, title: str = "") -> None:
    plt = _figure()
    import numpy as np  # lazy: numpy

    m = np.asarray(matrix)
    n = len(classes)
    size = min(12, 2 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(size, size))
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), classes, fontsize=8)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion (test)")
    _save(fig, path)
    plt.close(fig)
