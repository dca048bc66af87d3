"""Decode image files into the one format every zoo dataset yields: uint8 RGB, (3, H, W).

Transforms downstream assume exactly three 8-bit channels, so every PIL mode is converted
here, once:

* grayscale (``1``, ``L``), ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` → ``convert("RGB")``;
* 16/32-bit integer (``I;16*``, ``I``) and float (``F``) grayscale are *scaled* to 0..255 —
  PIL's own ``convert`` clips them, which turns most 16-bit scans white;
* transparency (``RGBA``, ``LA``, ``PA``, palette or RGB with a transparent colour) is
  composited onto white, as image viewers show it, instead of exposing whatever colour
  the transparent pixels happen to store;
* the EXIF orientation is applied, so phone photos are upright.

:func:`probe` is the cheap check used when a folder is scanned: it reads headers (plus
PNG checksums and the JPEG end marker), not pixels.  :func:`decode` does the real work.
Both raise :class:`Unreadable` with a short reason that scans count in their warnings.
"""
from __future__ import annotations

import os

REASONS = ("empty", "not an image", "corrupt or truncated", "too large", "missing")


class Unreadable(Exception):
    """A file that cannot be used as an image; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _classify(exc: BaseException) -> Unreadable:
    from PIL import Image, UnidentifiedImageError  # lazy: PIL

    if isinstance(exc, Unreadable):
        return exc
    if isinstance(exc, Image.DecompressionBombError):
        return Unreadable("too large", str(exc))
    if isinstance(exc, UnidentifiedImageError):
        return Unreadable("not an image", str(exc))
    if isinstance(exc, FileNotFoundError):
        return Unreadable("missing", str(exc))
    # PIL raises OSError, SyntaxError, struct.error, ValueError, IndexError, ... on bad data
    return Unreadable("corrupt or truncated", f"{type(exc).__name__}: {exc}")


def _jpeg_ends_cleanly(path: str, size: int) -> bool:
    """True when the JPEG end-of-image marker is near the end of the file.

    A missing marker is the signature of a truncated download; the caller then decodes
    the file to decide (some cameras append data after the marker, and those are fine).
    """
    with open(path, "rb") as f:
        f.seek(max(0, size - 64))
        return b"\xff\xd9" in f.read()


def probe(path: str) -> tuple[int, int]:
    """Check ``path`` cheaply and return its (width, height); raise :class:`Unreadable`."""
    from PIL import Image  # lazy: PIL

    try:
        size = os.path.getsize(path)  # follows links: a broken link is "missing"
        if size == 0:
            raise Unreadable("empty")
        with Image.open(path) as im:
            width, height = im.size
            fmt = im.format
            if fmt == "PNG":
                im.verify()  # chunk checksums: catches most corrupt or cut PNGs
        if fmt == "JPEG" and not _jpeg_ends_cleanly(path, size):
            decode(path)
    except Exception as exc:  # noqa: BLE001 - every failure is a reason to skip the file
        raise _classify(exc) from exc
    if width < 1 or height < 1:
        raise Unreadable("corrupt or truncated", f"image size {width}x{height}")
    return width, height


def _scale_to_uint8(array, mode: str):
    import numpy as np  # lazy: numpy

    if mode.startswith("I;16"):
        return (array.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    if mode == "F":
        lo, hi = float(np.nanmin(array)), float(np.nanmax(array))
        scale = 255.0 if lo >= 0 and hi <= 1 else 1.0  # [0, 1] floats or already 0..255
        return np.clip(np.nan_to_num(array) * scale + 0.5, 0, 255).astype(np.uint8)
    # mode "I": 16-bit PNGs on older Pillow, or true 32-bit data
    hi = int(array.max()) if array.size else 0
    if hi <= 255:
        return np.clip(array, 0, 255).astype(np.uint8)
    if hi <= 65535:
        return (np.clip(array, 0, 65535).astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    lo = int(array.min())
    return ((array.astype(np.float64) - lo) * (255.0 / (hi - lo)) + 0.5).astype(np.uint8)


def to_rgb_array(img):
    """A PIL image of any mode → a (H, W, 3) uint8 numpy array (see the module docstring)."""
    import numpy as np  # lazy: numpy
    from PIL import Image  # lazy: PIL

    mode = img.mode
    if mode.startswith("I") or mode == "F":
        gray = _scale_to_uint8(np.asarray(img), mode)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("LA", "PA") or (mode in ("L", "RGB") and "transparency" in img.info):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8)


def to_tensor(img):
    """A PIL image of any mode → a (3, H, W) uint8 torch tensor.

    A view of the (H, W, 3) array, not a contiguous copy: torch's antialiased uint8 resize
    has a fast path for this channels-last layout (measured: crop + resize + normalise to
    224 px of a 320×240 image 3.8–5.3 ms instead of 6.3–8.1 ms with the copy), and the
    copy itself cost ~1 ms a sample (docs/benchmarks.md)."""
    import torch  # lazy: torch

    return torch.from_numpy(to_rgb_array(img)).permute(2, 0, 1)


def decode(path: str):
    """Decode ``path`` into a (3, H, W) uint8 tensor; raise :class:`Unreadable`."""
    from PIL import Image, ImageOps  # lazy: PIL

    try:  # no stat first: this runs for every sample of every epoch
        with Image.open(path) as im:
            im.load()  # decode now, inside the try: truncated data fails here
            upright = ImageOps.exif_transpose(im) or im
            return to_tensor(upright)
    except Exception as exc:  # noqa: BLE001 - see probe()
        if _is_empty(path):
            raise Unreadable("empty") from exc
        raise _classify(exc) from exc


def _is_empty(path: str) -> bool:
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False
