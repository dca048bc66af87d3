"""Every value that sizes memory or work is bounded where it is read, and what it would
allocate is estimated before it is allocated.

:func:`bounded_int` refuses a count outside its range with one line naming the flag or key
and the range (``--seeds 1000000000`` is refused, not handed to a list comprehension that
the kernel kills).  :func:`check_memory` compares an estimate in bytes with the memory this
machine has available now (``MemAvailable`` of ``/proc/meminfo``, or the physical memory
where that is not readable) and refuses what cannot fit, naming the value to lower: a LoRA
rank of 10⁸ is refused at plan time instead of allocating 57 GB after a minute.
"""
from __future__ import annotations

import os

from zoo.errors import ConfigError

#: the share of the available memory one allocation zoo plans may take
MEMORY_SHARE = 0.8


def bounded_int(value, name: str, low: int, high: int, why: str = "") -> int:
    """``value`` as an int in ``[low, high]``, else a :class:`ConfigError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{name} must be from {low} to {high}, got {value}"
                          + (f" — {why}" if why else ""))
    return value


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation now, or None when unknown."""
    try:
        with open("/proc/meminfo", "rb") as fh:  # a regular file of the kernel's
            for line in fh.read(1 << 16).decode("ascii", "replace").splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"


def check_memory(nbytes: float, what: str, fix: str, available: int | None = None) -> None:
    """Refuse ``what`` (needing about ``nbytes``) when it cannot fit in the memory available
    now; ``fix`` says which value to lower."""
    available = available_memory() if available is None else available
    if available is not None and nbytes > MEMORY_SHARE * available:
        raise ConfigError(f"{what} would need about {human_bytes(nbytes)} of memory; this "
                          f"machine has {human_bytes(available)} available — {fix}")
