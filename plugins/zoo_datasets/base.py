"""The dataset objects every factory in this plugin returns.

One split of one dataset: it yields ``(image, label)`` where ``image`` is
``transform(uint8 tensor (3, H, W))`` (or the tensor itself when ``transform`` is None)
and carries the attributes the runner relies on:

``classes``     class names, the same list for the three splits;
``targets``     the label of each item, in order;
``sample_ids``  a stable id per item (a path relative to the folder, ``demo:17``, ...),
                written to ``splits.json`` so a run's split can be audited and reproduced;
``warnings``    what was skipped or could not be honoured (counted, one line each);
``split``       ``"train"``, ``"val"`` or ``"test"``;
``in_memory``   True when the pixels are already in memory (no file decoding per item):
                the runner then loads in the main process instead of starting workers.

Images handed to ``transform`` may be shared with a cache: transforms must not modify
their input in place (torchvision's transforms do not).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset

from zoo.engine.splits import few_shot, stratified_split


class ImageDataset(Dataset):
    """Base class: subclasses implement :meth:`load` (position → uint8 (3, H, W) tensor)."""

    in_memory = False

    def __init__(self, *, name: str, split: str, classes: Sequence[str],
                 targets: Sequence[int], sample_ids: Sequence[str],
                 transform: Callable | None = None, warnings: Sequence[str] = ()):
        if len(targets) != len(sample_ids):
            raise ValueError("targets and sample_ids must have the same length")
        self.name = name
        self.split = split
        self.classes = list(classes)
        self.targets = [int(t) for t in targets]
        self.sample_ids = list(sample_ids)
        self.transform = transform
        self.warnings = list(warnings)

    def load(self, index: int) -> torch.Tensor:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        image = self.load(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, split={self.split!r}, "
                f"{len(self)} images, {len(self.classes)} classes)")


class TensorImageDataset(ImageDataset):
    """A split of images held in memory as one (N, 3, H, W) uint8 tensor.

    ``positions`` picks this split's rows; the tensor itself is shared by the three splits.
    """

    in_memory = True

    def __init__(self, images: torch.Tensor, positions: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} "
                             f"{tuple(images.shape)}")
        self.images = images
        self.positions = list(positions)

    def load(self, index: int) -> torch.Tensor:
        return self.images[self.positions[index]]


def split_in_memory(*, name: str, images: torch.Tensor, labels: Sequence[int],
                    sample_ids: Sequence[str], classes: Sequence[str], spec, split: str,
                    transform: Callable | None, seed: int,
                    warnings: Sequence[str] = ()) -> TensorImageDataset:
    """One split of an in-memory dataset, by ``spec.val_split``/``test_split``/``max_per_class``."""
    parts, split_warnings = stratified_split(labels, spec.val_split, spec.test_split, seed,
                                             classes)
    positions = parts[split]
    if split == "train":
        positions = few_shot(positions, labels, spec.max_per_class, seed)
    return TensorImageDataset(
        images, positions, name=name, split=split, classes=classes,
        targets=[labels[p] for p in positions], sample_ids=[sample_ids[p] for p in positions],
        transform=transform, warnings=[*warnings, *split_warnings])
