"""The files of the non-scalar metrics: ``confusion.csv`` + ``confusion.png``, ``per_class.csv``.

Each is a metric's ``writer`` (``register(..., writer=fn)``): the core hands it the metric's
test value and the class names once the best epoch was tested; it knows no file names.
"""
from __future__ import annotations

from pathlib import Path

from zoo.io import atomic


def _csv(text) -> str:
    text = str(text)
    return f'"{text.replace(chr(34), chr(34) * 2)}"' if any(c in text for c in ',"\n') else text


def write_confusion(run_dir: Path, value, classes: list) -> None:
    """``confusion.csv`` (rows: true class, columns: predicted) and ``confusion.png``."""
    m = value.tolist()
    rows = ["true\\pred," + ",".join(_csv(c) for c in classes)]
    rows += [_csv(c) + "," + ",".join(str(int(v)) for v in row) for c, row in zip(classes, m)]
    atomic.write_text(Path(run_dir) / "confusion.csv", "\n".join(rows) + "\n")
    from zoo.io.plots import plot_confusion  # lazy: matplotlib

    plot_confusion(value.numpy(), classes, Path(run_dir) / "confusion.png")


def write_per_class(run_dir: Path, value, classes: list) -> None:
    """``per_class.csv``: ``class,accuracy`` per class."""
    vals = value.tolist()
    atomic.write_text(Path(run_dir) / "per_class.csv", "class,accuracy\n" + "".join(
        f"{_csv(c)},{v:.6f}\n" for c, v in zip(classes, vals)))
