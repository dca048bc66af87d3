"""Crash-safe file writes: write a temp file in the same folder, fsync, then rename.

A crash (or SIGKILL, or a full disk) mid-write leaves the previous version intact, because
``os.replace`` within one filesystem is atomic.  Every file zoo writes goes through here.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from zoo import faults
from zoo.errors import ZooError


def replace_file(path: str | Path, fill: Callable[[str], None], durable: bool = True) -> Path:
    """Create ``path`` by calling ``fill(temp_path)`` on a temp file beside it, then renaming.

    ``durable`` fsyncs the file before the rename and the folder after it (results,
    checkpoints: the rename itself survives a power cut); caches skip both.  On an
    ``OSError`` (a full disk, a read-only folder) the temp file is removed, the previous
    version is intact and a one-line :class:`ZooError` is raised.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        fill(tmp)
        faults.during_write(path)  # a crash here leaves only the temp file behind
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
        tmp = None
        if durable:
            fsync_dir(path.parent)
    except OSError as exc:
        _cleanup(tmp)
        raise ZooError(f"could not write {path}: {_why(exc)} — the previous version (if "
                       "any) is intact") from None
    except BaseException:
        _cleanup(tmp)
        raise
    return path


def fsync_dir(folder: str | Path) -> None:
    """Make the renames in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on folders; the rename is still atomic
    finally:
        os.close(fd)


def why(exc: OSError) -> str:
    """The cause of a failed write and its fix, in words (for callers' own messages)."""
    return _why(exc)


def _why(exc: OSError) -> str:
    """The cause of a failed write and its fix, in words."""
    if exc.errno == errno.ENOSPC or exc.errno == getattr(errno, "EDQUOT", -1):
        return f"the disk is full ({exc.strerror or 'no space left'}); free some space and retry"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (f"{exc.strerror or 'not writable'}; choose a writable place "
                "(--out, $ZOO_HOME) or fix the permissions")
    return f"{exc.strerror or exc}"


def write_bytes(path: str | Path, data: bytes, durable: bool = True) -> Path:
    return replace_file(path, lambda tmp: Path(tmp).write_bytes(data), durable)


def write_text(path: str | Path, text: str, durable: bool = True) -> Path:
    return write_bytes(path, text.encode("utf-8"), durable)


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def save_safetensors(path: str | Path, tensors: dict, metadata: dict | None = None) -> Path:
    """Write tensors as safetensors, atomically, without a second in-memory copy."""
    from safetensors.torch import save_file  # lazy: safetensors

    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v, default=_jsonable)
            for k, v in (metadata or {}).items()}

    def fill(tmp: str) -> None:
        try:
            save_file(clean, tmp, metadata=meta)
        except OSError:
            raise
        except Exception as exc:  # safetensors reports I/O errors (disk full) as its own
            raise OSError(errno.ENOSPC if "space" in str(exc).lower() else errno.EIO,
                          str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    return replace_file(path, fill)


def hard_link(source: str | Path, target: str | Path) -> bool:
    """Make ``target`` a hard link to ``source``, atomically replacing what was there
    (link to a temporary name, then rename); False where the filesystem has no hard links
    (some network filesystems) — the caller goes on without."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.link.tmp")
    try:
        if tmp.exists():
            tmp.unlink()
        os.link(source, tmp)
        os.replace(tmp, target)
        return True
    except OSError:
        _cleanup(str(tmp))
        return False


def _umask_mode() -> int:
    # mkstemp creates 0600 files; give results the usual rw-r--r-- (minus the umask)
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _cleanup(tmp: str | None) -> None:
    if tmp is None:
        return
    try:
        os.unlink(tmp)
    except OSError:
        pass


def _jsonable(obj: Any):
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)
