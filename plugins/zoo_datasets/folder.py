"""``folder``: images on disk, one subfolder per class (torchvision's ImageFolder layout).

Image files are decoded to uint8 RGB (:mod:`.images`); ``.npy`` and ``.tif``/``.tiff``
files are arrays of any number of channels, channels-first or -last, decoded to float32
``(C, H, W)`` (:mod:`zoo.engine.arrays`; ``data.channels`` picks the channel axis when it
is ambiguous).  The run then adapts the model's stem and normalises each channel by the
training split's statistics (:mod:`zoo.engine.channels`).

Two layouts are understood at ``data.path``::

    PATH/cat/1.jpg, PATH/dog/2.png, ...           split by val_split/test_split and the seed
    PATH/train/cat/..., PATH/val/..., PATH/test/...   splits used as given

In the second layout ``train/`` is required (``training/`` also works); a missing ``val/``
(``valid/``, ``validation/``) or ``test/`` (``testing/``) is carved from train, stratified,
by its fraction.  It is recognised only when *every* subfolder of PATH is a split name, so
a class that happens to be called "train" does not switch layouts.

Scanning happens once per folder (see :mod:`zoo_datasets.memo`) and decides the split, so
it must know which files are usable: every file's header is read (PNG checksums and the
JPEG end marker too; an array's shape), and files that fail — empty, not an image, corrupt or truncated,
over PIL's decompression-bomb limit, broken links — are skipped and counted in
``warnings``.  Hidden files and folders are skipped silently; symlinks inside the data root
are followed, each real folder once per class, so a link loop ends.  A link that leads
*outside* the data root (a class folder linked to ``/etc``) is skipped and counted in
``warnings``, unless the user opts in with ``data.params.follow_links: true``.

With ``data.cache_images`` true — or left null for a folder under 5,000 images whose
decoded size fits in 1 GiB — every image is decoded during the scan into uint8 tensors at
native size.  That is also the exact readability check, and because it happens in the
main process, DataLoader workers share the decoded images instead of each filling a cache
of its own.  Without the cache, a file that passes the scan but fails to decode later
raises :class:`~zoo.errors.DataError` naming it.
"""
from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from zoo.errors import DataError

from .base import ImageDataset
from .images import Unreadable, decode, probe
from zoo.engine.arrays import array_shape, decode_array, is_array_file
from zoo.engine.splits import few_shot, stratified_split
from .memo import memo

SPLIT_FOLDERS = {"train": ("train", "training"), "val": ("val", "valid", "validation"),
                 "test": ("test", "testing")}
CACHE_MAX_IMAGES = 5000
CACHE_MAX_BYTES = 1 << 30
_SHOWN = 3  # file names quoted in a warning


@dataclass
class FolderIndex:
    """What a scan found: usable files (relative paths), their labels and their origin."""

    root: str
    classes: list[str]
    files: list[str]                # relative to root, "/"-separated: the sample ids
    labels: list[int]
    origins: list[str | None]       # "train"/"val"/"test" in the split layout, else None
    warnings: list[str]
    images: list | None = None      # decoded uint8 tensors, aligned with files


# -- walking --------------------------------------------------------------------------------
def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


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


def _is_ancestor(link: str, folder: str) -> bool:
    """True when ``link`` resolves to ``folder`` itself or a folder above it."""
    real, here = os.path.realpath(link), os.path.realpath(folder)
    return here == real or here.startswith(real.rstrip(os.sep) + os.sep)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


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


def signature(root: str) -> tuple:
    """Modification times of the root, split and class folders: adding or removing a file
    in a class folder changes one of them, so the folder is scanned again instead of served
    stale (changes deeper down need :func:`zoo_datasets.memo.clear`)."""
    stamps = [(root, os.stat(root).st_mtime_ns)]
    layout = _layout(root)
    groups = [os.path.join(root, d) for d in layout.values()] if layout else [root]
    for group in groups:
        stamps.append((group, os.stat(group).st_mtime_ns))
        for name in _entries(group)[0]:
            path = os.path.join(group, name)
            stamps.append((path, os.stat(path).st_mtime_ns))
    return tuple(stamps)


# -- files: images (PIL) and arrays (.npy, .tif: any number of channels) ---------------------
def _decoded_bytes(path: str) -> int:
    """The file's decoded size in bytes (uint8 RGB, or float32 C-channel arrays); raises
    :class:`Unreadable`."""
    if not is_array_file(path):
        width, height = probe(path)
        return 3 * width * height
    try:
        c, h, w = array_shape(path)
    except Exception as exc:  # noqa: BLE001 - numpy/tifffile: every failure skips the file
        raise Unreadable("corrupt or truncated", f"{type(exc).__name__}: {exc}") from exc
    if min(c, h, w) < 1:
        raise Unreadable("empty")
    return 4 * c * h * w


def _decode(path: str, channels: int | None = None):
    """An image file → uint8 ``(3, H, W)``; an array file → float32 ``(C, H, W)``."""
    if not is_array_file(path):
        return decode(path)
    try:
        return decode_array(path, channels)
    except DataError as exc:
        raise Unreadable("corrupt or truncated", str(exc)) from exc


# -- scanning -------------------------------------------------------------------------------
def _map(function, items: list) -> list:
    """``[function(x) for x in items]`` on a few threads (PIL releases the GIL on I/O and
    decoding); an :class:`Unreadable` is returned in place of its result, not raised."""
    def safe(item):
        try:
            return function(item)
        except Unreadable as exc:
            return exc

    if len(items) < 64:
        return [safe(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(safe, items, chunksize=16))


def _listing(items: list[str]) -> str:
    return ", ".join(items[:_SHOWN]) + (", ..." if len(items) > _SHOWN else "")


def _find(root: str, layout: dict | None, external: list | None = None):
    """Candidate files as (origin, class, absolute path), plus loose files and class names;
    links leaving ``root`` are skipped into ``external`` (None: followed)."""
    groups = [(split, os.path.join(root, d)) for split, d in layout.items()] if layout \
        else [(None, root)]
    candidates: list[tuple[str | None, str, str]] = []
    loose: list[str] = []
    class_names: set[str] = set()
    for origin, group in groups:
        class_dirs, files = _entries(group)
        loose += [os.path.relpath(os.path.join(group, f), root) for f in files]
        class_names.update(class_dirs)
        for name in class_dirs:
            candidates += [(origin, name, p)
                           for p in _walk(os.path.join(group, name), root, external)]
    return candidates, loose, sorted(class_names)


def _check(candidates: list, cache_images: bool | None, channels: int | None = None):
    """Probe every candidate, then decode them all if caching: (usable, images, skipped)."""
    usable, sizes, failed = [], [], []
    for candidate, result in zip(candidates, _map(_decoded_bytes, [c[2] for c in candidates])):
        if isinstance(result, Unreadable):
            failed.append((candidate[2], result.reason))
        else:
            usable.append(candidate)
            sizes.append(result)
    if cache_images is None:
        cache_images = len(usable) < CACHE_MAX_IMAGES and sum(sizes) <= CACHE_MAX_BYTES
    if not cache_images:
        return usable, None, failed
    decoded = _map(lambda path: _decode(path, channels), [c[2] for c in usable])
    keep = [not isinstance(d, Unreadable) for d in decoded]
    failed += [(c[2], d.reason) for c, d, k in zip(usable, decoded, keep) if not k]
    return ([c for c, k in zip(usable, keep) if k], [d for d, k in zip(decoded, keep) if k],
            failed)


def scan(root: str, cache_images: bool | None, follow_links: bool = False,
         channels: int | None = None) -> FolderIndex:
    """Find, check (and maybe decode) every image under ``root``; raise DataError if unusable."""
    layout = _layout(root)
    external: list | None = None if follow_links else []
    candidates, loose, class_dirs = _find(root, layout, external)
    usable, images, failed = _check(candidates, cache_images, channels)

    def rel(path: str) -> str:
        return Path(os.path.relpath(path, root)).as_posix()

    classes = sorted({name for _, name, _ in usable})
    if not usable:
        what = "no class subfolders" if not class_dirs else "no readable images"
        raise DataError(f"no images found under {root} ({what}) — put the images in one "
                        f"subfolder per class, e.g. {os.path.join(root, 'cats', '1.jpg')}")
    if len(classes) < 2:
        raise DataError(f"{root} has only one class ('{classes[0]}'): classification needs "
                        f"at least 2 classes, one subfolder each")
    warnings = []
    if external:
        warnings.append(f"skipped {len(external)} link(s) leading outside the data folder "
                        f"{root}: {_listing([rel(p) for p in external])} — set "
                        "data.params.follow_links=true to follow them")
    if failed:
        reasons = Counter(reason for _, reason in failed)
        detail = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
        warnings.append(f"skipped {len(failed)} unreadable file(s) ({detail}): "
                        f"{_listing([rel(path) for path, _ in failed])}")
    if loose:
        warnings.append(f"ignored {len(loose)} file(s) outside the class folders: "
                        f"{_listing(loose)}")
    empty = [c for c in class_dirs if c not in classes]
    if empty:
        warnings.append(f"ignored {len(empty)} class folder(s) without readable images: "
                        f"{_listing(empty)}")
    for split, folder in (layout or {}).items():
        present = {name for origin, name, _ in usable if origin == split}
        missing = [c for c in classes if c not in present]
        if missing:
            warnings.append(f"{folder}/ has no images of {len(missing)} class(es): "
                            f"{_listing(missing)}")
    label_of = {c: i for i, c in enumerate(classes)}
    return FolderIndex(root=root, classes=classes, files=[rel(p) for _, _, p in usable],
                       labels=[label_of[name] for _, name, _ in usable],
                       origins=[origin for origin, _, _ in usable], warnings=warnings,
                       images=images)


# -- splitting ------------------------------------------------------------------------------
def split_positions(index: FolderIndex, val: float, test: float, seed: int
                    ) -> tuple[dict[str, list[int]], list[str]]:
    """Positions in ``index`` of each split: given folders kept, missing ones carved."""
    return split_by_origin(index.labels, index.origins, index.classes, val, test, seed)


def split_by_origin(labels: list[int], origins: list[str | None], classes: list[str],
                    val: float, test: float, seed: int
                    ) -> tuple[dict[str, list[int]], list[str]]:
    """Positions of each split: ``origins`` (train/val/test per item, or all None) kept,
    a missing val or test carved from train, stratified, by its fraction."""
    if all(o is None for o in origins):
        return stratified_split(labels, val, test, seed, classes)
    given = {s: [p for p, o in enumerate(origins) if o == s] for s in SPLIT_FOLDERS}
    # carve a missing val/ or test/ out of train/ (fraction 0 for the folders that exist)
    train = given["train"]
    carved, warnings = stratified_split([labels[p] for p in train],
                                        0.0 if given["val"] else val,
                                        0.0 if given["test"] else test, seed, classes)
    out = {s: sorted(given[s] + [train[i] for i in carved[s]]) for s in ("val", "test")}
    out["train"] = [train[i] for i in carved["train"]]
    return out, warnings


class FolderDataset(ImageDataset):
    """One split of a scanned folder; decodes per item unless the scan cached the images."""

    def __init__(self, index: FolderIndex, positions: list[int], channels: int | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.channels = channels  # which axis of a 3-D array holds the channels
        self.root = index.root
        self.positions = positions
        self._files = index.files
        self._images = index.images
        self.in_memory = index.images is not None

    def load(self, i: int):
        position = self.positions[i]
        if self._images is not None:
            return self._images[position]
        path = os.path.join(self.root, self._files[position])
        try:
            return _decode(path, self.channels)
        except Unreadable as exc:
            raise DataError(f"cannot read {path} ({exc.reason}) — remove it, or set "
                            f"data.cache_images: true to check every image before "
                            f"training") from exc


def _check_path(path: str | None,
                hint: str = "pass --data PATH to an ImageFolder (one subfolder per class)"
                ) -> str:
    if not path:
        raise DataError(f"no data folder given — {hint}")
    expanded = os.path.expanduser(str(path))
    if not os.path.exists(expanded):
        raise DataError(f"data folder {path} does not exist — {hint}")
    if not os.path.isdir(expanded):
        raise DataError(f"data path {path} is a file, not a folder — {hint}")
    return os.path.abspath(expanded)


def build(spec, split: str, transform, seed: int) -> FolderDataset:
    unknown = [k for k in spec.params if k != "follow_links"]
    if unknown:
        raise DataError(f"unknown folder dataset parameter '{unknown[0]}' (folder takes "
                        f"follow_links: true|false; set data.path, val_split, test_split, ...)")
    follow = spec.params.get("follow_links", False)
    if not isinstance(follow, bool):
        raise DataError(f"data.params.follow_links must be true or false, got {follow!r}")
    root = _check_path(spec.path)
    channels = getattr(spec, "channels", None)
    key = ("folder", os.path.realpath(root), signature(root), spec.cache_images, follow,
           channels)
    index = memo(key, lambda: scan(root, spec.cache_images, follow, channels))
    return split_dataset(index, spec, split, transform, seed, name="folder")


def split_dataset(index: FolderIndex, spec, split: str, transform, seed: int,
                  name: str) -> FolderDataset:
    """One split of ``index``: given splits kept, missing ones carved, few-shot on train
    (shared by ``folder``, ``imagefolder`` and ``csv:``)."""
    channels = getattr(spec, "channels", None)
    parts, split_warnings = split_positions(index, spec.val_split, spec.test_split, seed)
    positions = parts[split]
    if split == "train":
        positions = few_shot(positions, index.labels, spec.max_per_class, seed)
    return FolderDataset(index, positions, channels, name=name, split=split,
                         classes=index.classes,
                         targets=[index.labels[p] for p in positions],
                         sample_ids=[index.files[p] for p in positions], transform=transform,
                         warnings=[*index.warnings, *split_warnings])
