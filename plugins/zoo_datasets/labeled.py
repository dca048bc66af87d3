"""Labeled image files listed by a table (``metadata.csv``/``.jsonl``, a ``csv:`` file) →
the :class:`~zoo_datasets.folder.FolderIndex` the ``folder`` dataset splits and loads.

A table gives each image its label (and maybe its split) explicitly, so the class names
are the labels' distinct values, sorted (numbers by value: ``2`` before ``10``), which is
what Hugging Face ``datasets`` gives a string label column.  Files are checked exactly as
a folder's are (unreadable ones skipped and counted); a row naming a file that does not
exist is skipped the same way ("missing").  Plain ``csv``/``json`` and PIL only: reading
these needs no extra dependency.
"""
from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter
from pathlib import Path

from zoo.errors import DataError

from .claims import SPLIT_NAMES
from .folder import FolderIndex, _check, _listing


def natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def split_of(value: str | None, where: str) -> str | None:
    """``train``/``val``/``test`` for a table's split value (empty: not given)."""
    if value is None or not str(value).strip():
        return None
    split = SPLIT_NAMES.get(str(value).strip().lower())
    if split is None:
        raise DataError(f"{where}: unknown split '{value}' — use train, val (validation) "
                        f"or test")
    return split


def read_table(path: str) -> list[dict]:
    """The rows of a ``.csv`` (header row first) or ``.jsonl`` (one object a line) file."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            if path.endswith(".jsonl"):
                rows = [json.loads(line) for line in f if line.strip()]
            else:
                rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path} ({type(exc).__name__}: {exc}) — it must be a "
                        f"UTF-8 {'JSON-lines' if path.endswith('.jsonl') else 'CSV'} file "
                        f"with a header") from None
    bad = next((r for r in rows if not isinstance(r, dict)), None)
    if bad is not None:
        raise DataError(f"{path}: every line must be a JSON object, got {bad!r}")
    return rows


def pick_column(columns: list[str], wanted: str | None, candidates: tuple[str, ...],
                what: str, where: str, param: str) -> str:
    """The column named ``wanted`` (a parameter), else the first of ``candidates`` present."""
    if wanted:
        if wanted not in columns:
            raise DataError(f"{where} has no column '{wanted}' (columns: {', '.join(columns)})"
                            f" — set data.params.{param} to one of them")
        return wanted
    found = next((c for c in candidates if c in columns), None)
    if found is None:
        raise DataError(f"{where} has no {what} column (columns: {', '.join(columns)}) — "
                        f"name it '{candidates[0]}' or set data.params.{param}=COLUMN")
    return found


def build_index(root: str, rows: list[tuple[str | None, str, str]],
                cache_images: bool | None, where: str) -> FolderIndex:
    """``rows`` of (split or None, label, absolute path) → a checked :class:`FolderIndex`.

    A split given for some rows only: the others are train (a missing val/test is carved
    from train as for split folders).
    """
    if any(origin for origin, _, _ in rows):
        rows = [(origin or "train", label, p) for origin, label, p in rows]
        if not any(origin == "train" for origin, _, _ in rows):
            raise DataError(f"{where}: no training images (no row with split train) — "
                            f"give some rows split 'train'")
    usable, images, failed = _check(rows, cache_images)
    classes = sorted({label for _, label, _ in usable}, key=natural)
    if not usable:
        raise DataError(f"no readable images listed in {where} — its paths are relative to "
                        f"the folder of the table ({root})")
    if len(classes) < 2:
        raise DataError(f"{where} has only one label ('{classes[0]}'): classification needs "
                        f"at least 2 classes")

    def rel(path: str) -> str:
        return Path(os.path.relpath(path, root)).as_posix()

    warnings = []
    if failed:
        reasons = Counter(reason for _, reason in failed)
        detail = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
        warnings.append(f"skipped {len(failed)} unreadable file(s) listed in {where} "
                        f"({detail}): {_listing([rel(p) for p, _ in failed])}")
    label_of = {c: i for i, c in enumerate(classes)}
    return FolderIndex(root=root, classes=classes, files=[rel(p) for _, _, p in usable],
                       labels=[label_of[label] for _, label, _ in usable],
                       origins=[origin for origin, _, _ in usable], warnings=warnings,
                       images=images)


def stamps(paths: list[str]) -> tuple:
    """Modification times of the tables: the memo key changes when one is edited."""
    return tuple((p, os.stat(p).st_mtime_ns) for p in paths)
