"""Keep glibc's heap from growing with training: a fixed mmap threshold for big blocks.

Measured (docs/benchmarks.md, "Peak memory against timm's train.py and fastai"): on CPU a
run's peak RSS grew by ~100 MB an epoch although the live tensors did not.  glibc serves
blocks above ``M_MMAP_THRESHOLD`` with their own ``mmap`` (given back to the system on
free), but it raises that threshold each time such a block is freed, up to 32 MiB: after
the first steps a batch's activations (a few MiB to ~25 MiB each) come from the heap
instead, whose freed holes are too scattered to be reused or returned, so the heap only
grows.  Setting the threshold once (``mallopt``) turns the raising off; big tensors stay
``mmap``-ed and the peak stays where the live tensors put it.  Results do not change
(allocation placement only).  The price is CPU time: an ``mmap``-ed block is fresh pages,
faulted in and zeroed at each step.  On the 224-px few-shot fine-tune (3 epochs, one
thread) peak RSS / CPU time were 2,328 MB / 54 s as glibc does it, 2,149 / 58 s with
16 MiB, 1,969 / 64 s with 8 MiB, 1,945 / 66 s with 4 MiB, 1,886 / 70 s with 1 MiB.  It is
opt-in (``ZOO_MALLOC_THRESHOLD=on``: 16 MiB, or a byte count): +7% CPU time for -8% peak
memory is the user's trade to make, and zoo's whole-process budget (<= 1.10x a plain loop)
has no room for it by default.

Left alone: other C libraries (macOS, musl), another allocator preloaded (jemalloc,
tcmalloc), or a user's own ``MALLOC_MMAP_THRESHOLD_`` / ``ZOO_MALLOC_THRESHOLD=off``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

from zoo import settings


M_MMAP_THRESHOLD = -3          # glibc's mallopt parameter number
DEFAULT_THRESHOLD = 16 << 20   # 16 MiB (``on``): the measured balance of memory and CPU time
_done: list[int] = []          # the threshold set in this process (once)


def wanted_threshold(setting: int | bool | None = None, environ: dict | None = None,
                     platform: str | None = None) -> int | None:
    """The threshold to set, or None to leave the allocator as it is; ``setting`` is
    ``ZOO_MALLOC_THRESHOLD`` as :func:`zoo.settings.malloc_threshold` reads it."""
    environ = os.environ if environ is None else environ
    if (platform or sys.platform) != "linux" or setting is None or setting is False:
        return None  # opt-in: unset leaves glibc as it is
    if "MALLOC_MMAP_THRESHOLD_" in environ:    # the user chose: glibc reads it itself
        return None
    if any(name in environ.get("LD_PRELOAD", "") for name in ("jemalloc", "tcmalloc",
                                                              "mimalloc")):
        return None
    return DEFAULT_THRESHOLD if setting is True else int(setting)


def _glibc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.gnu_get_libc_version  # glibc only: musl has mallopt as a stub
        return libc
    except (OSError, AttributeError):
        return None


def fix_mmap_threshold(setting: int | bool | None | str = "env",
                       environ: dict | None = None) -> int | None:
    """Set glibc's mmap threshold once per process; returns the threshold set, or None.
    ``setting``: a byte count, False (off), None (:data:`DEFAULT_THRESHOLD`), or "env":
    ``ZOO_MALLOC_THRESHOLD`` (a malformed value raises :class:`~zoo.settings.SettingsError`)."""
    if _done:
        return _done[0]
    if setting == "env":
        setting = settings.malloc_threshold()
    threshold = wanted_threshold(setting, environ)
    libc = _glibc() if threshold is not None else None
    if libc is None or not libc.mallopt(M_MMAP_THRESHOLD, threshold):
        return None
    _done.append(threshold)
    return threshold
