"""``demo``: a procedurally generated shapes-and-textures set that needs no files.

Eight classes — circle, ring, square, triangle, cross, horizontal stripes, vertical stripes,
checkerboard — drawn at a small native size (32×32 by default), 250 images per class.
Each image gets a random background and foreground colour (with a minimum contrast), a
random position, size, aspect ratio and rotation (limited for the classes whose name
depends on orientation), a soft lighting gradient and pixel noise.  Textures fill a disk-
or square-shaped patch, so the outline alone does not tell a striped square from a solid
one.  Drawn at 2× and averaged down, so edges are anti-aliased.

The images depend only on the data parameters and ``data_seed`` (fixed, 0 by default):
the same job gives the same pixels, and the job's ``seed`` only chooses the split.

``data.params``: ``size`` (pixels, default 32), ``classes`` (a count, or a list of the
names above), ``per_class`` (default 250), ``data_seed`` (default 0).
"""
from __future__ import annotations

import math

from zoo.errors import DataError, did_you_mean
from .memo import memo

CLASSES = ("circle", "ring", "square", "triangle", "cross",
           "horizontal stripes", "vertical stripes", "checkerboard")
DEFAULTS = {"size": 32, "classes": len(CLASSES), "per_class": 300, "data_seed": 0}

# Rotation range per class (radians, symmetric): orientation defines the stripe classes,
# a cross turned 45° is an "x", everything else may turn freely.
_ROTATION = {"cross": math.pi / 6, "horizontal stripes": math.pi / 9,
             "vertical stripes": math.pi / 9}
_CHUNK = 128  # images drawn at once: bounds memory at large sizes


def options(params: dict) -> tuple[int, tuple[str, ...], int, int]:
    """Validate ``data.params`` → (size, class names, per_class, data_seed)."""
    unknown = [k for k in params if k not in DEFAULTS]
    if unknown:
        raise DataError(f"unknown demo parameter '{unknown[0]}'"
                        f"{did_you_mean(str(unknown[0]), DEFAULTS)} "
                        f"(demo takes {', '.join(DEFAULTS)})")
    p = {**DEFAULTS, **params}
    size, per_class, data_seed = p["size"], p["per_class"], p["data_seed"]
    if not isinstance(size, int) or not 8 <= size <= 512:
        raise DataError(f"demo 'size' must be an integer from 8 to 512, got {size!r}")
    if not isinstance(per_class, int) or per_class < 1:
        raise DataError(f"demo 'per_class' must be a positive integer, got {per_class!r}")
    if not isinstance(data_seed, int):
        raise DataError(f"demo 'data_seed' must be an integer, got {data_seed!r}")
    chosen = p["classes"]
    if isinstance(chosen, int) and not isinstance(chosen, bool):
        if not 2 <= chosen <= len(CLASSES):
            raise DataError(f"demo 'classes' must be from 2 to {len(CLASSES)}, got {chosen}")
        names = CLASSES[:chosen]
    elif isinstance(chosen, (list, tuple)) and all(isinstance(c, str) for c in chosen):
        for c in chosen:
            if c not in CLASSES:
                raise DataError(f"unknown demo class '{c}'{did_you_mean(c, CLASSES)} "
                                f"(choose from {', '.join(CLASSES)})")
        names = tuple(dict.fromkeys(chosen))
        if len(names) < 2:
            raise DataError("demo 'classes' needs at least 2 classes")
    else:
        raise DataError(f"demo 'classes' must be a count or a list of names, got {chosen!r}")
    return size, names, per_class, data_seed


def _mask(name: str, xr, yr, rng, n: int, pixels_per_unit):
    """Foreground mask (n, R, R) of class ``name`` in the shape's own coordinates."""
    import numpy as np  # lazy: numpy

    def u(lo, hi):
        return rng.uniform(lo, hi, size=(n, 1, 1)).astype(np.float32)

    radius = np.sqrt(xr * xr + yr * yr)
    if name == "circle":
        return radius <= 1.0
    if name == "ring":
        return (radius <= 1.0) & (radius >= u(0.45, 0.7))
    if name == "square":
        return np.maximum(np.abs(xr), np.abs(yr)) <= 0.85
    if name == "triangle":
        x, y = xr * 0.87, yr * 0.87  # scaled so its area is close to the others'
        return (y >= -0.5) & (math.sqrt(3) * x + y <= 1) & (-math.sqrt(3) * x + y <= 1)
    if name == "cross":
        t = u(0.22, 0.36)
        ax, ay = np.abs(xr), np.abs(yr)
        return ((ax <= t) & (ay <= 1)) | ((ay <= t) & (ax <= 1))
    # textures: a disk or square patch filled with a pattern
    square_patch = u(0, 1) < 0.5
    patch = np.where(square_patch, np.maximum(np.abs(xr), np.abs(yr)) <= 0.85, radius <= 1.0)
    # period in shape units, at least ~3 output pixels so the pattern stays resolvable
    period = np.maximum(u(0.45, 0.75), 3.2 / pixels_per_unit)
    phase = u(0, 2 * math.pi)
    if name == "horizontal stripes":
        pattern = np.sin(2 * math.pi * yr / period + phase) > 0
    elif name == "vertical stripes":
        pattern = np.sin(2 * math.pi * xr / period + phase) > 0
    else:  # checkerboard
        pattern = np.sin(2 * math.pi * xr / period + phase) * np.sin(2 * math.pi * yr / period) > 0
    return patch & pattern


def _colours(n: int, rng):
    """Background and foreground colours (n, 3, 1, 1) whose brightness differs clearly.

    Any hue goes, but the foreground is at least 0.3 brighter or darker than the background:
    the class is in the shape, and colour is a nuisance the model must learn to ignore.
    """
    import numpy as np  # lazy: numpy

    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)[None, :, None, None]

    def coloured(target):
        hue = rng.uniform(0.05, 1, size=(n, 3, 1, 1)).astype(np.float32)
        brightness = (hue * weights).sum(axis=1, keepdims=True)
        return np.clip(hue * target / brightness, 0, 1)

    bg_level = rng.uniform(0.05, 0.95, size=(n, 1, 1, 1)).astype(np.float32)
    dark = rng.uniform(0, 1, size=(n, 1, 1, 1)) < np.clip(bg_level, 0.3, 0.7)
    fg_level = np.where(dark, rng.uniform(0, np.maximum(bg_level - 0.3, 0.02)),
                        rng.uniform(np.minimum(bg_level + 0.3, 0.98), 1.0)).astype(np.float32)
    return coloured(bg_level), coloured(fg_level)


def _draw(name: str, n: int, size: int, rng):
    """``n`` images of class ``name`` as a (n, 3, size, size) uint8 array."""
    import numpy as np  # lazy: numpy

    ss = 2 if size <= 64 else 1  # supersampling for anti-aliased edges
    res = size * ss
    grid = (np.arange(res, dtype=np.float32) + 0.5) / res * 2 - 1  # pixel centres in [-1, 1]
    v, u = np.meshgrid(grid, grid, indexing="ij")

    def draw(lo, hi, shape=(n, 1, 1)):
        return rng.uniform(lo, hi, size=shape).astype(np.float32)

    cx, cy = draw(-0.3, 0.3), draw(-0.3, 0.3)
    scale = draw(0.45, 0.75)
    aspect = np.exp(draw(-0.1, 0.1))
    limit = _ROTATION.get(name, math.pi)
    theta = draw(-limit, limit)
    x, y = u - cx, v - cy
    cos, sin = np.cos(theta), np.sin(theta)
    xr = (x * cos + y * sin) / (scale * aspect)
    yr = (-x * sin + y * cos) / (scale / aspect)
    mask = _mask(name, xr, yr, rng, n, scale * size / 2)
    mask = mask.astype(np.float32)[:, None]  # (n, 1, R, R)

    background, foreground = _colours(n, rng)
    image = background * (1 - mask) + foreground * mask
    lighting = draw(-0.15, 0.15) * u + draw(-0.15, 0.15) * v  # soft gradient across the image
    image = image + lighting[:, None]
    if ss > 1:
        image = image.reshape(n, 3, size, ss, size, ss).mean(axis=(3, 5))
    noise = draw(0.02, 0.10, (n, 1, 1, 1)) * rng.standard_normal((n, 3, size, size),
                                                                 dtype=np.float32)
    return (np.clip(image + noise, 0, 1) * 255 + 0.5).astype(np.uint8)


def generate(size: int, names: tuple[str, ...], per_class: int, data_seed: int):
    """All images, class by class: ((N, 3, size, size) uint8 tensor, labels)."""
    import numpy as np  # lazy: numpy
    import torch  # lazy: torch

    blocks, labels = [], []
    for label, name in enumerate(names):
        # one stream per (data_seed, class): choosing fewer classes keeps the others' images
        rng = np.random.default_rng([data_seed & 0xFFFFFFFF, CLASSES.index(name), 0xDE70])
        for start in range(0, per_class, _CHUNK):
            n = min(_CHUNK, per_class - start)
            blocks.append(_draw(name, n, size, rng))
        labels += [label] * per_class
    return torch.from_numpy(np.concatenate(blocks)), labels


def build(spec, split: str, transform, seed: int):
    from .base import split_in_memory  # lazy: imports torch

    size, names, per_class, data_seed = options(dict(spec.params or {}))
    images, labels = memo(("demo", size, names, per_class, data_seed),
                          lambda: generate(size, names, per_class, data_seed))
    return split_in_memory(name="demo", images=images, labels=labels,
                           sample_ids=[f"demo:{i}" for i in range(len(labels))],
                           classes=list(names), spec=spec, split=split,
                           transform=transform, seed=seed)
