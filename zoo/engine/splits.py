"""Deterministic, stratified train/val/test splits and few-shot subsets: zoo's one split.

The built-in datasets, the scaffold's dataset template and the kit's ``tiny`` dataset all
split through these functions (a third-party dataset should too), so every dataset shares
one meaning of ``seed``, ``val_split``, ``test_split`` and ``max_per_class``:

* each class is shuffled by its own generator seeded with ``(seed, class)``: adding a class
  or images of another class does not reshuffle a class's split;
* a class with at least 3 images gets at least one val and one test image when the
  fraction is positive (so per-class metrics exist), and every class keeps at least one
  training image; classes too small for that are kept in train and reported;
* the few-shot subset takes the first ``k`` of another seeded permutation, so the 5-shot
  train set is inside the 10-shot one for the same seed.

Index lists come back sorted, so a split's order follows the dataset's own order.
Imports numpy lazily: dataset plugins import this module from their registration code.
"""
from __future__ import annotations

from collections.abc import Sequence

from zoo.errors import DataError

SPLITS = ("train", "val", "test")

# Salts keep the split shuffle and the few-shot shuffle independent of each other.
_SPLIT_SALT = 0x5B17
_FEW_SHOT_SALT = 0xFE5


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    return split


def _rng(seed: int, label: int, salt: int):
    import numpy as np  # lazy: numpy (dataset plugins import this module at registration)

    # SeedSequence wants non-negative entropy; fold any int into 64 bits.
    return np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, int(label), salt])


def _by_class(labels: Sequence[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for position, label in enumerate(labels):
        groups.setdefault(int(label), []).append(position)
    return groups


def _counts(n: int, val: float, test: float) -> tuple[int, int]:
    """How many of ``n`` images of one class go to val and test."""
    n_test = int(n * test + 0.5)
    n_val = int(n * val + 0.5)
    if n >= 3:
        n_test = max(n_test, 1 if test > 0 else 0)
        n_val = max(n_val, 1 if val > 0 else 0)
    # Train keeps at least one image; val gives way before test (test is what gets reported).
    while n_val + n_test > n - 1 and n_val > 0:
        n_val -= 1
    while n_val + n_test > n - 1 and n_test > 0:
        n_test -= 1
    return n_val, n_test


def stratified_split(labels: Sequence[int], val: float, test: float, seed: int,
                     classes: Sequence[str] | None = None
                     ) -> tuple[dict[str, list[int]], list[str]]:
    """Split positions ``0..len(labels)-1`` into train/val/test, class by class.

    :return: ``({"train": [...], "val": [...], "test": [...]}, warnings)``.
    """
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    short: list[tuple[int, int]] = []
    for label, positions in sorted(_by_class(labels).items()):
        order = [positions[i] for i in _rng(seed, label, _SPLIT_SALT).permutation(len(positions))]
        n_val, n_test = _counts(len(order), val, test)
        if (val > 0 and n_val == 0) or (test > 0 and n_test == 0):
            short.append((len(order), label))
        out["test"] += order[:n_test]
        out["val"] += order[n_test:n_test + n_val]
        out["train"] += order[n_test + n_val:]
    warnings = []
    if short:
        n, label = min(short)
        name = classes[label] if classes is not None else str(label)
        missing = " and ".join(s for s, f in (("val", val), ("test", test)) if f > 0)
        warnings.append(f"{len(short)} class(es) have too few images to be split (fewest: "
                        f"'{name}' with {n}); they are missing from {missing} "
                        f"where needed and kept in train")
    return {s: sorted(v) for s, v in out.items()}, warnings


def few_shot(positions: Sequence[int], labels: Sequence[int], k: int | None,
             seed: int) -> list[int]:
    """Keep at most ``k`` of ``positions`` per class (``labels`` indexed by position)."""
    if k is None:
        return sorted(positions)
    groups: dict[int, list[int]] = {}
    for p in positions:
        groups.setdefault(int(labels[p]), []).append(p)
    kept: list[int] = []
    for label, members in sorted(groups.items()):
        members.sort()
        order = _rng(seed, label, _FEW_SHOT_SALT).permutation(len(members))
        kept += [members[i] for i in order[:k]]
    return sorted(kept)
