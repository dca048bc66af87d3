"""``imagefolder``: a Hugging Face ``imagefolder`` labeled by its metadata file.

The layout ``datasets.load_dataset("imagefolder", data_dir=PATH)`` reads, with the labels
in a ``metadata.csv`` or ``metadata.jsonl`` (a ``file_name`` column, relative to the
metadata file's folder, and a label column)::

    PATH/metadata.csv, PATH/img/1.png, ...                 split by val_split/test_split
    PATH/train/metadata.csv, PATH/validation/metadata.jsonl, PATH/test/...   splits as given

With the metadata at the root, a ``file_name`` starting with a split folder
(``train/1.png``) puts the image in that split.  The label column is ``label`` (or
``labels``), else ``data.params.label_column``; class names are its sorted distinct values
(what ``datasets`` gives a string column).  Read with plain ``csv``/``json`` and PIL.

:func:`zoo_datasets.claims.is_imagefolder` is this dataset's ``claims_paths`` test: plain
``--data PATH`` comes here when the root, or one of its split folders, holds a metadata
file (two levels looked at).
"""
from __future__ import annotations

import os

from zoo.errors import DataError

from .folder import FolderDataset, _check_path, split_dataset
from .claims import SPLIT_NAMES, metadata_files
from .labeled import build_index, pick_column, read_table, stamps
from .memo import memo

PARAMS = ("label_column",)
HINT = ("an imagefolder needs metadata.csv or metadata.jsonl (file_name + label columns) "
        "at its root or in train/, validation/, test/")


def _rows(root: str, split: str | None, table: str, label_column: str | None) -> list:
    rows = read_table(table)
    where = os.path.relpath(table, root)
    if not rows:
        return []
    columns = list(rows[0])
    if "file_name" not in columns:
        raise DataError(f"{where} has no file_name column (columns: {', '.join(columns)}) — "
                        f"{HINT}")
    label_col = pick_column(columns, label_column, ("label", "labels"), "label", where,
                            "label_column")
    base = os.path.dirname(table)
    out = []
    for row in rows:
        file, label = str(row.get("file_name") or "").strip(), row.get(label_col)
        if not file or label is None or str(label).strip() == "":
            continue  # an unlabeled row: not a classification example
        origin = split
        if origin is None:  # metadata at the root: "train/1.png" is in train
            origin = SPLIT_NAMES.get(file.replace("\\", "/").split("/", 1)[0].lower())
        out.append((origin, str(label).strip(), os.path.normpath(os.path.join(base, file))))
    return out


def scan(root: str, label_column: str | None, cache_images: bool | None):
    tables = metadata_files(root)
    if not tables:
        raise DataError(f"{root} has no metadata file — {HINT}")
    rows = []
    for split, table in tables:
        rows += _rows(root, split, table, label_column)
    return build_index(root, rows, cache_images, f"the metadata of {root}")


def build(spec, split: str, transform, seed: int) -> FolderDataset:
    unknown = [k for k in spec.params if k not in PARAMS]
    if unknown:
        raise DataError(f"unknown imagefolder parameter '{unknown[0]}' (imagefolder takes "
                        f"{', '.join(PARAMS)})")
    root = _check_path(spec.path, "pass --data PATH to a folder with metadata.csv or "
                       "metadata.jsonl (file_name + label columns)")
    tables = [t for _, t in metadata_files(root)]
    label_column = spec.params.get("label_column")
    key = ("imagefolder", os.path.realpath(root), stamps(tables), spec.cache_images,
           label_column)
    index = memo(key, lambda: scan(root, label_column, spec.cache_images))
    return split_dataset(index, spec, split, transform, seed, name="imagefolder")
