"""``photos``: crops of photos that ship with scikit-image, one class per photo.

A small real-image task that needs no download.  By default six colour photos from
``skimage.data``: astronaut, chelsea (a cat), coffee, rocket, hubble_deep_field and
immunohistochemistry.  Each image is a random square crop (by default 35–60 % of the photo's
short side, random position, mirrored half the time) resized to ``size``; the crops depend
only on ``data_seed`` (and the parameters).  With ``shift:photos`` it gives the photo →
grayscale / blurred / JPEG pairs of docs/domain.md.

``data.params``: ``size`` (default 64), ``per_class`` (default 40), ``data_seed`` (0),
``images`` (photo names and/or named sets, a list or a comma string; default the six above),
``crop`` (``[low, high]`` fraction of the short side, default ``[0.35, 0.6]``: smaller crops
show less of each photo, a harder task) and ``gray`` (false; true: every crop in grayscale,
three identical channels).  Grayscale photos (camera, brick, ...) always give three identical
channels.  Named sets: ``colour`` (8 colour photos), ``gray`` (7 grayscale photos),
``textures`` (brick, grass, gravel) and ``all`` (the 18 of them) — every photo here loads
from scikit-image's own files, offline.  Needs the ``datasets`` extra (scikit-image).
"""
from __future__ import annotations

from zoo.errors import DataError, MissingDependencyError, did_you_mean

from .memo import memo

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
          "immunohistochemistry")
# every photo of skimage.data that ships inside the wheel (no pooch download): synthetic
# images (checkerboard, blobs, logo, phantom), duplicates (cat = chelsea) and tiny ones
# (microaneurysms, 102 px) are left out
SETS = {
    "colour": (*PHOTOS, "retina", "motorcycle"),
    "gray": ("camera", "cell", "clock", "coins", "moon", "page", "text"),
    "textures": ("brick", "grass", "gravel"),
}
SETS["all"] = SETS["colour"] + SETS["gray"] + SETS["textures"]
LOADERS = {"motorcycle": lambda data: data.stereo_motorcycle()[0]}  # the left view
DEFAULTS = {"size": 64, "per_class": 40, "data_seed": 0, "images": PHOTOS,
            "crop": (0.35, 0.60), "gray": False}


def _images(value) -> tuple[str, ...]:
    """``images`` → photo names, named sets expanded, in the order given."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise DataError(f"photos 'images' must be a list or comma string of names, got {value!r}")
    names: list[str] = []
    for item in (i.strip() for i in items):
        if item not in SETS and item not in SETS["all"]:
            raise DataError(f"photos 'images': unknown photo '{item}'"
                            f"{did_you_mean(item, [*SETS, *SETS['all']])} (one of "
                            f"{', '.join(SETS['all'])}, or a set: {', '.join(SETS)})")
        names.extend(SETS.get(item, (item,)))
    if len(names) < 2 or len(set(names)) != len(names):
        raise DataError(f"photos 'images' must name at least 2 different photos, each once, "
                        f"got {', '.join(names) or 'none'}")
    return tuple(names)


def _crop(value) -> tuple[float, float]:
    ok = (isinstance(value, (list, tuple)) and len(value) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))
    if not ok or not 0 < value[0] <= value[1] <= 1:
        raise DataError(f"photos 'crop' must be [low, high] fractions of the short side with "
                        f"0 < low <= high <= 1, e.g. [0.2, 0.4]; got {value!r}")
    return float(value[0]), float(value[1])


def options(params: dict) -> tuple:
    """The checked parameters: ``(size, per_class, data_seed, images, crop, gray)``."""
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
    if not isinstance(p["gray"], bool):
        raise DataError(f"photos 'gray' must be true or false, got {p['gray']!r}")
    return (p["size"], p["per_class"], p["data_seed"], _images(p["images"]), _crop(p["crop"]),
            p["gray"])


def _photo(data, name: str):
    """One photo as a float (3, H, W) tensor: grayscale photos repeated, alpha dropped."""
    import torch  # lazy: torch

    array = LOADERS.get(name, lambda d: getattr(d, name)())(data)
    if array.ndim == 2:
        array = array[..., None].repeat(3, axis=2)
    return torch.from_numpy(array[..., :3].copy()).permute(2, 0, 1).float()


def generate(size: int, per_class: int, data_seed: int, images=PHOTOS,
             crop=(0.35, 0.60), gray: bool = False):
    """``(uint8 images (N, 3, size, size), labels)``: ``per_class`` crops of each photo."""
    try:
        from skimage import data  # lazy: scikit-image is an optional, heavy dependency
    except ImportError as exc:
        raise MissingDependencyError(
            "the 'photos' dataset needs scikit-image: pip install 'zoo[datasets]'") from exc
    import torch  # lazy: torch
    from torch.nn import functional as F  # lazy: torch

    luminance = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)  # ITU-R 601, as shift's
    low, high = crop
    gen = torch.Generator().manual_seed(data_seed)
    out, labels = [], []
    for label, name in enumerate(images):
        photo = _photo(data, name)
        h, w = photo.shape[1:]
        for _ in range(per_class):
            side = max(1, int(min(h, w) * (low + (high - low) * float(
                torch.rand((), generator=gen)))))
            y = int(torch.randint(0, h - side + 1, (), generator=gen))
            x = int(torch.randint(0, w - side + 1, (), generator=gen))
            piece = photo[:, y:y + side, x:x + side]
            if float(torch.rand((), generator=gen)) < 0.5:
                piece = piece.flip(2)
            piece = F.interpolate(piece[None], size=(size, size), mode="bilinear",
                                  antialias=True, align_corners=False)[0]
            if gray:
                piece = (piece * luminance).sum(0, keepdim=True).expand(3, -1, -1)
            out.append(piece.round().clamp(0, 255).to(torch.uint8))
            labels.append(label)
    return torch.stack(out), labels


def build(spec, split: str, transform, seed: int):
    from .base import split_in_memory  # lazy: imports torch

    size, per_class, data_seed, images, crop, gray = options(dict(spec.params or {}))
    key = ("photos", size, per_class, data_seed, images, crop, gray)
    pixels, labels = memo(key, lambda: generate(size, per_class, data_seed, images, crop, gray))
    return split_in_memory(name="photos", images=pixels, labels=labels,
                           sample_ids=[f"photos:{i}" for i in range(len(labels))],
                           classes=list(images), spec=spec, split=split,
                           transform=transform, seed=seed)
