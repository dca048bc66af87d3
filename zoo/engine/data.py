"""Datasets and DataLoaders for a job: splits from the dataset plugin, transforms from the
backbone's pretrained config, loader settings chosen from the machine."""
from __future__ import annotations

import os
from dataclasses import dataclass

from zoo.errors import DataError


@dataclass
class DataBundle:
    train: object
    val: object
    test: object
    classes: list
    warnings: list


def load_splits(catalog, spec, seed: int, transforms: dict) -> DataBundle:
    """The three splits of ``spec`` via its dataset plugin, checked for usability."""
    comp = catalog.get("datasets", spec.name)
    splits = {}
    for split in ("train", "val", "test"):
        try:
            splits[split] = comp.obj(spec=spec, split=split, transform=transforms.get(split),
                                     seed=seed)
        except (DataError, ImportError):
            raise
        except OSError as exc:
            raise DataError(f"cannot read dataset '{spec.name}': {exc}") from None
    classes = list(getattr(splits["train"], "classes", []) or [])
    if len(classes) < 2:
        raise DataError(f"dataset '{spec.name}' has {len(classes)} class(es); classification "
                        "needs at least 2 (one subfolder per class)")
    if len(splits["train"]) == 0:
        raise DataError(f"dataset '{spec.name}' has no training images")
    warnings = []
    for ds in splits.values():
        for w in getattr(ds, "warnings", []) or []:
            if w not in warnings:
                warnings.append(w)
    return DataBundle(splits["train"], splits["val"], splits["test"], classes, warnings)


def default_workers(dataset) -> int:
    """In-memory datasets load fastest in the main process; file datasets get workers."""
    if getattr(dataset, "in_memory", False):
        return 0
    cores = os.cpu_count() or 1
    return max(0, min(4, cores - 1))


def make_loader(dataset, batch_size: int, shuffle: bool, seed: int, workers: int | None,
                device_type: str):
    import torch
    from torch.utils.data import DataLoader

    from zoo.engine import distributed

    workers = default_workers(dataset) if workers is None else workers
    gen = torch.Generator().manual_seed(seed) if shuffle else None
    # under torchrun: this rank's shard, shuffled by the same generator (zoo.engine.distributed)
    sampler = distributed.sampler(dataset, shuffle, gen)
    sharded = sampler is not None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and not sharded,
                      sampler=sampler, generator=gen, num_workers=workers,
                      persistent_workers=workers > 0, pin_memory=device_type == "cuda",
                      drop_last=False,
                      worker_init_fn=distributed.worker_init if sharded and workers else None)
