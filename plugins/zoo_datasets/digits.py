"""``digits``: scikit-learn's handwritten digits (1,797 images, 10 classes), no download.

The 8×8 images (values 0..16) ship inside scikit-learn.  They are upscaled bilinearly to
``data.params.size`` (default 32) and repeated to three channels, so backbones and
transforms see an ordinary small RGB image.  Needs the ``datasets`` extra.
"""
from __future__ import annotations

from zoo.errors import DataError, MissingDependencyError
from .memo import memo

DEFAULT_SIZE = 32


def _load(size: int):
    try:
        from sklearn.datasets import load_digits  # lazy: optional dependency (sklearn)
    except ImportError as exc:
        raise MissingDependencyError(
            "the 'digits' dataset needs scikit-learn: pip install 'zoo[datasets]'") from exc
    import torch  # lazy: torch
    import torch.nn.functional as F  # lazy: torch

    digits = load_digits()
    small = torch.from_numpy(digits.images).float()[:, None] * (255.0 / 16.0)
    big = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    images = big.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    return images, [int(t) for t in digits.target]


def build(spec, split: str, transform, seed: int):
    from .base import split_in_memory  # lazy: imports torch

    params = dict(spec.params or {})
    size = params.pop("size", DEFAULT_SIZE)
    if params:
        raise DataError(f"unknown digits parameter '{next(iter(params))}' (digits takes size)")
    if not isinstance(size, int) or not 8 <= size <= 512:
        raise DataError(f"digits 'size' must be an integer from 8 to 512, got {size!r}")
    images, labels = memo(("digits", size), lambda: _load(size))
    return split_in_memory(name="digits", images=images, labels=labels,
                           sample_ids=[f"digits:{i}" for i in range(len(labels))],
                           classes=[str(d) for d in range(10)], spec=spec, split=split,
                           transform=transform, seed=seed)
