"""Files as a folder dataset decodes them: images (PIL) and arrays (``.npy``, ``.tif``: any
number of channels), with the decoded size the cache policy weighs."""
from __future__ import annotations

from zoo.engine.arrays import array_shape, decode_array, is_array_file
from zoo.errors import DataError

from .images import Unreadable, decode, probe


def decoded_size(path: str) -> tuple[int, int]:
    """The file's decoded size as an RGB-equivalent ``(width, height)`` (what the cache
    policy weighs: a float32 C-channel array counts 4·C/3 times its pixels); raises
    :class:`Unreadable`."""
    if not is_array_file(path):
        return probe(path)
    try:
        c, h, w = array_shape(path)
    except Exception as exc:  # noqa: BLE001 - numpy/tifffile: every failure skips the file
        raise Unreadable("corrupt or truncated", f"{type(exc).__name__}: {exc}") from exc
    if min(c, h, w) < 1:
        raise Unreadable("empty")
    return w, -(-4 * c * h // 3)


def decode_file(path: str, channels: int | None = None):
    """An image file → uint8 ``(3, H, W)``; an array file → float32 ``(C, H, W)``."""
    if not is_array_file(path):
        return decode(path)
    try:
        return decode_array(path, channels)
    except DataError as exc:
        raise Unreadable("corrupt or truncated", str(exc)) from exc
