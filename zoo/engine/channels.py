"""Any number of input channels: the run's channel count, the data's own per-channel mean and
std, and a pretrained 3-channel stem adapted to it.

* **Channels** — ``data.channels``, or (null) the first training image's own count: 3 for
  ordinary images, C for a ``.npy``/``.tif`` folder of C-band arrays.  Every image passes
  :class:`MatchChannels` first (RGB → grayscale for a 1-channel run, grayscale repeated for
  a 3-channel one; any other mismatch is a one-line error).
* **Normalisation** — the source weights' mean/std fit 8-bit RGB only: with another channel
  count, or array data (float or 16-bit values), each channel is normalised by the mean and
  std of the *training split* (:func:`channel_stats`).  Both are written into the backbone's
  ``pretrained_cfg`` (with ``channels``), which ``model.safetensors`` records, so ``zoo
  eval/predict/export`` preprocess exactly as the run did.
* **Stem** — :func:`adapt_stem` finds the first convolution (timm's ``first_conv``, else the
  first 3-channel ``nn.Conv2d``: torchvision, open_clip, plugins) and converts its
  pretrained weights with timm's ``adapt_input_conv``: 1 channel sums the RGB filters,
  C channels repeat them cyclically and rescale by 3/C (``data.stem_init: mean``: every
  channel the mean RGB filter × 3/C).  A model whose stem cannot be found
  or whose forward then fails is a one-line :class:`~zoo.errors.ConfigError`.
"""
from __future__ import annotations

from dataclasses import replace

from zoo.errors import ConfigError, DataError

STATS_MAX_IMAGES = 1000  # the per-channel statistics read at most this many training images
_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, PIL's "L"


class MatchChannels:
    """An image tensor ``(c, H, W)`` → ``(channels, H, W)``; picklable (DataLoader workers)."""

    def __init__(self, channels: int):
        self.channels = int(channels)

    def __call__(self, image):
        c = int(image.shape[0])
        if c == self.channels:
            return image
        if self.channels == 1 and c == 3:
            w = image.new_tensor(_GRAY, dtype=image.float().dtype).view(3, 1, 1)
            gray = (image.float() * w).sum(0, keepdim=True)
            return gray.round().to(image.dtype) if not image.is_floating_point() else gray
        if c == 1:
            return image.expand(self.channels, *image.shape[1:]).contiguous()
        raise DataError(f"an image has {c} channels but this run takes {self.channels} "
                        "(data.channels) — set data.channels to the data's channel count")

    def __repr__(self) -> str:
        return f"MatchChannels({self.channels})"


def sample_channels(split) -> tuple[int, bool]:
    """``(channels, is_array)`` of the first image of a raw (untransformed) split."""
    if getattr(split, "streaming", False) or not hasattr(split, "__getitem__"):
        return 3, False  # a stream has no first item to look at: RGB images (docs/data.md)
    if len(split) == 0:
        return 3, False
    image = split[0][0]
    shape = getattr(image, "shape", None)
    if shape is None or len(shape) != 3 or not hasattr(image, "is_floating_point"):
        return 3, False  # not a CHW tensor: the dataset's own business (the transforms say)
    return int(shape[0]), bool(image.is_floating_point())


def channel_stats(split, channels: int) -> tuple[tuple, tuple]:
    """Per-channel ``(mean, std)`` of a raw split's images as the model sees them (after
    :class:`MatchChannels` and scaling to float), over at most :data:`STATS_MAX_IMAGES`
    evenly spaced images."""
    import torch  # lazy: torch

    n = len(split)
    if n == 0:
        raise DataError("the training split is empty: no per-channel statistics to compute")
    step = max(1, n // STATS_MAX_IMAGES)
    match = MatchChannels(channels)
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    count = 0
    for i in range(0, n, step):
        image = match(split[i][0])
        x = (image.double() / 255.0 if not image.is_floating_point() else image.double())
        x = x.reshape(channels, -1)
        total += x.sum(1)
        squares += (x * x).sum(1)
        count += x.shape[1]
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(0).sqrt()
    std = torch.where(std > 1e-6, std, torch.ones_like(std))  # a constant channel: unscaled
    return (tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std))


def _stem(body):
    """``(name, conv)`` of ``body``'s input convolution, or ``(None, None)``."""
    from torch import nn  # lazy: torch

    first = (getattr(body, "pretrained_cfg", None) or {}).get("first_conv")
    names = [first] if isinstance(first, str) else []
    if isinstance(first, (list, tuple)):
        names = [f for f in first if isinstance(f, str)]
    for name in names:
        try:
            module = body.get_submodule(name)
        except AttributeError:
            continue
        if isinstance(module, nn.Conv2d):
            return name, module
    for name, module in body.named_modules():
        if isinstance(module, nn.Conv2d):
            return (name, module) if module.in_channels == 3 and module.groups == 1 \
                else (None, None)
    return None, None


def adapt_stem(backbone, channels: int, size: int | None = None, check: bool = True,
               init: str = "repeat") -> str:
    """Give ``backbone``'s 3-channel stem ``channels`` inputs; returns the stem's name.

    ``init`` ``repeat``: timm's ``adapt_input_conv`` (1 channel: the RGB filters summed; C: the
    RGB filters repeated cyclically, × 3/C); ``mean``: every channel gets the mean RGB filter
    × 3/C (bands that are not colours).  ``check`` runs one zero image through the body."""
    import torch  # lazy: torch
    from timm.models import adapt_input_conv  # lazy: timm

    what = f"{backbone.provider}:{backbone.name}"
    name, conv = _stem(backbone.body)
    if conv is None or conv.in_channels != 3 or conv.groups != 1:
        raise ConfigError(f"cannot find the 3-channel input conv of {what}, so it cannot "
                          f"take {channels}-channel data — pick a timm or torchvision CNN/ViT, "
                          "or set data.channels: 3")
    with torch.no_grad():
        rgb = conv.weight.detach()
        if init == "mean":
            weight = rgb.mean(1, keepdim=True).repeat(1, channels, 1, 1) * (3.0 / channels)
        else:
            weight = adapt_input_conv(channels, rgb)
    conv.weight = torch.nn.Parameter(weight, requires_grad=conv.weight.requires_grad)
    conv.in_channels = channels
    if check:
        side = int(size or backbone.pretrained_cfg.input_size)
        training = backbone.training
        try:
            backbone.eval()
            with torch.no_grad():
                backbone(torch.zeros(1, channels, side, side))
        except Exception as exc:  # noqa: BLE001 - any failure means: not adaptable
            first = (str(exc).strip().splitlines() or [""])[0][:120]
            raise ConfigError(f"{what} does not run on {channels}-channel input after its "
                              f"stem '{name}' was adapted ({type(exc).__name__}: {first}) — "
                              "set data.channels: 3 or pick another model") from None
        finally:
            backbone.train(training)
    return name


def configure(built, raw, job, warnings: list) -> int:
    """Decide the run's channels from ``job.data.channels`` or the data; adapt the stem and
    normalise by the training split's own statistics when they are not 3-channel 8-bit
    images.  Writes ``channels``/``mean``/``std`` into the backbone's ``pretrained_cfg``."""
    backbone = built.model.backbone
    found, is_array = sample_channels(raw.train)
    channels = int(job.data.channels or found)
    cfg = backbone.pretrained_cfg
    if channels == 3 and not is_array:
        return 3  # ordinary RGB: the source weights' own preprocessing
    if channels != getattr(cfg, "channels", 3):
        init = getattr(job.data, "stem_init", "repeat")
        stem = adapt_stem(backbone, channels, built.image_size, init=init)
        how = "timm adapt_input_conv" if init == "repeat" else "mean RGB filter"
        warnings.append(f"{channels}-channel input: {backbone.provider}:{backbone.name}'s "
                        f"stem '{stem}' adapted from 3 channels ({how})")
    mean, std = channel_stats(raw.train, channels)
    backbone.pretrained_cfg = replace(cfg, channels=channels, mean=mean, std=std)
    return channels
