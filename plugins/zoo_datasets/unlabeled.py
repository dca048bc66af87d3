"""``unlabeled``: every image under a folder, labels unused — the target images of an
unsupervised domain-adaptation job (``target_data: {path: ./target}``).

Any layout is read: images directly in the folder, in subfolders of any depth (class
subfolders are read, their names ignored), or ``train/ val/ test/`` split folders — then
only ``train/`` is read, so the target's labeled test images never enter training. The
train split is every readable image (``max_per_class`` caps the total: one pseudo-class);
val and test are empty: a UDA job reports on ``data``'s test split. Unreadable files are
skipped with a warning, as in ``folder``; decoding happens once, in the main process, for
folders that fit the same cache limits.
"""
from __future__ import annotations

import os

from zoo.errors import DataError

from .folder import FolderDataset, FolderIndex, _check, _check_path, _layout, _listing, signature
from .folder_walk import _walk
from .memo import memo

CLASSES = ["unlabeled"]  # one pseudo-class: the labels of these images are never read


def scan(root: str, cache_images: bool | None, follow_links: bool = False) -> FolderIndex:
    layout = _layout(root)
    base = os.path.join(root, layout["train"]) if layout else root
    external: list | None = None if follow_links else []  # links leaving the root: skipped
    candidates = [(None, CLASSES[0], p) for p in _walk(base, root, external)]
    usable, images, failed = _check(candidates, cache_images)
    if not usable:
        raise DataError(f"no readable images under {base} — target_data needs a folder of "
                        "images (any layout; labels are not used)")
    rel = [os.path.relpath(p, root).replace(os.sep, "/") for _, _, p in usable]
    warnings = []
    if external:
        warnings.append(f"skipped {len(external)} link(s) leading outside {root}: "
                        f"{_listing([os.path.relpath(p, root) for p in external])} — set "
                        "target_data.params.follow_links=true to follow them")
    if failed:
        warnings.append(f"skipped {len(failed)} unreadable file(s) under {base}: "
                        f"{_listing([os.path.relpath(p, root) for p, _ in failed])}")
    return FolderIndex(root=root, classes=CLASSES, files=rel, labels=[0] * len(rel),
                       origins=[None] * len(rel), warnings=warnings, images=images)


def build(spec, split: str, transform, seed: int) -> FolderDataset:
    unknown = [k for k in spec.params if k != "follow_links"]
    if unknown:
        raise DataError(f"unknown unlabeled dataset parameter '{unknown[0]}' (unlabeled "
                        "takes follow_links: true|false; set target_data.path)")
    follow = spec.params.get("follow_links", False)
    if not isinstance(follow, bool):
        raise DataError(f"target_data.params.follow_links must be true or false, got "
                        f"{follow!r}")
    root = _check_path(spec.path, "pass --target-data PATH to a folder of images (any layout)")
    key = ("unlabeled", os.path.realpath(root), signature(root), spec.cache_images, follow)
    index = memo(key, lambda: scan(root, spec.cache_images, follow))
    positions = list(range(len(index.files))) if split == "train" else []
    if split == "train" and spec.max_per_class:
        import random  # lazy: only when capping

        positions = sorted(random.Random(seed).sample(positions,
                                                      min(spec.max_per_class, len(positions))))
    return FolderDataset(index, positions, name="unlabeled", split=split, classes=CLASSES,
                         targets=[0] * len(positions),
                         sample_ids=[index.files[p] for p in positions], transform=transform,
                         warnings=list(index.warnings))
