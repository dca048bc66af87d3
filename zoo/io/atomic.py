"""Crash-safe file writes: write a temp file in the same folder, fsync, then rename.

A crash (or SIGKILL, or a full disk) mid-write leaves the previous version intact, because
``os.replace`` within one filesystem is atomic.  Every file zoo writes goes through here.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from zoo.errors import ZooError


def replace_file(path: str | Path, fill: Callable[[str], None], durable: bool = True) -> Path:
    """Create ``path`` by calling ``fill(temp_path)`` on a temp file beside it, then renaming.

    ``durable`` fsyncs before the rename (results, checkpoints); caches skip it.  On an
    ``OSError`` (a full disk, say) the temp file is removed, the previous version is intact
    and a one-line :class:`ZooError` is raised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        fill(tmp)
        _fault_point("write", path)  # a crash here leaves only the temp file behind
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except OSError as exc:
        _cleanup(tmp)
        raise ZooError(f"could not write {path}: {exc.strerror or exc} — the previous "
                       "version (if any) is intact; free disk space and retry") from None
    except BaseException:
        _cleanup(tmp)
        raise
    return path


def write_bytes(path: str | Path, data: bytes, durable: bool = True) -> Path:
    return replace_file(path, lambda tmp: Path(tmp).write_bytes(data), durable)


def write_text(path: str | Path, text: str, durable: bool = True) -> Path:
    return write_bytes(path, text.encode("utf-8"), durable)


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def save_safetensors(path: str | Path, tensors: dict, metadata: dict | None = None) -> Path:
    """Write tensors as safetensors, atomically, without a second in-memory copy."""
    from safetensors.torch import save_file

    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v, default=_jsonable)
            for k, v in (metadata or {}).items()}
    return replace_file(path, lambda tmp: save_file(clean, tmp, metadata=meta))


def _umask_mode() -> int:
    # mkstemp creates 0600 files; give results the usual rw-r--r-- (minus the umask)
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _cleanup(tmp: str) -> None:
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


_WRITES: dict[str, int] = {}


def _fault_point(kind: str, path: Path) -> None:
    """Test-only fault injection, documented in docs/reliability.md.

    ``ZOO_FAULT=kill_during_write:NAME[:N]`` SIGKILLs the process during the N-th (default
    first) write of a file called NAME — after the temp file is written, before the
    rename — to prove the previous version survives.
    """
    fault = os.environ.get("ZOO_FAULT", "")
    if not fault.startswith("kill_during_write:"):
        return
    parts = fault.split(":")
    name, nth = parts[1], int(parts[2]) if len(parts) > 2 else 1
    if path.name != name:
        return
    _WRITES[name] = _WRITES.get(name, 0) + 1
    if _WRITES[name] == nth:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
