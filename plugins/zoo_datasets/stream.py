"""``webdataset``: images streamed from WebDataset tar shards, never all on local disk.

``data.path`` is a folder (or URL prefix readable by ``webdataset``) holding
``zoo-shards.json`` and the shards it names — what ``zoo data shard SRC OUT`` writes::

    {"format": "zoo-shards", "version": 1, "classes": [...],
     "splits": {"train": {"count": N, "shards": [{"file": "train-000000.tar",
                                                   "count": n}, ...]}, "val": ..., "test": ...}}

Each sample of a shard is ``KEY.png`` (or ``.jpg``/``.jpeg``/``.webp``), ``KEY.cls`` (the
label) and ``KEY.id`` (the sample id it had in the source dataset).  Tars are read with the
``webdataset`` package; only image bytes are decoded (PIL), nothing is unpickled.

Order, sharding and exact resume.  An epoch is one pass over a split.  Its order is a
function of (seed, epoch) only: the train split's shards are shuffled by it, then samples
pass a shuffle buffer (``data.params.shuffle_buffer``, default 1,000) seeded by it.  The
stream is divided between the DataLoader workers of every rank ("slots").  In one process
with at least as many shards as workers, by shard (shard k of the epoch's order → worker
k mod workers: each reads only its own tars).  Under torchrun (or with fewer shards than
workers), by sample: sample i → slot i mod slots, every slot reading the tars and
decoding only its own samples — so every rank gets an equal share of every epoch, and
yields exactly ``count // world_size`` training samples (a slot one short repeats its
first), taking the same number of steps as the others.  Augmentation is seeded per (epoch, sample
position), as for folders.  So the stream position at an epoch boundary — where zoo
checkpoints — is the epoch number: ``--resume`` replays the next epoch exactly as the
uninterrupted run would (same worker count: a resume keeps the run's), and the resumed
history equals the uninterrupted one (tests/test_streams.py).
"""
from __future__ import annotations

import io
import json
import os
import random
from typing import Iterator

from torch.utils.data import IterableDataset, get_worker_info

from zoo.engine.data import seeded_call
from zoo.errors import DataError

from .images import to_tensor

MANIFEST = "zoo-shards.json"
IMAGE_KEYS = ("png", "jpg", "jpeg", "webp")
DEFAULT_BUFFER = 1000


def read_manifest(root: str) -> dict:
    """The shard manifest at ``root``, checked (it is untrusted input)."""
    path = os.path.join(root, MANIFEST)
    try:
        with open(path, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except FileNotFoundError:
        raise DataError(f"no {MANIFEST} in {root} — write shards with `zoo data shard SRC "
                        f"{root}`") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc} — write the shards again") from None
    try:
        ok = manifest["format"] == "zoo-shards" and isinstance(manifest["classes"], list)
        for split in manifest["splits"].values():
            for shard in split["shards"]:
                name = shard["file"]
                ok = ok and isinstance(name, str) and os.path.basename(name) == name \
                    and not name.startswith(".") and isinstance(shard["count"], int)
            ok = ok and split["count"] == sum(s["count"] for s in split["shards"])
    except (KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise DataError(f"{path} is not a valid shard manifest — write the shards again "
                        "with `zoo data shard`")
    return manifest


def _slot() -> tuple[int, int]:
    """(this DataLoader worker's slot, number of slots) over every rank's workers."""
    from zoo.engine import distributed  # lazy: imports torch.distributed

    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info else (0, 1)
    return distributed.rank() * workers + worker, distributed.world_size() * workers


class EpochStream(IterableDataset):
    """What the engine asks of a streamed split (shards, ``hf-stream``): ``set_epoch`` (the
    order depends on (seed, epoch) alone), ``with_transform`` (a view), ``len`` (per rank
    for training: every rank takes the same number of steps)."""

    streaming = True
    in_memory = False
    count = 0
    split = "train"
    epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def with_transform(self, transform):
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__, transform=transform)
        return view

    def __len__(self) -> int:
        from zoo.engine import distributed  # lazy: imports torch.distributed

        world = distributed.world_size()
        return self.count // world if self.split == "train" and world > 1 else self.count


class ShardStream(EpochStream):
    """One split of a shard folder as an iterable of ``(transform(uint8 image), label)``."""

    streaming = True
    in_memory = False

    def __init__(self, root: str, manifest: dict, split: str, seed: int, transform=None,
                 shuffle_buffer: int = DEFAULT_BUFFER, name: str = "webdataset"):
        self.root, self.split, self.seed, self.transform = root, split, seed, transform
        self.name, self.shuffle_buffer, self.epoch = name, shuffle_buffer, 0
        self.classes = list(manifest["classes"])
        part = manifest["splits"].get(split) or {"count": 0, "shards": []}
        self.shards = [(s["file"], s["count"]) for s in part["shards"]]
        self.count = int(part["count"])
        self.warnings: list[str] = []
        self.sample_ids: list[str] = []  # not listed: a stream is not held in memory
        self.targets = None


    # -- iteration ---------------------------------------------------------------------------
    def _shard_order(self, epoch_seed: int) -> list[int]:
        order = list(range(len(self.shards)))
        if self.split == "train":
            random.Random(epoch_seed).shuffle(order)
        return order

    def _read(self, shard: int) -> Iterator[dict]:
        import webdataset as wds  # lazy: an optional dependency (the stream extra)

        url = os.path.join(self.root, self.shards[shard][0])
        yield from wds.WebDataset([url], shardshuffle=False, empty_check=False,
                                  nodesplitter=None, workersplitter=None)

    def _mine(self, order: list[int], slot: int, slots: int) -> Iterator[tuple[int, dict]]:
        """This slot's ``(position in the epoch's order, sample)`` pairs."""
        if len(order) >= slots and self._world() == 1:  # by shard: only its own tars
            position = slot  # ids for seeding augmentation: unique across slots
            for k, shard in enumerate(order):
                if k % slots == slot:
                    for sample in self._read(shard):
                        yield position, sample
                        position += slots
            return
        i = 0
        for shard in order:  # by sample: every slot reads, each keeps its own
            for sample in self._read(shard):
                if i % slots == slot:
                    yield i, sample
                i += 1

    @staticmethod
    def _world() -> int:
        from zoo.engine import distributed  # lazy: imports torch.distributed

        return distributed.world_size()

    def _quota(self, slot: int, slots: int) -> int | None:
        """Samples this slot must yield under torchrun (equal steps per rank), else None."""
        from zoo.engine import distributed  # lazy: imports torch.distributed

        world = distributed.world_size()
        if self.split != "train" or world == 1:
            return None
        workers = slots // world
        per_rank = self.count // world
        worker = slot % workers
        return per_rank // workers + (1 if worker < per_rank % workers else 0)

    def __iter__(self):
        import webdataset as wds  # lazy: the stream extra

        epoch_seed = self.seed * 100_003 + self.epoch
        slot, slots = _slot()
        mine = self._mine(self._shard_order(epoch_seed), slot, slots)
        if self.split == "train" and self.shuffle_buffer > 1:
            rng = random.Random(epoch_seed * 1_000_003 + slot)
            mine = wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer,
                               rng=rng)(mine)
        quota = self._quota(slot, slots)
        yielded = 0
        while quota is None or yielded < quota:
            for position, sample in mine:
                if quota is not None and yielded >= quota:
                    return
                yield self._decode(sample, epoch_seed, position)
                yielded += 1
            if quota is None or yielded == 0:
                return
            mine = self._mine(self._shard_order(epoch_seed), slot, slots)  # a short slot

    def _decode(self, sample: dict, epoch_seed: int, position: int):
        from PIL import Image  # lazy: PIL

        key = next((k for k in IMAGE_KEYS if k in sample), None)
        if key is None or "cls" not in sample:
            raise DataError(f"sample {sample.get('__key__')} in {sample.get('__url__')} has "
                            "no image or no .cls label — write the shards with `zoo data "
                            "shard`")
        with Image.open(io.BytesIO(sample[key])) as im:
            im.load()
            image = to_tensor(im)
        label = int(sample["cls"])
        if self.transform is not None:
            image = seeded_call(self.transform, image, epoch_seed, position)
        return image, label


def build(spec, split: str, transform, seed: int) -> ShardStream:
    if not spec.path:
        raise DataError("no shard folder given — pass --data DIR with --set "
                        "data.name=webdataset (a folder written by `zoo data shard`)")
    unknown = set(spec.params) - {"shuffle_buffer"}
    if unknown:
        raise DataError(f"unknown webdataset parameter '{sorted(unknown)[0]}' (it takes "
                        "shuffle_buffer)")
    buffer = spec.params.get("shuffle_buffer", DEFAULT_BUFFER)
    if not isinstance(buffer, int) or isinstance(buffer, bool) or buffer < 0:
        raise DataError(f"data.params.shuffle_buffer must be a whole number ≥ 0, got {buffer!r}")
    root = os.path.expanduser(spec.path)
    manifest = read_manifest(root)
    # splits and few-shot subsets are decided when the shards are written (zoo data shard)
    return ShardStream(root, manifest, split, seed, transform, buffer)
