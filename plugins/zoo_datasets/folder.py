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

Listing: the folder is walked once and the listing kept on disk under ``$ZOO_HOME``
(:mod:`zoo_datasets.folder_store`): a later run, or another rank, reuses it while no
directory's modification time has changed.  Hidden files and folders are skipped
silently; symlinks are followed while they stay inside the folder (links leading out of
it are skipped and counted, unless the user opts in with ``data.params.follow_links:
true``: such a listing is not stored), each real folder once per class, so a link loop
ends (:mod:`zoo_datasets.folder_walk`).

Verification: in a folder under 5,000 files, or with ``data.strict_scan: true``, every
file's header is read at the scan (PNG checksums and the JPEG end marker too) and files
that fail — empty, not an image, corrupt or truncated, over PIL's decompression-bomb
limit, broken links — are skipped and counted in ``warnings``.  A bigger folder is
verified lazily: files are listed by extension (PIL's formats, ``.npy``, ``.tif``) and a
file that fails to decode when it is loaded is replaced by the next readable image of the
split (of its class when there is one), flagged, and named in the run's ``summary.json``
(``unreadable``).  With ``data.strict_scan: true`` such a failure is an error instead.

With ``data.cache_images`` true — or left null for a folder under 5,000 small images
(≤ 96×96 px on average) whose decoded size fits in a quarter of the available memory,
cgroup limits included, and 1 GiB (:mod:`zoo_datasets.cache_policy`) — every image is
decoded during the scan into uint8 tensors at native size.  That is also the exact readability check, and because it happens in the
main process, DataLoader workers share the decoded images instead of each filling a cache
of its own.
"""
from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from itertools import groupby
from dataclasses import dataclass, field

import torch

from zoo.errors import DataError

from .base import ImageDataset
from .folder_walk import SPLIT_FOLDERS, _entries, _hidden, _inside, _layout  # noqa: F401
from .cache_policy import MAX_BYTES as CACHE_MAX_BYTES  # noqa: F401
from .cache_policy import MAX_IMAGES as CACHE_MAX_IMAGES
from .cache_policy import should_cache
from .folder_store import cached_listing
from .folder_walk import candidates, walk_listing
from .decoding import decode_file, decoded_size
from .images import Unreadable
from zoo.engine.splits import few_shot, stratified_split
from .memo import memo

PROBE_MAX_FILES = CACHE_MAX_IMAGES  # below: every header is read at the scan (< ~0.3 s)
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
    verified: bool = True           # every file was read at the scan (else: lazily)
    listing: str = "walked"         # how the listing was had: "reused" from $ZOO_HOME, ...
    splits: dict = field(default_factory=dict)  # (val, test, seed) → split_positions(...)


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


def _check(candidates: list, cache_images: bool | None, channels: int | None = None):
    """Probe every candidate, then decode them all if caching: (usable, images, skipped)."""
    usable, sizes, failed = [], [], []
    for candidate, result in zip(candidates, _map(decoded_size, [c[2] for c in candidates])):
        if isinstance(result, Unreadable):
            failed.append((candidate[2], result.reason))
        else:
            usable.append(candidate)
            sizes.append(result)
    if cache_images is None:  # by measurement: small images only, sized from free memory
        cache_images = should_cache(sizes)
    if not cache_images:
        return usable, None, failed
    decoded = _map(lambda path: decode_file(path, channels), [c[2] for c in usable])
    keep = [not isinstance(d, Unreadable) for d in decoded]
    failed += [(c[2], d.reason) for c, d, k in zip(usable, decoded, keep) if not k]
    return ([c for c, k in zip(usable, keep) if k], [d for d, k in zip(decoded, keep) if k],
            failed)


def _image_extensions() -> frozenset[str]:
    from PIL import Image  # lazy: PIL

    Image.init()  # every format plugin, so registered_extensions() is complete
    return frozenset(Image.registered_extensions()) | {".npy", ".tif", ".tiff"}


def _verify(root: str, listing: dict, cache_images: bool | None, strict: bool,
            channels: int | None = None):
    """Usable files as runs ``(origin, class, [relative paths])``, decoded images (or
    None), skipped ``(relative path, reason)`` and whether every file was read.

    Small folders (the cache's decision needs their sizes), a requested cache and the
    strict scan read every file now; otherwise only the extension is checked here and
    decoding failures are handled when an image is loaded (lazy verification)."""
    found = candidates(listing)
    if strict or cache_images or len(found) < PROBE_MAX_FILES:
        full = [(o, c, os.path.join(root, rel), rel) for o, c, rel in found]
        usable, images, failed = _check(full, cache_images, channels)
        skip = len(root.rstrip(os.sep)) + 1
        runs = [(o, c, [rel for *_, rel in group])
                for (o, c), group in groupby(usable, key=lambda u: (u[0], u[1]))]
        return runs, images, [(path[skip:], reason) for path, reason in failed], True
    del found  # big folders: per folder, without a tuple per file
    known = tuple(_image_extensions())  # ".jpg", ...: str.endswith takes them at once
    runs, failed = [], []
    for group in listing["groups"]:
        kept: list[str] = []
        for rel_dir, names in group["files"]:
            prefix = f"{rel_dir}/" if rel_dir else ""
            good = [prefix + n for n in names if n.lower().endswith(known)]
            if len(good) != len(names):
                failed += [(prefix + n, "not an image") for n in names
                           if not n.lower().endswith(known)]
            kept += good
        runs.append((group["origin"], group["class"], kept))
    return runs, None, failed, False


def scan(root: str, cache_images: bool | None, strict: bool = False,
         channels: int | None = None, follow_links: bool = False) -> FolderIndex:
    """List (from the on-disk listing when current), check and maybe decode ``root``."""
    if follow_links:  # the user's opt-in: links leaving the root followed, never stored
        listing, how = walk_listing(root, follow_links=True), "walked (links followed)"
    else:
        listing, how = cached_listing(root, walk_listing)
    runs, images, failed, verified = _verify(root, listing, cache_images, strict, channels)
    runs = [run for run in runs if run[2]]
    class_dirs = listing["class_dirs"]
    classes = sorted({name for _, name, _ in runs})
    if not runs:
        what = "no class subfolders" if not class_dirs else "no readable images"
        raise DataError(f"no images found under {root} ({what}) — put the images in one "
                        f"subfolder per class, e.g. {os.path.join(root, 'cats', '1.jpg')}")
    if len(classes) < 2:
        raise DataError(f"{root} has only one class ('{classes[0]}'): classification needs "
                        f"at least 2 classes, one subfolder each")
    warnings = _scan_warnings(listing, {(o, c) for o, c, _ in runs}, failed, classes, root)
    label_of = {c: i for i, c in enumerate(classes)}
    files: list[str] = []
    labels: list[int] = []
    origins: list[str | None] = []
    for origin, name, kept in runs:
        files += kept
        labels += [label_of[name]] * len(kept)
        origins += [origin] * len(kept)
    return FolderIndex(root=root, classes=classes, files=files, labels=labels,
                       origins=origins, warnings=warnings, images=images, verified=verified,
                       listing=how)


def _scan_warnings(listing: dict, present: set, failed: list, classes: list,
                   root: str) -> list[str]:
    """``present``: the (origin, class) pairs that have usable files."""
    warnings = []
    if failed:
        reasons = Counter(reason for _, reason in failed)
        detail = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
        warnings.append(f"skipped {len(failed)} unreadable file(s) ({detail}): "
                        f"{_listing([rel for rel, _ in failed])}")
    if listing["loose"]:
        warnings.append(f"ignored {len(listing['loose'])} file(s) outside the class folders: "
                        f"{_listing(listing['loose'])}")
    if listing["outside_links"]:
        warnings.append(f"skipped {listing['outside_links']} symlink(s) leading outside "
                        f"the data folder {root} — set data.params.follow_links=true to "
                        "follow them")
    empty = [c for c in listing["class_dirs"] if c not in classes]
    if empty:
        warnings.append(f"ignored {len(empty)} class folder(s) without readable images: "
                        f"{_listing(empty)}")
    for split, folder in (listing["layout"] or {}).items():
        missing = [c for c in classes if (split, c) not in present]
        if missing:
            warnings.append(f"{folder}/ has no images of {len(missing)} class(es): "
                            f"{_listing(missing)}")
    return warnings


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
    """One split of a scanned folder; decodes per item unless the scan cached the images.

    Without ``strict``, an image that fails to decode is flagged (in shared memory, so
    DataLoader workers' findings reach the main process) and replaced by the next
    readable one of the split — of the same class when there is one."""

    def __init__(self, index: FolderIndex, positions: list[int], strict: bool = False,
                 channels: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels  # which axis of a 3-D array holds the channels
        self.root = index.root
        self.positions = positions
        self._files = index.files
        self._images = index.images
        self.in_memory = index.images is not None
        self.strict = strict
        self._failed = None
        if not self.in_memory and not strict and positions:
            self._failed = torch.zeros(len(positions), dtype=torch.uint8).share_memory_()

    def _decode(self, i: int):
        return decode_file(os.path.join(self.root, self._files[self.positions[i]]),
                           self.channels)

    def load(self, i: int):
        position = self.positions[i]
        if self._images is not None:
            return self._images[position]
        try:
            return self._decode(i)
        except Unreadable as exc:
            if self._failed is None:
                path = os.path.join(self.root, self._files[position])
                raise DataError(f"cannot read {path} ({exc.reason}) — remove it, or leave "
                                "data.strict_scan off to skip such files") from exc
            self._failed[i] = 1
            return self._replacement(i)

    def _replacement(self, i: int):
        """The next readable image after ``i``: same class first, then any."""
        n, label = len(self.positions), self.targets[i]
        order = [(i + k) % n for k in range(1, n)]
        for j in (j for same in (True, False) for j in order
                  if (self.targets[j] == label) == same):
            if self._failed[j]:
                continue
            try:
                return self._decode(j)
            except Unreadable:
                self._failed[j] = 1
        raise DataError(f"no image of the {self.split} split under {self.root} can be "
                        "decoded — check the folder (zoo run --set data.strict_scan=true "
                        "lists what is wrong)")

    def source_file(self, i: int) -> str:
        """The file item ``i`` is decoded from (``zoo data shard`` copies its bytes)."""
        return os.path.join(self.root, self._files[self.positions[i]])

    def unreadable_flags(self):
        """The shared per-item flags (uint8, 1 = failed to decode), or None."""
        return self._failed

    def unreadable_files(self) -> list[str]:
        """Sample ids of the images found undecodable so far (by any worker)."""
        if self._failed is None:
            return []
        return [self.sample_ids[i] for i in self._failed.nonzero().flatten().tolist()]


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
    strict = bool(getattr(spec, "strict_scan", False))
    channels = getattr(spec, "channels", None)
    key = ("folder", os.path.realpath(root), signature(root), spec.cache_images, strict,
           channels, follow)
    index = memo(key, lambda: scan(root, spec.cache_images, strict, channels, follow))
    return split_dataset(index, spec, split, transform, seed, name="folder")


def split_dataset(index: FolderIndex, spec, split: str, transform, seed: int,
                  name: str) -> FolderDataset:
    """One split of ``index``: given splits kept, missing ones carved, few-shot on train
    (shared by ``folder``, ``imagefolder`` and ``csv:``)."""
    # the three splits' factory calls share one split (1 M files: ~1 s each otherwise)
    split_key = (spec.val_split, spec.test_split, seed)
    if split_key not in index.splits:
        index.splits[split_key] = split_positions(index, *split_key)
    parts, split_warnings = index.splits[split_key]
    positions = parts[split]
    if split == "train":
        positions = few_shot(positions, index.labels, spec.max_per_class, seed)
    return FolderDataset(index, positions, strict=bool(getattr(spec, "strict_scan", False)),
                         channels=getattr(spec, "channels", None), name=name, split=split,
                         classes=index.classes, targets=[index.labels[p] for p in positions],
                         sample_ids=[index.files[p] for p in positions], transform=transform,
                         warnings=[*index.warnings, *split_warnings])
