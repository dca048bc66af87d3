"""``torchvision:NAME``: torchvision's classification datasets, on zoo's split rules.

Files live under ``data.root`` (default ``$ZOO_HOME/datasets``, ``ZOO_HOME`` defaulting to
``~/.cache/zoo``), in the folder torchvision itself expects (``MNIST/raw``,
``cifar-10-batches-py``, ...).  The dataset is opened with ``download=False`` first; only
when that fails is torchvision's own download tried — unless ``ZOO_OFFLINE=1`` or
``data.params.download: false`` — and a failure becomes a :class:`~zoo.errors.DataError`
naming the dataset and the exact folder where its files belong.

Splits follow the dataset: its official test split is the test set (``test_split`` is not
used); an official validation split is used as val, otherwise val is carved from train by
``val_split`` (stratified, seeded); datasets with no official split at all (EuroSAT,
Caltech, SUN397, SEMEION) are split like a folder.  Datasets that keep their pixels in one
array (MNIST, CIFAR, SVHN, STL10, USPS, SEMEION) are served from it without a PIL round trip.
"""
from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass, field

from zoo import settings
from zoo.errors import DataError, MissingDependencyError, did_you_mean

from .base import ImageDataset
from zoo.engine.splits import few_shot, stratified_split
from .images import to_tensor
from .memo import memo

_TRAIN_TEST = {"train": {"train": True}, "test": {"train": False}}
_DIGITS = tuple(str(d) for d in range(10))


def _split_kw(train="train", val=None, test="test") -> dict:
    roles = {"train": {"split": train}, "test": {"split": test}}
    if val:
        roles["val"] = {"split": val}
    return roles


@dataclass(frozen=True)
class Entry:
    """How to open one torchvision dataset."""

    roles: dict            # "train"/"val"/"test" (or "all") -> constructor keyword arguments
    folder: str            # where torchvision looks for the files, relative to root
    layout: str | None = None      # pixels in ``.data``: "nhw", "nhwc" or "nchw"
    classes: tuple | None = None   # for datasets without a usable ``classes`` attribute
    extra: dict = field(default_factory=dict)  # constructor arguments for every role
    downloadable: bool = True
    files: str = ""                # named in messages when the folder alone is too vague


DATASETS = {
    "MNIST": Entry(_TRAIN_TEST, "MNIST/raw", "nhw"),
    "FashionMNIST": Entry(_TRAIN_TEST, "FashionMNIST/raw", "nhw"),
    "KMNIST": Entry(_TRAIN_TEST, "KMNIST/raw", "nhw"),
    "EMNIST": Entry(_TRAIN_TEST, "EMNIST/raw", "nhw", extra={"split": "balanced"}),
    "USPS": Entry(_TRAIN_TEST, ".", "nhw", classes=_DIGITS, files="usps.bz2, usps.t.bz2"),
    "SEMEION": Entry({"all": {}}, ".", "nhw", classes=_DIGITS, files="semeion.data"),
    "CIFAR10": Entry(_TRAIN_TEST, "cifar-10-batches-py", "nhwc"),
    "CIFAR100": Entry(_TRAIN_TEST, "cifar-100-python", "nhwc"),
    "SVHN": Entry(_split_kw(), ".", "nchw", classes=_DIGITS,
                  files="train_32x32.mat, test_32x32.mat"),
    "STL10": Entry(_split_kw(), "stl10_binary", "nchw"),
    "Flowers102": Entry(_split_kw(val="val"), "flowers-102"),
    "OxfordIIITPet": Entry(_split_kw(train="trainval"), "oxford-iiit-pet"),
    "DTD": Entry(_split_kw(val="val"), "dtd"),
    "EuroSAT": Entry({"all": {}}, "eurosat"),
    "Food101": Entry(_split_kw(), "food-101"),
    "GTSRB": Entry(_split_kw(), "gtsrb", classes=tuple(str(i) for i in range(43))),
    "FGVCAircraft": Entry(_split_kw(val="val"), "fgvc-aircraft-2013b"),
    "Country211": Entry(_split_kw(val="valid"), "country211"),
    "StanfordCars": Entry(_split_kw(), "stanford_cars"),
    "Caltech101": Entry({"all": {}}, "caltech101"),
    "Caltech256": Entry({"all": {}}, "caltech256"),
    "SUN397": Entry({"all": {}}, "SUN397"),
    # Imagenette has train/val only: its val is the test set, val is carved from train.
    "Imagenette": Entry({"train": {"split": "train"}, "test": {"split": "val"}},
                        "imagenette2-320", extra={"size": "320px"}),
    "ImageNet": Entry({"train": {"split": "train"}, "test": {"split": "val"}}, ".",
                      downloadable=False, files="ILSVRC2012_img_train.tar, "
                      "ILSVRC2012_img_val.tar, ILSVRC2012_devkit_t12.tar.gz"),
}


def zoo_home() -> str:
    return str(settings.zoo_home())


def _download_allowed(spec) -> tuple[bool, str]:
    if settings.flag("ZOO_OFFLINE"):
        return False, "ZOO_OFFLINE is set"
    if (spec.params or {}).get("download", True) is False:
        return False, "data.params.download is false"
    return True, ""


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    """Give downloads a socket timeout: urllib's default waits forever behind a firewall."""
    previous = socket.getdefaulttimeout()
    if previous is None:
        socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _open(name: str, entry: Entry, root: str, kwargs: dict, spec):
    """Open one role of dataset ``name``, downloading it if allowed; errors → DataError."""
    import torchvision.datasets  # lazy: torchvision

    cls = getattr(torchvision.datasets, name, None)
    if cls is None:
        raise DataError(f"torchvision:{name} is not in the installed torchvision "
                        f"({torchvision.__version__}); upgrade torchvision")
    folder = os.path.normpath(os.path.join(root, entry.folder))
    what = f"dataset files ({entry.files})" if entry.files else "dataset files"
    args = {**entry.extra, **kwargs}
    if entry.downloadable:
        args["download"] = False

    def missing_dependency(exc: ImportError):
        module = (exc.name or "a missing package").split(".")[0]
        return MissingDependencyError(f"torchvision:{name} needs {module}: pip install {module}")

    try:
        return cls(root=root, **args)
    except ImportError as exc:
        raise missing_dependency(exc) from exc
    except Exception as exc:  # noqa: BLE001 - torchvision: RuntimeError, OSError, ValueError..
        not_found = exc
    allowed, why_not = _download_allowed(spec)
    if not entry.downloadable:
        raise DataError(f"torchvision:{name}: {what} not found in {folder} and "
                        f"torchvision cannot download {name}: get the files and put them "
                        f"there (torchvision said: {_one_line(not_found)})")
    if not allowed:
        raise DataError(f"torchvision:{name}: {what} not found in {folder} and "
                        f"downloading is off ({why_not}): put the files there, or allow the "
                        f"download (needs network access)")
    try:
        with _socket_timeout(60):
            return cls(root=root, **{**args, "download": True})
    except ImportError as exc:
        raise missing_dependency(exc) from exc
    except Exception as exc:  # noqa: BLE001 - URLError, timeouts, checksum errors, ...
        raise DataError(f"torchvision:{name}: {what} not found in {folder} and the "
                        f"download failed ({_one_line(exc)}); downloading needs network "
                        f"access — or put the files in {folder} yourself") from exc


def _labels(ds) -> list[int]:
    """The label of every item, read from the attribute the dataset keeps them in."""
    import numpy as np  # lazy: numpy

    for attr in ("targets", "labels", "_labels", "y"):
        value = getattr(ds, attr, None)
        if value is not None and len(value) == len(ds):
            return [int(v) for v in np.asarray(value).reshape(len(ds), -1)[:, 0]]
    for attr in ("_samples", "samples"):
        value = getattr(ds, attr, None)
        if value is not None and len(value) == len(ds):
            return [int(s[1]) for s in value]
    return [int(ds[i][1]) for i in range(len(ds))]  # slow: decodes every image once


def _classes(ds, entry: Entry, labels: list[int]) -> list[str]:
    names = entry.classes or getattr(ds, "classes", None) or getattr(ds, "categories", None)
    if not names:
        names = [str(i) for i in range(max(labels) + 1)]
    # ImageNet/Imagenette give each class a tuple of synonyms: keep the first
    return [n[0] if isinstance(n, (tuple, list)) else str(n) for n in names]


@dataclass
class Opened:
    """The opened roles of one dataset (shared by its three splits)."""

    sources: dict     # role -> torchvision dataset
    labels: dict      # role -> list of labels
    classes: list


def _open_all(name: str, entry: Entry, root: str, spec) -> Opened:
    sources = {role: _open(name, entry, root, kwargs, spec) for role, kwargs in entry.roles.items()}
    labels = {role: _labels(ds) for role, ds in sources.items()}
    first = next(iter(sources.values()))
    return Opened(sources, labels, _classes(first, entry, labels[next(iter(labels))]))


class TorchvisionDataset(ImageDataset):
    """One split: ``items`` are (role, index) pairs into the opened torchvision datasets."""

    def __init__(self, sources: dict, items: list[tuple[str, int]], layout: str | None,
                 **kwargs):
        super().__init__(**kwargs)
        self.sources = sources
        self.items = items
        self.layout = layout
        self.in_memory = layout is not None

    def load(self, i: int):
        import torch  # lazy: torch

        role, index = self.items[i]
        ds = self.sources[role]
        if self.layout is not None:
            pixels = torch.as_tensor(ds.data[index])
            if self.layout == "nhw":
                return pixels.unsqueeze(0).expand(3, -1, -1).contiguous()
            if self.layout == "nhwc":
                return pixels.permute(2, 0, 1).contiguous()
            return pixels.contiguous()
        return to_tensor(ds[index][0])


def _has_array(opened: Opened, layout: str | None) -> str | None:
    """``layout`` when every source holds uint8 pixels in ``.data``, else None (use PIL)."""
    import numpy as np  # lazy: numpy

    if layout is None:
        return None
    for ds in opened.sources.values():
        data = getattr(ds, "data", None)
        if data is None or str(getattr(data, "dtype", "")).split(".")[-1] != "uint8" \
                or len(data) != len(ds):
            return None
        if np.ndim(data) != (3 if layout == "nhw" else 4):
            return None
    return layout


def _items(opened: Opened, spec, seed: int) -> tuple[dict[str, list[tuple[str, int]]], list]:
    """(role, index) pairs of each zoo split."""
    roles = opened.labels
    if "all" in roles:
        parts, warnings = stratified_split(roles["all"], spec.val_split, spec.test_split, seed,
                                           opened.classes)
        return {s: [("all", i) for i in v] for s, v in parts.items()}, warnings
    warnings = []
    out = {"test": [("test", i) for i in range(len(roles["test"]))]}
    if "val" in roles:
        out["val"] = [("val", i) for i in range(len(roles["val"]))]
        out["train"] = [("train", i) for i in range(len(roles["train"]))]
    else:
        parts, warnings = stratified_split(roles["train"], spec.val_split, 0.0, seed,
                                           opened.classes)
        out["val"] = [("train", i) for i in parts["val"]]
        out["train"] = [("train", i) for i in parts["train"]]
    return out, warnings


def build(spec, split: str, transform, seed: int) -> TorchvisionDataset:
    name = spec.name.split(":", 1)[1] if ":" in spec.name else spec.name
    entry = DATASETS.get(name)
    if entry is None:
        folded = {k.lower(): k for k in DATASETS}
        if name.lower() in folded:
            raise DataError(f"unknown dataset 'torchvision:{name}' — names are case-sensitive: "
                            f"did you mean torchvision:{folded[name.lower()]}?")
        hint = did_you_mean(name, DATASETS)
        raise DataError(f"unknown dataset 'torchvision:{name}'{hint}"
                        + ("" if hint else f" (available: {', '.join(DATASETS)})"))
    unknown = [k for k in (spec.params or {}) if k != "download"]
    if unknown:
        raise DataError(f"unknown torchvision dataset parameter '{unknown[0]}' "
                        f"(torchvision:NAME takes download: true/false)")
    root = os.path.abspath(os.path.expanduser(spec.root or os.path.join(zoo_home(), "datasets")))
    opened = memo(("torchvision", name, root), lambda: _open_all(name, entry, root, spec))
    parts, warnings = _items(opened, spec, seed)
    items = parts[split]
    if split == "train" and spec.max_per_class is not None:
        labels = [opened.labels[r][i] for r, i in items]
        items = [items[p] for p in few_shot(range(len(items)), labels, spec.max_per_class, seed)]
    return TorchvisionDataset(
        opened.sources, items, _has_array(opened, entry.layout), name=f"torchvision:{name}",
        split=split, classes=opened.classes,
        targets=[opened.labels[r][i] for r, i in items],
        sample_ids=[f"{r}:{i}" for r, i in items], transform=transform, warnings=warnings)
