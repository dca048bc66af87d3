"""When the folder dataset keeps decoded images in memory (``data.cache_images: null``).

Measured (docs/benchmarks.md, "Decoded-image cache"): on a fine-tune of 2,100 JPEGs of
320×240 the cache bought no time (decoding runs beside the model's step and is a few per
cent of it) but cost ~0.5 GB of peak memory, and a frozen-backbone job decodes each image
once anyway (its features are cached).  The cache pays where images are small: a step on
a 32–96-px image is so cheap that opening and decoding its file is a large share of it, and
such images cost little memory.  So the automatic cache is on only for small images
(at most :data:`MAX_PIXELS` on average) in small folders, and only while the decoded
images fit in a quarter of the memory actually available — the cgroup's limit included —
and at most :data:`MAX_BYTES`.
"""
from __future__ import annotations

import os
from pathlib import Path

MAX_IMAGES = 5000
MAX_BYTES = 1 << 30
MAX_PIXELS = 96 * 96          # average decoded image size under which caching pays
MEMORY_SHARE = 0.25           # of the available memory, at most


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def cgroup_memory_left(root: Path | str = "/sys/fs/cgroup") -> int | None:
    """Bytes this process's cgroup may still use (limit − usage), or None without a limit."""
    root = Path(root)
    for limit_name, usage_name in (("memory.max", "memory.current"),             # v2
                                   ("memory/memory.limit_in_bytes",              # v1
                                    "memory/memory.usage_in_bytes")):
        limit, usage = _read_int(root / limit_name), _read_int(root / usage_name)
        if limit is not None and limit < 1 << 60:  # v1 says "no limit" with a huge number
            return max(0, limit - (usage or 0))
    return None


def meminfo_available(path: Path | str = "/proc/meminfo") -> int | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_memory() -> int | None:
    """The lower of the machine's available memory and the cgroup's room, in bytes."""
    found = [m for m in (meminfo_available(), cgroup_memory_left()) if m is not None]
    if not found and hasattr(os, "sysconf"):
        try:
            found = [os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
        except (ValueError, OSError):
            pass
    return min(found) if found else None


def should_cache(sizes: list[tuple[int, int]], available: int | None = None) -> bool:
    """The automatic decision for images of these (width, height)s."""
    if not sizes or len(sizes) >= MAX_IMAGES:
        return False
    pixels = sum(w * h for w, h in sizes)
    if pixels / len(sizes) > MAX_PIXELS:
        return False
    available = available_memory() if available is None else available
    budget = MAX_BYTES if available is None else min(MAX_BYTES, available * MEMORY_SHARE)
    return 3 * pixels <= budget
