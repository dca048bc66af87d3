"""Image transforms built from the backbone's pretrained config and ``data.augment``.

Datasets hand over ``uint8`` CHW tensors; these pipelines (torchvision.transforms.v2) resize,
optionally augment, scale to float and normalise with the source weights' mean/std.
"""
from __future__ import annotations

from zoo.backbones import PretrainedConfig


def _interpolation(name: str):
    from torchvision.transforms import InterpolationMode  # lazy: torchvision

    return {"bicubic": InterpolationMode.BICUBIC, "nearest": InterpolationMode.NEAREST,
            "bilinear": InterpolationMode.BILINEAR}.get(name, InterpolationMode.BILINEAR)


def build_transform(cfg: PretrainedConfig, image_size: int, augment: str, train: bool):
    """The transform for one split: ``augment`` applies to the train split only."""
    import torch  # lazy: torch
    from torchvision.transforms import v2  # lazy: torchvision

    interp = _interpolation(cfg.interpolation)
    steps: list = []
    if train and augment == "light":
        steps += [v2.RandomResizedCrop(image_size, scale=(0.7, 1.0), interpolation=interp,
                                       antialias=True),
                  v2.RandomHorizontalFlip()]
    elif train and augment == "strong":
        steps += [v2.RandomResizedCrop(image_size, scale=(0.35, 1.0), interpolation=interp,
                                       antialias=True),
                  v2.RandomHorizontalFlip(),
                  v2.TrivialAugmentWide(interpolation=interp)]
    else:
        steps += [v2.Resize(image_size, interpolation=interp, antialias=True),
                  v2.CenterCrop(image_size)]
    steps += [v2.ToDtype(torch.float32, scale=True),
              v2.Normalize(mean=list(cfg.mean), std=list(cfg.std))]
    return v2.Compose(steps)
