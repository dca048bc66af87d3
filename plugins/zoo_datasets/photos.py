"""``photos``: crops of six colour photos that ship with scikit-image, one class per photo.

A small real-image task that needs no download: astronaut, chelsea (a cat), coffee, rocket,
hubble_deep_field and immunohistochemistry from ``skimage.data``.  Each image is a random
square crop (35–60 % of the photo's short side, random position, mirrored half the time)
resized to ``size``; the crops depend only on ``data_seed``.  With ``shift:photos`` it gives
the photo → grayscale / blurred / JPEG pairs of docs/domain.md.

``data.params``: ``size`` (default 64), ``per_class`` (default 40), ``data_seed`` (0).
Needs the ``datasets`` extra (scikit-image).
"""
from __future__ import annotations

from zoo.errors import DataError, MissingDependencyError, did_you_mean

from .memo import memo

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
          "immunohistochemistry")
DEFAULTS = {"size": 64, "per_class": 40, "data_seed": 0}


def options(params: dict) -> tuple[int, int, int]:
    unknown = [k for k in params if k not in DEFAULTS]
    if unknown:
        raise DataError(f"unknown photos parameter '{unknown[0]}'"
                        f"{did_you_mean(str(unknown[0]), DEFAULTS)} "
                        f"(photos takes {', '.join(DEFAULTS)})")
    p = {**DEFAULTS, **params}
    for key, low, high in (("size", 8, 512), ("per_class", 1, 10000)):
        if isinstance(p[key], bool) or not isinstance(p[key], int) or not low <= p[key] <= high:
            raise DataError(f"photos '{key}' must be an integer from {low} to {high}, "
                            f"got {p[key]!r}")
    if isinstance(p["data_seed"], bool) or not isinstance(p["data_seed"], int):
        raise DataError(f"photos 'data_seed' must be an integer, got {p['data_seed']!r}")
    return p["size"], p["per_class"], p["data_seed"]


def generate(size: int, per_class: int, data_seed: int):
    """``(uint8 images (N, 3, size, size), labels)``: ``per_class`` crops of each photo."""
    try:
        from skimage import data  # lazy: scikit-image is an optional, heavy dependency
    except ImportError as exc:
        raise MissingDependencyError(
            "the 'photos' dataset needs scikit-image: pip install 'zoo[datasets]'") from exc
    import torch  # lazy: torch
    from torch.nn import functional as F  # lazy: torch

    gen = torch.Generator().manual_seed(data_seed)
    images, labels = [], []
    for label, name in enumerate(PHOTOS):
        photo = torch.from_numpy(getattr(data, name)()[..., :3].copy()).permute(2, 0, 1).float()
        h, w = photo.shape[1:]
        for _ in range(per_class):
            side = int(min(h, w) * (0.35 + 0.25 * float(torch.rand((), generator=gen))))
            y = int(torch.randint(0, h - side + 1, (), generator=gen))
            x = int(torch.randint(0, w - side + 1, (), generator=gen))
            crop = photo[:, y:y + side, x:x + side]
            if float(torch.rand((), generator=gen)) < 0.5:
                crop = crop.flip(2)
            crop = F.interpolate(crop[None], size=(size, size), mode="bilinear",
                                 antialias=True, align_corners=False)[0]
            images.append(crop.round().clamp(0, 255).to(torch.uint8))
            labels.append(label)
    return torch.stack(images), labels


def build(spec, split: str, transform, seed: int):
    from .base import split_in_memory  # lazy: imports torch

    size, per_class, data_seed = options(dict(spec.params or {}))
    images, labels = memo(("photos", size, per_class, data_seed),
                          lambda: generate(size, per_class, data_seed))
    return split_in_memory(name="photos", images=images, labels=labels,
                           sample_ids=[f"photos:{i}" for i in range(len(labels))],
                           classes=list(PHOTOS), spec=spec, split=split,
                           transform=transform, seed=seed)
