"""Every file zoo reads must be a regular file: what a path is, without opening it.

Opening a FIFO blocks until someone writes to it and a device can be read forever, so zoo
asks ``stat`` first (which opens nothing) and refuses anything that is not a regular file
with a line that says what the path really is — not "does not exist" for a FIFO that does.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path


def not_regular(path: str | Path) -> str | None:
    """``None`` for a regular file (symlinks followed); otherwise what the path is:
    "does not exist", "a folder", "a FIFO (named pipe)", "a device", "a socket"."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # a parent that is a file: not there
        return "does not exist"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a folder"
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe), not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a regular file"
    return "is not a regular file"
