"""``hf:NAME``: a Hugging Face ``datasets`` dataset.

``NAME`` is a local path or a Hub dataset id:

- a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``
  (``datasets.load_from_disk``);
- a ``.parquet`` file, or any folder ``datasets.load_dataset(FOLDER)`` reads (parquet
  files with an image column, an ``imagefolder`` with ``metadata.csv``/``.jsonl``, ...);
- a Hub id (``ORG/NAME``): the snapshot in the local Hugging Face cache
  (``huggingface_hub.snapshot_download(..., local_files_only=True)``), loaded as a folder.
  Not cached: online, it is downloaded into ``$ZOO_HOME/datasets/hf/hub`` (looked in
  too); offline, one line says so.

Splits: ``train``, ``validation`` (→ val) and ``test`` are used as given, a missing val or
test is carved from train, stratified (as for folders); other splits are ignored with a
warning.  Labels: a ``ClassLabel`` column gives the class names; else a string (or
integer) label column gives its sorted distinct values.  The columns are found by their
features (``Image``, ``ClassLabel``) or names (``image``/``img``, ``label``/``labels``);
``data.params.image_column`` / ``label_column`` choose.  ``datasets`` writes its Arrow
cache under ``$ZOO_HOME/datasets/hf`` (``load_from_disk`` writes nothing).

``datasets`` is optional (``pip install 'zoo[hf]'``) and imported only here, when used.
"""
from __future__ import annotations

import os

from zoo.errors import DataError, MissingDependencyError
from zoo.weights.formats import zoo_home
from zoo.weights.network import offline_reason

from .base import ImageDataset
from .folder import SPLIT_FOLDERS, split_by_origin
from .images import to_tensor
from .claims import SPLIT_NAMES, is_saved_dataset
from .labeled import natural
from .memo import memo
from zoo.engine.splits import few_shot

PARAMS = ("image_column", "label_column")
CACHE_MAX_IMAGES = 5000


def _datasets():
    try:
        import datasets  # lazy: optional dependency (the hf extra), heavy to import
    except ImportError:
        raise MissingDependencyError("hf: datasets need the datasets library — "
                                     "pip install 'zoo[hf]'") from None
    return datasets


def cache_dir() -> str:
    return str(zoo_home() / "datasets" / "hf")


def _snapshot(repo_id: str) -> str:
    """The local snapshot folder of Hub dataset ``repo_id`` (cache first; offline: only)."""
    from huggingface_hub import snapshot_download  # lazy: optional dependency (hf extra)
    from huggingface_hub.errors import LocalEntryNotFoundError  # lazy: as above

    # the user's Hugging Face cache (HF_HOME / HF_HUB_CACHE), then zoo's own downloads
    for cache in (None, os.path.join(cache_dir(), "hub")):
        try:
            return snapshot_download(repo_id, repo_type="dataset", local_files_only=True,
                                     cache_dir=cache)
        except LocalEntryNotFoundError:
            continue
        except Exception as exc:  # a malformed id, a broken cache
            raise DataError(f"hf:{repo_id}: {type(exc).__name__}: {exc}") from None
    reason = offline_reason()
    if reason:
        raise DataError(f"hf:{repo_id} is not in the local Hugging Face cache and zoo is "
                        f"offline ({reason}) — download it when online (huggingface-cli "
                        f"download --repo-type dataset {repo_id}) or pass a local path")
    try:
        # downloads go under $ZOO_HOME, like every file zoo writes
        return snapshot_download(repo_id, repo_type="dataset",
                                 cache_dir=os.path.join(cache_dir(), "hub"))
    except Exception as exc:  # no network, unknown repo, gated
        raise DataError(f"hf:{repo_id} could not be downloaded ({type(exc).__name__}) — "
                        f"check the name, or pass a local folder: hf:PATH") from None


def _load(location: str):
    """A ``DatasetDict`` (or ``Dataset``) from a local path or a Hub id."""
    datasets = _datasets()
    datasets.disable_progress_bars()  # zoo reports its own progress; keep stderr to lines
    path = os.path.abspath(os.path.expanduser(location))
    if not os.path.exists(path):
        if location.startswith((".", "/", "~")) or location.count("/") > 1:
            raise DataError(f"hf:{location}: no such file or folder — give a save_to_disk "
                            f"folder, parquet file(s) or an imagefolder, or a Hub id ORG/NAME")
        path = _snapshot(location)
    try:
        if os.path.isdir(path) and is_saved_dataset(path):
            return datasets.load_from_disk(path)
        if os.path.isfile(path):
            kind = os.path.splitext(path)[1].lstrip(".")
            return datasets.load_dataset({"jsonl": "json"}.get(kind, kind), data_files=path,
                                         cache_dir=cache_dir())
        return datasets.load_dataset(path, cache_dir=cache_dir())
    except (ValueError, FileNotFoundError, OSError, TypeError) as exc:
        raise DataError(f"hf:{location}: datasets could not read it ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:200]})") from None


def _column(features, wanted: str | None, kind: str, names: tuple[str, ...], param: str,
            where: str) -> str:
    columns = list(features)
    if wanted:
        if wanted not in columns:
            raise DataError(f"{where} has no column '{wanted}' (columns: "
                            f"{', '.join(columns)}) — set data.params.{param}")
        return wanted
    typed = [c for c, f in features.items() if type(f).__name__ == kind]
    found = typed[:1] or [c for c in names if c in columns][:1]
    if not found:
        raise DataError(f"{where} has no {names[0]} column (columns: {', '.join(columns)}) "
                        f"— set data.params.{param}=COLUMN")
    return found[0]


class Table:
    """The loaded splits as one list of rows: (hf split, row) and zoo's split per row."""

    def __init__(self, location: str, params: dict):
        loaded = _load(location)
        parts = dict(loaded) if hasattr(loaded, "keys") else {"train": loaded}
        where = f"hf:{location}"
        self.warnings = []
        ignored = [s for s in parts if s.lower() not in SPLIT_NAMES]
        if ignored:
            self.warnings.append(f"{where}: ignored split(s) {', '.join(ignored)} (zoo uses "
                                 f"{', '.join(a for v in SPLIT_FOLDERS.values() for a in v)})")
        parts = {s: d for s, d in parts.items() if s.lower() in SPLIT_NAMES}
        if not any(SPLIT_NAMES[s.lower()] == "train" for s in parts):
            raise DataError(f"{where} has no train split (splits: {', '.join(parts) or 'none'})")
        first = next(iter(parts.values()))
        self.image_col = _column(first.features, params.get("image_column"), "Image",
                                 ("image", "img"), "image_column", where)
        self.label_col = _column(first.features, params.get("label_column"), "ClassLabel",
                                 ("label", "labels"), "label_column", where)
        datasets = _datasets()
        if type(first.features[self.image_col]).__name__ != "Image":
            parts = {s: d.cast_column(self.image_col, datasets.Image()) for s, d in parts.items()}
        self.parts = parts
        feature = first.features[self.label_col]
        raw = {s: [v for v in d[self.label_col]] for s, d in parts.items()}
        if type(feature).__name__ == "ClassLabel":
            self.classes = list(feature.names)
            labels = raw
        else:
            self.classes = sorted({str(v) for vs in raw.values() for v in vs}, key=natural)
            index = {c: i for i, c in enumerate(self.classes)}
            labels = {s: [index[str(v)] for v in vs] for s, vs in raw.items()}
        self.rows = [(s, i) for s in parts for i in range(len(labels[s]))]
        self.labels = [int(v) for s in parts for v in labels[s]]
        self.origins = [SPLIT_NAMES[s.lower()] for s, _ in self.rows]
        if len(self.classes) < 2:
            raise DataError(f"{where} has {len(self.classes)} label(s): classification needs "
                            f"at least 2 classes")
        self.images = ([self.decode(p) for p in range(len(self.rows))]
                       if len(self.rows) < CACHE_MAX_IMAGES else None)

    def decode(self, position: int):
        split, row = self.rows[position]
        return to_tensor(self.parts[split][row][self.image_col])


class HFDataset(ImageDataset):
    """One split of a :class:`Table`; pixels from memory when the table decoded them."""

    def __init__(self, table: Table, positions: list[int], **kwargs):
        super().__init__(**kwargs)
        self.table = table
        self.positions = positions
        self.in_memory = table.images is not None

    def load(self, i: int):
        position = self.positions[i]
        if self.table.images is not None:
            return self.table.images[position]
        return self.table.decode(position)


def build(spec, split: str, transform, seed: int) -> HFDataset:
    unknown = [k for k in spec.params if k not in PARAMS]
    if unknown:
        raise DataError(f"unknown hf dataset parameter '{unknown[0]}' (hf takes "
                        f"{', '.join(PARAMS)})")
    location = spec.name.split(":", 1)[1] if ":" in spec.name else (spec.path or "")
    if not location:
        raise DataError("no dataset given — write hf:PATH or hf:ORG/NAME, or --data PATH to "
                        "a save_to_disk folder")
    key = ("hf", os.path.abspath(os.path.expanduser(location)), repr(sorted(spec.params.items())))
    table = memo(key, lambda: Table(location, spec.params))
    parts, split_warnings = split_by_origin(table.labels, table.origins, table.classes,
                                           spec.val_split, spec.test_split, seed)
    positions = parts[split]
    if split == "train":
        positions = few_shot(positions, table.labels, spec.max_per_class, seed)
    return HFDataset(table, positions, name=spec.name, split=split, classes=table.classes,
                     targets=[table.labels[p] for p in positions],
                     sample_ids=[f"{table.rows[p][0]}/{table.rows[p][1]}" for p in positions],
                     transform=transform, warnings=[*table.warnings, *split_warnings])
