"""``zoo data shard SRC OUT``: any dataset zoo reads, written as WebDataset tar shards.

The three splits are taken as zoo splits them (``load_splits``: the seed, ``val_split``,
``test_split``, ``max_per_class``), so a streamed run (``data.name: webdataset``) sees the
same train/val/test as a run on SRC.  Each split becomes ``<split>-000000.tar``, ... of at
most ``shard_size`` samples, each sample ``KEY.<png|jpg|...>``, ``KEY.cls`` (label) and
``KEY.id`` (the source's sample id).  A folder's JPEG/PNG/WebP files are stored as they are
(no re-encoding); other images are encoded as PNG.  Shards are written with the
``webdataset`` package, each one atomically, and ``zoo-shards.json`` (classes, splits,
per-shard counts) last: a folder without it is not a finished set of shards.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

from zoo.catalog import get_catalog
from zoo.errors import ConfigError, MissingDependencyError
from zoo.io import atomic
from zoo.io import runfolder as rundir
from zoo.jobspec import DataSpec

MANIFEST = "zoo-shards.json"
KEPT = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".webp": "webp"}


def _png(image) -> bytes:
    from PIL import Image  # lazy: PIL

    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()).save(buf, format="PNG")
    return buf.getvalue()


def _encoded(dataset, i: int) -> tuple[str, bytes]:
    source = getattr(dataset, "source_file", None)
    path = source(i) if callable(source) else None
    ext = KEPT.get(os.path.splitext(path)[1].lower()) if path else None
    if ext:
        with open(path, "rb") as fh:
            return ext, fh.read()
    image, _ = dataset[i]
    return "png", _png(image)


def _write_split(dataset, split: str, out: Path, shard_size: int, log) -> list[dict]:
    import webdataset as wds  # lazy: an optional dependency (the stream extra)

    shards, n = [], len(dataset)
    for start in range(0, n, shard_size):
        name = f"{split}-{len(shards):06d}.tar"
        stop = min(n, start + shard_size)

        def fill(tmp: str, start=start, stop=stop) -> None:
            with wds.TarWriter(tmp) as sink:
                for i in range(start, stop):
                    ext, data = _encoded(dataset, i)
                    sink.write({"__key__": f"{split}-{i:08d}", ext: data,
                                "cls": str(int(dataset.targets[i])),
                                "id": str(dataset.sample_ids[i])})

        atomic.replace_file(out / name, fill, durable=False)
        shards.append({"file": name, "count": stop - start})
        log(f"{split}: wrote {name} ({stop - start} samples)")
    return shards


def write_shards(source: str, out: str | Path, *, shard_size: int = 10_000, seed: int = 0,
                 params: dict | None = None, val_split: float = 0.1, test_split: float = 0.2,
                 max_per_class: int | None = None, catalog=None, log=None) -> dict:
    """Write ``source`` (a folder or a dataset name) as shards into ``out``; return the
    manifest."""
    from zoo.engine.data import load_splits  # lazy: imports torch

    try:
        import webdataset  # noqa: F401  # lazy: the stream extra
    except ImportError:
        raise MissingDependencyError("writing shards needs webdataset — pip install "
                                     "'zoo[stream]'") from None
    if shard_size < 1:
        raise ConfigError(f"--shard-size must be at least 1, got {shard_size}")
    log = log or (lambda message: None)
    catalog = catalog or get_catalog()
    fragment = dict(catalog.resolve_dataset_arg(source))
    spec = DataSpec(**fragment, params=dict(params or {}), val_split=val_split,
                    test_split=test_split, max_per_class=max_per_class)
    folder = rundir.check_out_dir(out, "OUT")
    if (folder / MANIFEST).exists():
        raise ConfigError(f"{folder} already holds shards ({MANIFEST}) — choose an empty OUT "
                          "folder")
    bundle = load_splits(catalog, spec, seed)
    splits = {}
    for split in ("train", "val", "test"):
        dataset = getattr(bundle, split)
        shards = _write_split(dataset, split, folder, shard_size, log)
        splits[split] = {"count": sum(s["count"] for s in shards), "shards": shards}
    manifest = {"format": "zoo-shards", "version": 1, "source": str(source), "seed": seed,
                "val_split": val_split, "test_split": test_split,
                "max_per_class": max_per_class, "classes": list(bundle.classes),
                "warnings": list(bundle.warnings), "splits": splits}
    atomic.write_json(folder / MANIFEST, manifest)
    return dict(manifest, dir=str(folder.resolve()))
