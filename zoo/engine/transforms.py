"""Image transforms built from the backbone's pretrained config and ``data.augment``.

Datasets hand over ``uint8`` CHW tensors (float32 for array files, :mod:`zoo.engine.arrays`);
these pipelines (torchvision.transforms.v2) match the run's channel count, resize, optionally
augment, scale to float and normalise with the config's mean/std (the source weights', or the
training split's own for other channel counts: :mod:`zoo.engine.channels`).  ``strong``
augmentation's colour operations need RGB: with other channel counts it crops and flips.
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

    from zoo.engine.channels import MatchChannels  # lazy: imports torch on call only

    interp = _interpolation(cfg.interpolation)
    channels = getattr(cfg, "channels", 3)
    steps: list = [MatchChannels(channels)]  # grayscale ↔ RGB, or a one-line error
    if train and augment == "light":
        steps += [v2.RandomResizedCrop(image_size, scale=(0.7, 1.0), interpolation=interp,
                                       antialias=True),
                  v2.RandomHorizontalFlip()]
    elif train and augment == "strong" and channels != 3:  # colour ops need RGB
        steps += [v2.RandomResizedCrop(image_size, scale=(0.35, 1.0), interpolation=interp,
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
