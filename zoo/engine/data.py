"""Datasets and DataLoaders for a job: splits from the dataset plugin, transforms from the
backbone's pretrained config, loader settings chosen from the machine."""
from __future__ import annotations

import copy

from dataclasses import dataclass

from zoo.engine import threads
from zoo.errors import DataError, PluginError, ZooError, one_line


@dataclass
class DataBundle:
    """The three splits of one dataset (and what loading them warned about)."""

    train: object
    val: object
    test: object
    classes: list
    warnings: list

    def with_transforms(self, transforms: dict) -> "DataBundle":
        """The same splits seen through ``transforms`` (split → callable); no reloading."""
        views = {s: (_view(getattr(self, s), transforms[s])
                     if transforms.get(s) is not None else getattr(self, s))
                 for s in ("train", "val", "test")}
        return DataBundle(views["train"], views["val"], views["test"], self.classes,
                          self.warnings)


def eval_view(train, val):
    """``train`` read through ``val``'s transform (no augmentation) — for a plan that trains
    on un-augmented images (``StrategyPlan.augment`` false: a frozen-backbone plan fits fixed
    features best); ``train`` itself when either has no transform."""
    transform = getattr(val, "transform", None)
    if transform is None or not hasattr(train, "transform"):
        return train
    if getattr(train, "streaming", False):
        return train.with_transform(transform)
    view = copy.copy(train)
    view.transform = transform
    return view


def _view(dataset, transform):
    """A split seen through ``transform``: a stream applies it itself, per sample."""
    if getattr(dataset, "streaming", False):
        return dataset.with_transform(transform)
    return Transformed(dataset, transform)


class Transformed:
    """A split seen through a transform: ``(transform(image), label)``.

    Dataset factories return ``transform(uint8 image)`` or, with ``transform=None``, the
    uint8 image itself (docs/hooks.md), so one load serves every transform a run needs.
    The split's attributes (``classes``, ``targets``, ``sample_ids``, ``in_memory`` ...)
    stay visible.
    """

    def __init__(self, dataset, transform):
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        if isinstance(index, tuple):  # (epoch seed, index) from SeededSampler
            epoch_seed, index = index
            image, label = self.dataset[index]
            return seeded_call(self.transform, image, epoch_seed, index), label
        image, label = self.dataset[index]
        return self.transform(image), label

    def __getattr__(self, name):
        if name in ("dataset", "transform"):  # not set yet (unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)


def seeded_call(transform, image, epoch_seed: int, index: int):
    """``transform(image)`` with torch's RNG seeded from (epoch seed, sample index).

    Random crops and flips then depend on the sample and the epoch only — not on which
    DataLoader worker draws it, nor on how many there are — so 0 and 2 workers, and a
    resumed run, see the same augmented images.  The caller's RNG state is restored.
    """
    import torch  # lazy: torch

    # The CPU generator only: ``torch.manual_seed`` also queues a CUDA/MPS/XPU seeding
    # call, formatting a stack trace each time, which cost ~1 ms per sample (3 s of a
    # 22-s run, benchmarks/whole_process.py). Transforms draw from the CPU generator.
    generator = torch.random.default_generator
    state = generator.get_state()
    generator.manual_seed((epoch_seed * 1_000_003 + index) % (2**63 - 1))
    try:
        return transform(image)
    finally:
        generator.set_state(state)


class SeededSampler:
    """Yields ``(epoch seed, index)`` keys for :class:`Transformed`, in an order that
    depends on (seed, epoch) only.

    ``set_epoch`` (called by the loop before every epoch, in the main process) changes
    the seed.  Without a wrapped ``sampler`` it shuffles ``range(size)`` with its own
    generator: the DataLoader's generator is also drawn from when an iterator is created,
    which persistent workers do once and no workers every epoch — so a shared generator
    would give 0 and 2 workers (or a resumed run) different batches from epoch 3 on.  A
    wrapped sampler (the distributed shard) gets ``set_epoch`` forwarded.
    """

    def __init__(self, sampler, seed: int, size: int | None = None):
        self.sampler, self.seed, self.size, self.epoch = sampler, seed, size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        import torch  # lazy: torch

        epoch_seed = self.seed * 100_003 + self.epoch
        if self.sampler is not None:
            order = list(self.sampler)
        else:
            gen = torch.Generator().manual_seed(epoch_seed)
            order = torch.randperm(self.size, generator=gen).tolist()
        return ((epoch_seed, i) for i in order)

    def __len__(self) -> int:
        return len(self.sampler) if self.sampler is not None else self.size


def load_splits(catalog, spec, seed: int, transforms: dict | None = None,
                labeled: bool = True) -> DataBundle:
    """The three splits of ``spec`` via its dataset plugin, checked for usability.

    Load once without ``transforms`` and use :meth:`DataBundle.with_transforms` for each
    view a run needs (zoo.engine.prepare does).
    """
    transforms = transforms or {}
    comp = catalog.get("datasets", spec.name)
    splits = {}
    for split in ("train", "val", "test"):
        try:
            splits[split] = comp.obj(spec=spec, split=split, transform=transforms.get(split),
                                     seed=seed)
        except (ZooError, ImportError):
            raise
        except OSError as exc:
            raise DataError(f"cannot read dataset '{spec.name}': {exc}") from None
        except Exception as exc:  # a bug in the dataset's plugin: say whose, in one line
            raise PluginError(f"plugin '{comp.plugin}' failed in its dataset '{spec.name}' "
                              f"(building the {split} split): {one_line(exc)} — a bug in "
                              "that plugin (rerun with --debug for the traceback)") from exc
    classes = list(getattr(splits["train"], "classes", []) or [])
    if labeled and len(classes) < 2:
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


def check_run_splits(bundle: DataBundle, spec) -> None:
    """A run needs test images (else it would report "completed, accuracy 0") and val
    images unless ``data.val_split`` is 0 (then the training loss is monitored)."""
    if len(bundle.test) == 0:
        raise DataError(f"dataset '{spec.name}' gives no test images, so there is nothing to "
                        "report accuracy on — add images (at least 3 per class) or raise "
                        "data.test_split")
    if len(bundle.val) == 0 and getattr(spec, "val_split", None) != 0:
        raise DataError(f"dataset '{spec.name}' gives no validation images — add images, raise "
                        "data.val_split, or set data.val_split=0 to monitor the training "
                        "loss instead")


def default_workers(dataset, device_type: str = "cpu") -> int:
    """DataLoader workers by the threads/workers policy (zoo.engine.threads): none for
    in-memory data on small core counts, never more than the cores zoo may use."""
    return threads.plan_for_run(dataset, device_type).workers


def make_loader(dataset, batch_size: int, shuffle: bool, seed: int, workers: int | None,
                device_type: str, notes: list | None = None):
    """A DataLoader for one split.

    Training loaders (``shuffle``) draw ``(epoch seed, index)`` keys so augmentation is
    seeded per sample and epoch (:class:`SeededSampler`), and drop a last batch of ONE
    image — BatchNorm cannot train on it — saying so in ``notes``.
    """
    import torch  # lazy: torch
    from torch.utils.data import DataLoader  # lazy: torch

    from zoo.engine import distributed  # lazy: imports torch

    workers = default_workers(dataset, device_type) if workers is None else workers
    if getattr(dataset, "streaming", False):  # an IterableDataset orders itself
        from zoo.engine.streams import stream_loader  # lazy: imports torch

        return stream_loader(dataset, batch_size, shuffle, workers, device_type, notes)
    gen = torch.Generator().manual_seed(seed) if shuffle else None
    # under torchrun: this rank's shard, shuffled by the same generator (zoo.engine.distributed)
    sampler = distributed.sampler(dataset, shuffle, gen)
    sharded = sampler is not None
    if shuffle and isinstance(dataset, Transformed):
        sampler = SeededSampler(sampler if sharded else None, seed, len(dataset))
    per_epoch = len(sampler) if sampler is not None else len(dataset)
    drop_last = bool(shuffle and batch_size > 1 and per_epoch > 1
                     and per_epoch % batch_size == 1)
    if drop_last and notes is not None:
        notes.append(f"the last training batch would hold 1 image ({per_epoch} images, batch "
                     f"size {batch_size}) and BatchNorm cannot train on one; it is dropped "
                     "each epoch (a different image each epoch, as batches are shuffled)")
    return DataLoader(dataset, batch_size=batch_size,
                      shuffle=shuffle and sampler is None, sampler=sampler, generator=gen,
                      num_workers=workers, persistent_workers=workers > 0,
                      pin_memory=device_type == "cuda", drop_last=drop_last,
                      worker_init_fn=distributed.worker_init if sharded and workers else None)


def note_unreadable(bundle: DataBundle, warnings: list) -> dict | None:
    """Files a dataset found undecodable while the run loaded them (lazy verification, e.g.
    the folder dataset's), combined over every rank: ``{"count", "files"}`` for
    summary.json, plus one warning line; None when there were none.  Under torchrun every
    rank must call it (a collective)."""
    from zoo.engine import distributed  # lazy: imports torch

    found_names: dict[str, None] = {}  # ordered, no repeats
    for split in ("train", "val", "test"):
        dataset = getattr(bundle, split)
        flags = getattr(dataset, "unreadable_flags", None)
        flags = flags() if callable(flags) else None
        if flags is not None and distributed.world_size() > 1:
            distributed.all_reduce_max_(flags)  # each rank flagged what its shard met
        found = getattr(dataset, "unreadable_files", None)
        if callable(found):
            found_names.update(dict.fromkeys(found()))
    names = list(found_names)
    if not names:
        return None
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    warnings.append(f"skipped {len(names)} file(s) that failed to decode during the run, "
                    f"each replaced by another image of its split: {shown} (all named in "
                    "summary.json 'unreadable'; data.strict_scan=true makes this an error)")
    return {"count": len(names), "files": names[:1000]}
