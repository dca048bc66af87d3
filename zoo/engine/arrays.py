"""Array image files: ``.npy`` (numpy) and ``.tif``/``.tiff`` (tifffile), any number of
channels — grayscale scans, RGB+NIR, 13-band multispectral tiles.

Decoded into a float32 tensor ``(C, H, W)``: 8-bit arrays scaled to 0..1 (as ordinary images
are after ``ToDtype(scale=True)``), every other dtype kept in its own units (the run
normalises each channel by the training split's own mean and std, :mod:`zoo.engine.channels`).
A 2-D array is one channel; a 3-D array is channels-first or channels-last: the axis that
equals ``channels`` when it is given, otherwise the smaller of the first and last axes
(an image is larger than its channel count; a tie reads channels-first, torch's order).
Used by the ``folder`` dataset and by ``zoo predict``; never unpickles (``allow_pickle=False``).
"""
from __future__ import annotations

import os

from zoo.errors import DataError

ARRAY_SUFFIXES = (".npy", ".tif", ".tiff")
MAX_CHANNELS = 64


def is_array_file(path) -> bool:
    return str(path).lower().endswith(ARRAY_SUFFIXES)


def _read(path: str, header_only: bool = False):
    import numpy as np  # lazy: numpy

    if str(path).lower().endswith(".npy"):
        return np.load(path, mmap_mode="r" if header_only else None, allow_pickle=False)
    try:
        import tifffile  # lazy: tifffile, only for .tif data
    except ImportError:
        raise DataError(f"{path} is a TIFF: reading it needs tifffile (pip install tifffile)"
                        ) from None
    if header_only:
        with tifffile.TiffFile(path) as tif:
            return np.empty(tif.series[0].shape, dtype=np.uint8)  # the shape is what counts
    return tifffile.imread(path)


def channel_axis(shape: tuple, channels: int | None = None) -> int | None:
    """The channel axis of an array of ``shape`` (None: 2-D, one channel)."""
    if len(shape) == 2:
        return None
    if len(shape) != 3:
        raise ValueError(f"shape {tuple(shape)}: expected (H, W), (C, H, W) or (H, W, C)")
    if channels is not None and shape[0] == channels:
        return 0
    if channels is not None and shape[-1] == channels:
        return 2
    return 0 if shape[0] <= shape[-1] else 2


def array_shape(path: str, channels: int | None = None) -> tuple[int, int, int]:
    """``(channels, height, width)`` from the file's header (no pixels read)."""
    shape = tuple(_read(path, header_only=True).shape)
    axis = channel_axis(shape, channels)
    if axis is None:
        return 1, shape[0], shape[1]
    c = shape[axis]
    h, w = [s for i, s in enumerate(shape) if i != axis]
    return c, h, w


def decode_array(path, channels: int | None = None):
    """``path`` (.npy/.tif) → float32 tensor ``(C, H, W)``; :class:`DataError` when unusable."""
    import numpy as np  # lazy: numpy
    import torch  # lazy: torch

    path = str(path)
    if not os.path.isfile(path):
        raise DataError(f"array file {path} does not exist")
    try:
        array = np.asarray(_read(path))
        axis = channel_axis(array.shape, channels)
    except DataError:
        raise
    except Exception as exc:  # numpy/tifffile raise many kinds on bad files
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise DataError(f"cannot read array image {path}: {type(exc).__name__}: {first}"
                        ) from None
    if axis is None:
        array = array[None]
    elif axis == 2:
        array = np.moveaxis(array, 2, 0)
    if array.shape[0] > MAX_CHANNELS or min(array.shape[1:]) < 1:
        raise DataError(f"array image {path} has shape {tuple(array.shape)} (C, H, W): at most "
                        f"{MAX_CHANNELS} channels and a non-empty image expected")
    if array.dtype == np.uint8:
        out = array.astype(np.float32) / 255.0
    elif array.dtype.kind in "biuf":
        out = np.nan_to_num(array.astype(np.float32))
    else:
        raise DataError(f"array image {path} has dtype {array.dtype}; expected numbers")
    return torch.from_numpy(np.ascontiguousarray(out))
