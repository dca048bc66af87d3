"""The folder listing kept on disk: a big folder is walked once, not on every run and rank.

Walking ImageNet's 1.28 M files takes tens of seconds warm and minutes cold; a second run
(or another rank of a distributed run) on an unchanged folder should not pay it again.
The listing — every directory walked with its modification time, and the file names in
it — is stored under ``$ZOO_HOME/cache/folders/<sha256 of the real root path>.idx``.

Freshness: adding, removing or renaming a file or folder changes the modification time of
the folder holding it, so the stored listing is reused only when every directory it
recorded still has the recorded ``st_mtime_ns``.  A listing taken while a folder could
still change within the clock's granularity (modified in the last second before the walk)
is not stored: "racily clean", as git calls it.  What a file *contains* is not part of the
listing: a file rewritten in place is caught when it is decoded (lazy verification,
:mod:`zoo_datasets.folder`).

The stored file is untrusted input: it is opened without following links and used only
when it is a regular file whose SHA-256 matches its header, whose fields have the
expected types, and whose paths stay under the root (no absolute paths, no ``..``, no
separators in file names).  Anything else is treated as absent and the folder is walked
again (and the file rewritten).

Sharing between ranks and processes: a reader that finds a fresh listing uses it without
locking; otherwise it takes ``<name>.lock`` (POSIX ``flock``), looks again (another rank
may have written it meanwhile) and walks only if it still has to.  So one process walks,
writes atomically (:mod:`zoo.io.atomic`), and the others read its file.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from zoo.io.atomic import write_bytes
from zoo.weights.formats import zoo_home

FORMAT = "zoo-folder-listing"
VERSION = 1
RACY_NS = 1_000_000_000   # a folder modified this close to the walk may change unseen
ORIGINS = (None, "train", "val", "test")


def store_dir() -> Path:
    return zoo_home() / "cache" / "folders"


def listing_path(root: str) -> Path:
    key = hashlib.sha256(os.path.realpath(root).encode("utf-8", "surrogateescape"))
    return store_dir() / f"{key.hexdigest()[:32]}.idx"


# -- reading and checking ---------------------------------------------------------------------
def _read_regular(path: Path) -> bytes | None:
    """The bytes of ``path`` if it is a regular file (not a link, fifo or device), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    except OSError:
        return None
    finally:
        os.close(fd)


def _safe_rel(path: str) -> bool:
    """A relative, "/"-separated path that stays under the root ("" is the root itself)."""
    if not isinstance(path, str) or "\x00" in path or path.startswith("/") or "\\" in path:
        return False
    return ".." not in path.split("/") if path else True


def _valid(payload, root_real: str) -> bool:
    """Every field of a stored listing has the type and bounds the walk would give it."""
    try:
        if payload["format"] != FORMAT or payload["version"] != VERSION:
            return False
        if payload["root"] != root_real:
            return False
        dirs, groups, layout = payload["dirs"], payload["groups"], payload["layout"]
        if layout is not None and not all(
                split in ORIGINS[1:] and _safe_name(name) for split, name in layout.items()):
            return False
        if not all(_safe_rel(d) and isinstance(m, int) for d, m in dirs):
            return False
        for group in groups:
            if group["origin"] not in ORIGINS or not _safe_name(group["class"]):
                return False
            for rel_dir, names in group["files"]:
                if not _safe_rel(rel_dir) or not _safe_names(names):
                    return False
        return (all(_safe_rel(p) for p in payload["loose"])
                and all(_safe_name(c) for c in payload["class_dirs"])
                and isinstance(payload["outside_links"], int))
    except (KeyError, TypeError, ValueError, AttributeError):
        return False


def _safe_name(name) -> bool:
    return (isinstance(name, str) and bool(name) and name not in (".", "..")
            and "/" not in name and "\\" not in name and "\x00" not in name)


def _safe_names(names) -> bool:
    """:func:`_safe_name` for a whole folder's names at once (1 M files: no Python loop
    per name): joined with NUL, no name may hold a separator, a NUL, or be "", ".", ".."."""
    if not isinstance(names, list):
        return False
    joined = "\x00".join(names)  # TypeError for a non-string: caught by the caller
    if "/" in joined or "\\" in joined or joined.count("\x00") != len(names) - 1:
        return False
    padded = f"\x00{joined}\x00"
    return not any(f"\x00{bad}\x00" in padded for bad in ("", ".", ".."))


def _fresh(payload, root: str) -> bool:
    """True when every recorded directory still has its recorded modification time."""
    for rel_dir, mtime in payload["dirs"]:
        try:
            if os.stat(os.path.join(root, rel_dir) if rel_dir else root).st_mtime_ns != mtime:
                return False
        except OSError:
            return False
    return True


def read(root: str) -> dict | None:
    """The stored listing of ``root`` if it is intact and still current, else None."""
    data = _read_regular(listing_path(root))
    if not data:
        return None
    header, _, body = data.partition(b"\n")
    try:
        head = json.loads(header)
        if head.get("sha256") != hashlib.sha256(body).hexdigest():
            return None
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None
    if not isinstance(payload, dict) or not _valid(payload, os.path.realpath(root)):
        return None
    return payload if _fresh(payload, root) else None


# -- writing ---------------------------------------------------------------------------------
def _racy(payload, started_ns: int) -> bool:
    return any(started_ns - mtime < RACY_NS for _, mtime in payload["dirs"])


def write(root: str, payload: dict) -> Path:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8",
                                                                                "surrogateescape")
    head = json.dumps({"format": FORMAT, "sha256": hashlib.sha256(body).hexdigest()})
    return write_bytes(listing_path(root), head.encode() + b"\n" + body, durable=False)


@contextmanager
def _locked(path: Path):
    """An exclusive ``flock`` on ``path`` (a no-op where locking is unavailable)."""
    try:
        import fcntl  # lazy: POSIX only
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def cached_listing(root: str, walk: Callable[[str], dict]) -> tuple[dict, str]:
    """``walk(root)``'s listing, from the store when current: ``(listing, how)`` with
    ``how`` one of ``"reused"``, ``"walked"`` (and stored), ``"walked (not stored: ...)"``."""
    found = read(root)
    if found is not None:
        return found, "reused"
    path = listing_path(root)
    try:
        lock = _locked(path.with_suffix(".lock"))
        lock.__enter__()
    except OSError:  # an unwritable $ZOO_HOME: walk every time, as before
        return walk(root), "walked (not stored: $ZOO_HOME is not writable)"
    try:
        found = read(root)  # another rank may have written it while we waited
        if found is not None:
            return found, "reused"
        started = time.time_ns()
        payload = walk(root)
        if _racy(payload, started):
            return payload, "walked (not stored: the folder changed in the last second)"
        try:
            write(root, payload)
        except Exception:  # noqa: BLE001 - a cache that cannot be written is only slower
            return payload, "walked (not stored: could not write $ZOO_HOME)"
        return payload, "walked"
    finally:
        lock.__exit__(None, None, None)
