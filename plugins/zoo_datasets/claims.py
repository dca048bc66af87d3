"""Which built-in dataset claims ``--data PATH`` by the folder's layout (``claims_paths``).

Each test looks at the folder's top two levels only (never a scan of the images) and
imports neither torch nor PIL nor ``datasets``: it runs while ``--data`` is resolved.
"""
from __future__ import annotations

import os

METADATA = ("metadata.csv", "metadata.jsonl")
#: split folder names → zoo's split (the aliases the ``folder`` dataset understands)
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val",
               "validation": "val", "test": "test", "testing": "test"}


def _metadata_in(folder: str) -> str | None:
    return next((os.path.join(folder, m) for m in METADATA
                 if os.path.isfile(os.path.join(folder, m))), None)


def metadata_files(root: str) -> list[tuple[str | None, str]]:
    """(split or None, metadata file) at the root and in its split folders: two levels."""
    found = []
    top = _metadata_in(root)
    if top:
        found.append((None, top))
    with os.scandir(root) as entries:
        folders = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    for name in folders:
        split = SPLIT_NAMES.get(name.lower())
        inner = _metadata_in(os.path.join(root, name)) if split else None
        if inner:
            found.append((split, inner))
    return found


def is_imagefolder(path: str) -> bool:
    """A Hugging Face imagefolder with metadata.csv/.jsonl at the root or in a split folder."""
    return os.path.isdir(path) and bool(metadata_files(path))


def is_saved_dataset(path: str) -> bool:
    """A ``save_to_disk`` folder: ``dataset_dict.json``, or ``state.json`` +
    ``dataset_info.json`` (its top level only)."""
    return os.path.isdir(path) and (
        os.path.isfile(os.path.join(path, "dataset_dict.json"))
        or (os.path.isfile(os.path.join(path, "state.json"))
            and os.path.isfile(os.path.join(path, "dataset_info.json"))))
