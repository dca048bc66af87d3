"""The pictures of ``zoo explain``: one image beside its map, and grids of maps (also the
top-losses plot), written as PNG atomically.  matplotlib comes through :mod:`zoo.io.plots`.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

from zoo.io import atomic
from zoo.io.plots import _figure
from zoo.tools.attribution import Explanation


def _normalised(m):
    import numpy as np  # lazy: numpy

    m = np.asarray(m, dtype=np.float32)
    top = float(m.max()) if m.size else 0.0
    return m / top if top > 0 else m


def _overlay(ax, e: Explanation) -> None:
    ax.imshow(e.display)
    ax.imshow(_normalised(e.map), cmap="jet", alpha=0.45, vmin=0, vmax=1,
              interpolation="bilinear")
    ax.set_axis_off()


def plot_single(e: Explanation):
    """The image beside its map, titled with the target class (and the prediction)."""
    plt = _figure()
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.2))
    axes[0].imshow(e.display)
    axes[0].set_axis_off()
    axes[0].set_title(Path(e.image).name, fontsize=9)
    _overlay(axes[1], e)
    title = f"{e.method}: {e.target_class} ({e.target_probability:.2f})"
    if e.target != e.predicted:
        title += f"\npredicted {e.predicted_class} ({e.probability:.2f})"
    axes[1].set_title(title, fontsize=9)
    return fig


def plot_grid(results: list[Explanation], title: str, losses: bool = False):
    """Maps on their images, 4 a row; ``losses``: titled prediction / actual, loss / p."""
    plt = _figure()
    n = max(1, len(results))
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, e in zip(axes.flat, results):
        _overlay(ax, e)
        if losses:
            ax.set_title(f"{e.predicted_class} / {e.label_class}\n{e.loss:.2f} / "
                         f"{math.exp(-e.loss):.2f}", fontsize=8)
        else:
            ax.set_title(f"{Path(e.image).name}\n{e.target_class} "
                         f"({e.target_probability:.2f})", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def save_png(path: Path, fig) -> None:
    """Write ``fig`` to ``path`` atomically, then close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    atomic.write_bytes(path, buf.getvalue())
    _figure().close(fig)
