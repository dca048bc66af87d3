"""Walking an ImageFolder: which files are candidates, under which class and split folder.

The walk reads directory entries only (no file is opened), records every directory with
its modification time (:mod:`zoo_datasets.folder_store` reuses the listing while those
are unchanged), and produces the listing as plain JSON-able data::

    {"format", "version", "root": real root path, "layout": {split: folder name} or None,
     "dirs": [[rel_dir, st_mtime_ns], ...],            every directory read
     "groups": [{"origin": None | "train" | "val" | "test", "class": name,
                 "files": [[rel_dir, [file names]], ...]}, ...],
     "loose": [files outside the class folders], "class_dirs": [class folder names],
     "outside_links": number of links skipped because they lead outside the root}

Rules (the folder is untrusted input): hidden files and folders are skipped; symlinks are
followed only while they stay inside the root — a link leading out of it is skipped and
counted, a link to the root or above (a loop) and a link into another class's folder
(it would relabel that class's images) are skipped silently; each real folder is read once
per class, so a link loop ends.  Files are listed depth first in sorted order.
"""
from __future__ import annotations

import os

SPLIT_FOLDERS = {"train": ("train", "training"), "val": ("val", "valid", "validation"),
                 "test": ("test", "testing")}


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _is_ancestor(link: str, folder: str) -> bool:
    """True when ``link`` resolves to ``folder`` itself or a folder above it."""
    real, here = os.path.realpath(link), os.path.realpath(folder)
    return here == real or here.startswith(real.rstrip(os.sep) + os.sep)


def _entries(folder: str) -> tuple[list[str], list[str]]:
    """Sorted non-hidden (subfolders, files) of ``folder``, following symlinks."""
    dirs, files = [], []
    with os.scandir(folder) as it:
        for entry in it:
            if _hidden(entry.name):
                continue
            if entry.is_dir() and entry.is_symlink() and _is_ancestor(entry.path, folder):
                continue  # a link to this folder or above: not a class, a loop
            (dirs if entry.is_dir() else files).append(entry.name)
    return sorted(dirs), sorted(files)


def _layout(root: str) -> dict[str, str] | None:
    """``{"train": "train", ...}`` when ``root`` holds split folders, else None."""
    subdirs, _ = _entries(root)
    found: dict[str, str] = {}
    for name in subdirs:
        for split, aliases in SPLIT_FOLDERS.items():
            if name.lower() in aliases and split not in found:
                found[split] = name
    if "train" not in found or set(subdirs) != set(found.values()):
        return None
    return found if _entries(os.path.join(root, found["train"]))[0] else None


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


class _Walker:
    """One walk of one root: the directories read and the links skipped so far."""

    def __init__(self, root: str, follow_links: bool = False):
        self.root = root
        self.follow_links = follow_links  # the user's opt-in: links out of the root followed
        self.root_real = os.path.realpath(root)
        self.dirs: list[list] = []
        self.outside_links = 0

    def _leaves_root(self, real: str) -> bool:
        return not _inside(real, self.root_real)

    def _followed(self, real: str) -> bool:
        """A folder outside the root reached through a link the user opted to follow."""
        return (self.follow_links and self._leaves_root(real)
                and not _inside(self.root_real, real))

    def read_dir(self, path: str, rel: str) -> tuple[list[str], list[str]] | None:
        """(subfolders, files) of one directory, its mtime recorded; links checked."""
        try:
            mtime = os.stat(path).st_mtime_ns  # before reading: a later change moves it
            entries = list(os.scandir(path))
        except OSError:
            return None
        self.dirs.append([rel, mtime])
        subdirs, files = [], []
        for entry in entries:
            if _hidden(entry.name):
                continue
            if entry.is_symlink():
                target = os.path.realpath(entry.path)
                if self._leaves_root(target) and not self.follow_links:
                    if not _inside(self.root_real, target):  # a loop to above: silent
                        self.outside_links += 1
                    continue
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            (subdirs if is_dir else files).append(entry.name)
        return sorted(subdirs), sorted(files)

    def walk_class(self, path: str, rel: str) -> list[list]:
        """``[[rel_dir, [names]], ...]`` under one class folder, depth first, sorted."""
        class_real = os.path.realpath(path)
        if self._leaves_root(class_real) and not self.follow_links:
            if not _inside(self.root_real, class_real):
                self.outside_links += 1
            return []
        seen: set[str] = set()
        out: list[list] = []
        stack = [(path, rel)]
        while stack:
            here, here_rel = stack.pop()
            real = os.path.realpath(here)
            # a loop, a duplicate, or a link into another class's folder
            if real in seen or not (_inside(real, class_real) or self._followed(real)):
                continue
            seen.add(real)
            found = self.read_dir(here, here_rel)
            if found is None:
                continue
            subdirs, files = found
            if files:
                out.append([here_rel, files])
            stack += [(os.path.join(here, d), _join(here_rel, d)) for d in reversed(subdirs)]
        return out


def walk_listing(root: str, follow_links: bool = False) -> dict:
    """The listing of ``root`` (see the module docstring); ``follow_links``: links leading
    out of the root are followed too (the user's opt-in; such a listing is not stored)."""
    from .folder_store import FORMAT, VERSION  # lazy: the store imports zoo's io layer

    walker = _Walker(root, follow_links)
    layout = _layout(root)
    groups_at = [(split, d) for split, d in layout.items()] if layout else [(None, "")]
    groups, loose, class_dirs = [], [], set()
    top = walker.read_dir(root, "")
    if top is None:
        raise OSError(f"cannot read folder {root}")
    for origin, group_rel in groups_at:
        found = walker.read_dir(os.path.join(root, group_rel), group_rel) if group_rel \
            else top
        if found is None:
            continue
        subdirs, files = found
        loose += [_join(group_rel, f) for f in files]
        for name in subdirs:
            if _is_ancestor(os.path.join(root, group_rel, name), os.path.join(root, group_rel)):
                continue
            class_dirs.add(name)
            rel = _join(group_rel, name)
            groups.append({"origin": origin, "class": name,
                           "files": walker.walk_class(os.path.join(root, rel), rel)})
    return {"format": FORMAT, "version": VERSION, "root": walker.root_real, "layout": layout,
            "dirs": walker.dirs, "groups": groups, "loose": loose,
            "class_dirs": sorted(class_dirs), "outside_links": walker.outside_links}


def candidates(listing: dict) -> list[tuple[str | None, str, str]]:
    """``(origin, class, relative path)`` of every listed file, in walk order."""
    out = []
    for group in listing["groups"]:
        origin, name = group["origin"], group["class"]
        for rel_dir, files in group["files"]:
            prefix = f"{rel_dir}/" if rel_dir else ""
            out += [(origin, name, prefix + f) for f in files]
    return out


# -- the per-class walk of ``unlabeled`` (folder walks through walk_listing) -------------
def _walk(class_dir: str, root: str | None = None, external: list | None = None
          ) -> list[str]:
    """Every non-hidden file under ``class_dir``; each real folder visited once.

    A symlinked folder that leads back into the dataset outside this class (to the root,
    above it, or to another class's folder) is not followed: it would relabel that class's
    images as this one.  With ``external`` (a list), a link — folder or file — that leads
    outside ``root`` is not followed either, but appended to ``external``.
    """
    seen: set[str] = set()
    out: list[str] = []
    class_real = os.path.realpath(class_dir)
    root_real = os.path.realpath(root) if root else None
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a link back to a visited folder: a loop or a duplicate
            dirnames[:] = []
            continue
        if root_real and not _inside(real, class_real) and (
                _inside(real, root_real) or _inside(root_real, real)):
            dirnames[:] = []
            continue
        if external is not None and root_real and not _inside(real, root_real):
            external.append(dirpath)  # a linked folder leaving the data root
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if _hidden(name):
                continue
            if (external is not None and root_real and os.path.islink(path)
                    and not _inside(os.path.realpath(path), root_real)):
                external.append(path)  # a linked file leaving the data root
                continue
            out.append(path)
    return out
