"""``shift:NAME``: any dataset with a controlled domain shift (a target domain, offline).

``--data shift:digits --set data.params.transform=invert --set data.params.severity=3``
gives scikit-learn's digits, every image inverted at severity 3; the labels, classes and
splits are those of ``digits`` (so ``digits`` → ``shift:digits`` is a source → target
pair with the same label space).  ``NAME`` is any registered dataset, prefix ones included
(``shift:torchvision:MNIST``); the parameters below are the wrapper's, every other
``data.params`` key goes to the wrapped dataset.

``transform`` (one name, or several joined by ``+``, applied left to right) and
``severity`` (1 mild … 5 strong; default 3), in the spirit of ImageNet-C (Hendrycks &
Dietterich 2019), on the uint8 (3, H, W) image before the model's own transform:

=============  ==============================================================================
invert         blend towards the negative: ``(1−a)·x + a·(255−x)``, a = 0.2·severity
               (5: fully inverted; 3: low-contrast and half-inverted)
rotate         rotate by ±15°·severity (sign drawn per image), corners filled with the
               border colour
noise          additive Gaussian pixel noise, σ = 8, 16, 28, 44, 64 (of 255)
grayscale      blend towards luminance (ITU-R 601), a = 0.2·severity (5: fully grey)
blur           Gaussian blur, σ = 0.4, 0.8, 1.2, 1.8, 2.6 px per 32 px of image side
jpeg           JPEG re-encoding at quality 30, 18, 12, 8, 5
color          hue rotated by 0.1·severity of the colour wheel, saturation × (1 + 0.2·severity)
background     pixels near the border colour (the background of digits, demo shapes and
               ``tiny``) blended towards a smooth random colour texture, a = 0.2·severity
=============  ==============================================================================

Random choices (the rotation sign, the noise, the texture) are drawn from a generator
seeded by ``(shift_seed, sample id)``: an image is shifted the same way in every split,
epoch and process.  ``shift_seed`` (default 0) draws another, equally strong, shift.
The shift is systematic (the same hue turn, the same inversion for all images), which is
what makes it a domain rather than augmentation.  Needs torchvision (``zoo[datasets]``
is not needed unless the wrapped dataset needs it).
"""
from __future__ import annotations

import dataclasses
import io
import math
import zlib

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from torchvision.transforms.v2 import functional as TF

from zoo.catalog import get_catalog
from zoo.errors import DataError, did_you_mean

from . import demo, digits, folder, photos, tv
from .base import ImageDataset

TRANSFORMS = ("invert", "rotate", "noise", "grayscale", "blur", "jpeg", "color", "background")
SEVERITIES = (1, 2, 3, 4, 5)
OWN_PARAMS = ("transform", "severity", "shift_seed")
NOISE_SIGMA = (8.0, 16.0, 28.0, 44.0, 64.0)
BLUR_SIGMA = (0.4, 0.8, 1.2, 1.8, 2.6)          # px per 32 px of image side
JPEG_QUALITY = (30, 18, 12, 8, 5)
CACHE_BYTES = 512 * 2**20                        # shifted images kept in memory, at most


def options(params: dict) -> tuple[list[str], int, int, dict]:
    """``data.params`` → (transform names, severity, shift_seed, the wrapped dataset's params)."""
    params = dict(params or {})
    raw = params.pop("transform", None)
    severity = params.pop("severity", 3)
    shift_seed = params.pop("shift_seed", 0)
    if raw is None or raw == "":
        raise DataError("a shift: dataset needs data.params.transform — one of "
                        f"{', '.join(TRANSFORMS)} (e.g. --set data.params.transform=invert)")
    names = [t.strip() for t in (raw if isinstance(raw, (list, tuple)) else str(raw).split("+"))]
    for name in names:
        if name not in TRANSFORMS:
            raise DataError(f"unknown shift transform '{name}'{did_you_mean(name, TRANSFORMS)} "
                            f"(choose from {', '.join(TRANSFORMS)}; join several with '+')")
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise DataError(f"shift 'severity' must be an integer from 1 to 5, got {severity!r}")
    if isinstance(shift_seed, bool) or not isinstance(shift_seed, int):
        raise DataError(f"shift 'shift_seed' must be an integer, got {shift_seed!r}")
    return names, int(severity), shift_seed, params


def inner_name(spec_name: str) -> str:
    prefix, sep, rest = spec_name.partition(":")
    if prefix != "shift" or not sep or not rest.strip():
        raise DataError(f"dataset '{spec_name}': write shift:NAME, e.g. shift:digits or "
                        "shift:demo (NAME is the dataset to shift)")
    if rest.startswith("shift:"):
        raise DataError(f"dataset '{spec_name}': shift the dataset once, with several "
                        "transforms joined by '+' (data.params.transform=rotate+noise)")
    return rest.strip()


def _inner_factory(name: str):
    """The wrapped dataset's factory: this plugin's own directly, others via the catalog."""
    own = {"demo": demo.build, "digits": digits.build, "folder": folder.build,
           "photos": photos.build}
    if name in own:
        return own[name]
    if name.startswith("torchvision:"):
        return tv.build
    return get_catalog().get("datasets", name).obj


def shift_image(image, names: list[str], severity: int, generator):
    """Apply ``names`` at ``severity`` to one uint8 (3, H, W) tensor (random draws from
    ``generator``); returns a new uint8 tensor of the same shape."""
    x = image
    for name in names:
        x = _APPLY[name](x, severity, generator)
        x = x.clamp(0, 255).round().to(torch.uint8) if x.dtype != torch.uint8 else x
    return x.contiguous()


def _blend(x, y, a: float):
    return (1.0 - a) * x.float() + a * y.float()


def _invert(x, s, g):
    return _blend(x, 255.0 - x.float(), 0.2 * s)


def _border_colour(x):
    border = torch.cat([x[:, 0, :], x[:, -1, :], x[:, :, 0], x[:, :, -1]], dim=1).float()
    return border.median(dim=1).values


def _rotate(x, s, g):
    sign = 1.0 if torch.rand((), generator=g) < 0.5 else -1.0
    fill = [float(v) for v in _border_colour(x)]
    return TF.rotate(x, 15.0 * s * sign, interpolation=TF.InterpolationMode.BILINEAR, fill=fill)


def _noise(x, s, g):
    return x.float() + torch.randn(x.shape, generator=g) * NOISE_SIGMA[s - 1]


def _luminance(x):
    w = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    return (x.float() * w).sum(0, keepdim=True).expand_as(x)


def _grayscale(x, s, g):
    return _blend(x, _luminance(x), 0.2 * s)


def _blur(x, s, g):
    sigma = BLUR_SIGMA[s - 1] * min(x.shape[1:]) / 32.0
    k = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(x.float()[None], [k, k], [sigma, sigma])[0]


def _jpeg(x, s, g):
    buffer = io.BytesIO()  # in memory: a JPEG round trip through Pillow, no file
    Image.fromarray(x.permute(1, 2, 0).numpy()).save(buffer, "JPEG", quality=JPEG_QUALITY[s - 1])
    buffer.seek(0)
    with Image.open(buffer) as im:
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)


def _color(x, s, g):
    turned = TF.adjust_hue(x, 0.1 * s if s < 5 else -0.5)  # 5: half-way round the wheel
    return TF.adjust_saturation(turned, 1.0 + 0.2 * s)


def _background(x, s, g):
    h, w = x.shape[1:]
    bg = _border_colour(x).view(3, 1, 1)
    near = (x.float() - bg).abs().amax(dim=0, keepdim=True) < 40.0
    coarse = torch.rand((1, 3, 4, 4), generator=g) * 255.0
    texture = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0]
    out = x.float()
    return torch.where(near, _blend(out, texture, 0.2 * s), out)


_APPLY = {"invert": _invert, "rotate": _rotate, "noise": _noise, "grayscale": _grayscale,
          "blur": _blur, "jpeg": _jpeg, "color": _color, "background": _background}


class ShiftedDataset(ImageDataset):
    """One split of a dataset with every image shifted; labels and ids unchanged."""

    def __init__(self, inner, names: list[str], severity: int, shift_seed: int, *,
                 name: str, transform=None):
        ids = list(getattr(inner, "sample_ids", None) or
                   [f"{name}:{i}" for i in range(len(inner))])
        super().__init__(name=name, split=getattr(inner, "split", "train"),
                         classes=inner.classes, targets=inner.targets, sample_ids=ids,
                         transform=transform, warnings=getattr(inner, "warnings", []) or [])
        self.inner = inner
        self.names, self.severity, self.shift_seed = names, severity, shift_seed
        self.in_memory = bool(getattr(inner, "in_memory", False))
        self._cache: dict[int, object] = {}
        self._cached_bytes = 0

    def load(self, index: int):
        hit = self._cache.get(index)
        if hit is not None:
            return hit
        image, _ = self.inner[index]
        # seeded by the sample id, not the position: the same image shifts the same way
        # whichever split it lands in
        seed = zlib.crc32(f"{self.shift_seed}|{self.sample_ids[index]}".encode())
        out = shift_image(image, self.names, self.severity, torch.Generator().manual_seed(seed))
        size = out.numel()
        if self._cached_bytes + size <= CACHE_BYTES:
            self._cache[index] = out
            self._cached_bytes += size
        return out


def build(spec, split: str, transform, seed: int) -> ShiftedDataset:
    inner = inner_name(spec.name)
    names, severity, shift_seed, rest = options(spec.params)
    inner_spec = dataclasses.replace(spec, name=inner, params=rest)
    base = _inner_factory(inner)(spec=inner_spec, split=split, transform=None, seed=seed)
    return ShiftedDataset(base, names, severity, shift_seed, name=spec.name, transform=transform)
