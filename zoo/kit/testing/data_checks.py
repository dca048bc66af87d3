"""Contract checks of what the loop feeds and measures: datasets and metrics.  Each raises
``AssertionError`` with a message that says what to fix.

Importing this module imports no torch; each check imports it when it runs.
"""
from __future__ import annotations

import math
from typing import Callable

from zoo.jobspec import DataSpec
from zoo.kit.testing.components import _fail


def check_metric(factory: Callable, num_classes: int = 4, *,
                 value_range: tuple[float, float] | None = (0.0, 1.0), scalar: bool = True):
    """Check a metric factory ``factory(num_classes)``; return the computed value.

    The loop feeds metrics softmax probabilities ``(N, C)`` and integer targets ``(N,)``.
    Checks: a torchmetrics-style object with ``update``/``compute``/``reset`` and ``to``;
    for scalar metrics a finite number inside ``value_range`` (``None``: any); two updates
    equal one update of both batches (eval batches differ in size); ``reset`` forgets.
    """
    import torch  # lazy: torch (the pytest plugin imports the kit)

    fname = getattr(factory, "__name__", repr(factory))
    metric = factory(num_classes)
    if metric is None:
        _fail(f"metric {fname} returned None for {num_classes} classes (None means 'does not "
              "apply'); call check_metric with a num_classes it applies to")
    for attr in ("update", "compute", "reset", "to"):
        if not callable(getattr(metric, attr, None)):
            _fail(f"metric {fname}: has no {attr}(); return a torchmetrics.Metric")
    metric = metric.to("cpu")
    gen = torch.Generator().manual_seed(0)

    def batch(n):
        probs = torch.softmax(torch.randn(n, num_classes, generator=gen), dim=1)
        return probs, torch.randint(0, num_classes, (n,), generator=gen)

    a, b = batch(13), batch(7)

    def value(m):
        out = m.compute()
        if not scalar:
            return out
        if isinstance(out, torch.Tensor):
            if out.numel() != 1:
                _fail(f"metric {fname} is scalar but compute() gave shape {tuple(out.shape)}; "
                      "register it with scalar=False or reduce it")
            out = out.item()
        if not isinstance(out, (int, float)) or not math.isfinite(out):
            _fail(f"metric {fname}: compute() gave {out!r}, not a finite number")
        if value_range is not None and not value_range[0] <= out <= value_range[1]:
            _fail(f"metric {fname}: value {out} outside {value_range}")
        return out

    metric.update(*a)
    metric.update(*b)
    both = value(metric)
    single = factory(num_classes).to("cpu")
    single.update(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]]))
    if scalar and not math.isclose(both, value(single), rel_tol=1e-4, abs_tol=1e-5):
        _fail(f"metric {fname}: two updates give {both} but one update of the same data "
              f"gives {value(single)}; accumulate sums/counts, not per-batch means")
    metric.reset()
    metric.update(*b)
    fresh = factory(num_classes).to("cpu")
    fresh.update(*b)
    after, expected = value(metric), value(fresh)
    if scalar and not math.isclose(after, expected, rel_tol=1e-4, abs_tol=1e-5):
        _fail(f"metric {fname}: after reset() it gives {after}, a fresh one {expected}; "
              "reset() must clear every state")
    return both


class _MarkTransform:
    def __init__(self):
        self.calls = 0

    def __call__(self, image):
        self.calls += 1
        return ("transformed", image)


def check_dataset(factory: Callable, name: str = "dataset", params: dict | None = None, *,
                  spec=None, seed: int = 0, samples: int = 3) -> dict:
    """Check a dataset factory ``factory(spec, split, transform, seed)``; return the splits.

    For ``train``/``val``/``test`` with ``transform=None``: a sized dataset with the same
    ``classes`` (at least 2 strings); items are ``(uint8 tensor (3, H, W), int label)`` with
    labels in range; ``targets`` (when present) match the items; ``sample_ids`` (when present)
    are unique and the splits disjoint; the same seed gives the same splits; a transform is
    applied to the image (and only to it).
    """
    spec = spec if spec is not None else DataSpec(name=name, params=dict(params or {}))
    fname = getattr(factory, "__name__", repr(factory))
    splits = {}
    for split in ("train", "val", "test"):
        ds = factory(spec=spec, split=split, transform=None, seed=seed)
        if not hasattr(ds, "__len__") or not hasattr(ds, "__getitem__"):
            _fail(f"dataset {name!r} ({fname}): split {split!r} must be a sized dataset "
                  "(__len__ and __getitem__)")
        splits[split] = ds
    if len(splits["train"]) == 0:
        _fail(f"dataset {name!r}: the train split is empty")
    classes = getattr(splits["train"], "classes", None)
    if not isinstance(classes, (list, tuple)) or len(classes) < 2 or not all(
            isinstance(c, str) for c in classes):
        _fail(f"dataset {name!r}: 'classes' must be a list of at least 2 class names, got "
              f"{classes!r:.80}")
    ids_by_split = {}
    for split, ds in splits.items():
        if list(getattr(ds, "classes", [])) != list(classes):
            _fail(f"dataset {name!r}: split {split!r} has other classes than train; all "
                  "splits must share one list")
        n = len(ds)
        targets = getattr(ds, "targets", None)
        if targets is not None and len(targets) != n:
            _fail(f"dataset {name!r}: split {split!r} has {n} items but {len(targets)} targets")
        for i in sorted({0, n // 2, n - 1} if n else set())[:max(1, samples)]:
            _check_item(name, split, ds, i, classes, targets)
        ids = getattr(ds, "sample_ids", None)
        if ids is not None:
            if len(ids) != n or len(set(ids)) != n:
                _fail(f"dataset {name!r}: sample_ids of {split!r} must be unique, one per item")
            ids_by_split[split] = set(ids)
    if len(ids_by_split) == 3:
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            common = ids_by_split[a] & ids_by_split[b]
            if common:
                _fail(f"dataset {name!r}: splits {a!r} and {b!r} share items "
                      f"(e.g. {sorted(common)[0]!r})")
    again = factory(spec=spec, split="train", transform=None, seed=seed)
    key = "sample_ids" if hasattr(again, "sample_ids") else "targets"
    if hasattr(again, key) and list(getattr(again, key)) != list(getattr(splits["train"], key)):
        _fail(f"dataset {name!r}: the same seed gave a different train split; split "
              "deterministically from `seed`")
    mark = _MarkTransform()
    transformed = factory(spec=spec, split="train", transform=mark, seed=seed)
    image, label = transformed[0]
    if mark.calls != 1 or not (isinstance(image, tuple) and image[0] == "transformed"):
        _fail(f"dataset {name!r}: the transform must be applied once to each image "
              "(return (transform(image), label))")
    if label != splits["train"][0][1]:
        _fail(f"dataset {name!r}: the transform changed the label")
    return splits


def _check_item(name: str, split: str, ds, i: int, classes, targets) -> None:
    """Item ``i`` of a split is ``(uint8 (3, H, W) image, int label in range)``, as its
    ``targets`` say."""
    import torch  # lazy: torch (the pytest plugin imports the kit)

    item = ds[i]
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        _fail(f"dataset {name!r}: items must be (image, label) pairs")
    image, label = item
    if (not isinstance(image, torch.Tensor) or image.dtype != torch.uint8
            or image.dim() != 3 or image.shape[0] != 3):
        _fail(f"dataset {name!r}: with transform=None an image must be a uint8 tensor "
              f"(3, H, W), got {getattr(image, 'dtype', type(image).__name__)} "
              f"{tuple(getattr(image, 'shape', ()))}")
    if isinstance(label, torch.Tensor) and label.numel() == 1:
        label = label.item()
    if isinstance(label, bool) or not isinstance(label, int) or \
            not 0 <= label < len(classes):
        _fail(f"dataset {name!r}: label {label!r} of {split}[{i}] is not an int in "
              f"[0, {len(classes)})")
    if targets is not None and int(targets[i]) != label:
        _fail(f"dataset {name!r}: {split}.targets[{i}] is {targets[i]} but the item's "
              f"label is {label}")
