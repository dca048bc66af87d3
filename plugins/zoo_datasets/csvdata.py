"""``csv:PATH``: images listed in a CSV file.

A header row, then one row per image::

    path,label,split
    images/cat1.jpg,cat,train
    images/dog7.jpg,dog,val

``path`` is relative to the CSV's own folder (absolute paths work too); ``split``
(``train``/``val``/``test``, ``validation`` accepted) is optional: without it, or for the
splits no row names, val and test are carved from train, stratified, by ``val_split`` /
``test_split`` as for a folder.  Columns are found by name (``path`` also as ``file_name``,
``image`` or ``file``; the label column by ``data.params.label_column``).  Class names are
the sorted distinct labels.  Plain ``csv`` and PIL: no extra dependency.
"""
from __future__ import annotations

import os

from zoo.errors import DataError

from .folder import FolderDataset, split_dataset
from .labeled import build_index, pick_column, read_table, split_of, stamps
from .memo import memo

PARAMS = ("label_column", "path_column")
HINT = "csv:PATH needs a CSV file with a header row: path,label[,split]"


def _csv_path(spec) -> str:
    raw = spec.name.split(":", 1)[1] if ":" in spec.name else (spec.path or "")
    if not raw:
        raise DataError(f"no CSV file given — {HINT}, e.g. --data csv:data/labels.csv")
    path = os.path.abspath(os.path.expanduser(raw))
    if not os.path.isfile(path):
        what = "is a folder" if os.path.isdir(path) else "does not exist"
        raise DataError(f"CSV file {raw} {what} — {HINT}")
    return path


def scan(path: str, params: dict, cache_images: bool | None):
    rows = read_table(path)
    where = os.path.basename(path)
    if not rows:
        raise DataError(f"{path} has no rows — {HINT}")
    columns = list(rows[0])
    path_col = pick_column(columns, params.get("path_column"),
                           ("path", "file_name", "image", "file"), "image path", where,
                           "path_column")
    label_col = pick_column(columns, params.get("label_column"), ("label", "labels", "class"),
                            "label", where, "label_column")
    split_col = "split" if "split" in columns else None
    root = os.path.dirname(path)
    table = []
    for line, row in enumerate(rows, start=2):
        file, label = (row.get(path_col) or "").strip(), str(row.get(label_col) or "").strip()
        if not file or not label:
            raise DataError(f"{where}, line {line}: empty {path_col if not file else label_col}"
                            f" — every row needs a path and a label")
        split = split_of(row.get(split_col), f"{where}, line {line}") if split_col else None
        table.append((split, label, os.path.normpath(os.path.join(root, file))))
    return build_index(root, table, cache_images, where)


def build(spec, split: str, transform, seed: int) -> FolderDataset:
    unknown = [k for k in spec.params if k not in PARAMS]
    if unknown:
        raise DataError(f"unknown csv dataset parameter '{unknown[0]}' (csv takes "
                        f"{', '.join(PARAMS)})")
    path = _csv_path(spec)
    key = ("csv", path, stamps([path]), spec.cache_images, repr(sorted(spec.params.items())))
    index = memo(key, lambda: scan(path, spec.params, spec.cache_images))
    return split_dataset(index, spec, split, transform, seed, name=spec.name)
