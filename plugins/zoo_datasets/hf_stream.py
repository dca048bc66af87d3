"""``hf-stream``: a Hugging Face ``datasets`` dataset in streaming mode (nothing downloaded
up front).  ``data.path`` is what ``datasets.load_dataset`` takes: a hub name, or a local
folder of parquet/arrow/image files.

``data.params``: ``image_column`` (default ``image``), ``label_column`` (``label``),
``splits`` (``{train: train, val: validation, test: test}``: the dataset's split names),
``shuffle_buffer`` (1,000), ``config`` (the dataset's configuration name, if any).

Order, sharding and resume follow ``datasets``' own streaming tools: the train split is
``shuffle(seed=(seed, epoch), buffer_size=...)`` (shard order and a buffer), ranks get
``split_dataset_by_node`` shares, DataLoader workers split the dataset's shards among
themselves (``datasets`` does it).  Under torchrun every rank yields exactly
``count // world_size`` training samples (repeating its first ones if short).  The order is
a function of (seed, epoch, worker count), so a resumed run — which keeps the run's worker
count — replays the next epoch exactly as the uninterrupted run would.  The length of a
split comes from the dataset's metadata, or one counting pass when it has none.
"""
from __future__ import annotations

from torch.utils.data import get_worker_info

from zoo.engine.data import seeded_call
from zoo.errors import DataError

from .images import to_tensor
from .stream import EpochStream

DEFAULT_SPLITS = {"train": "train", "val": "validation", "test": "test"}
PARAMS = {"image_column", "label_column", "splits", "shuffle_buffer", "config"}


def _open(path: str, config, split: str):
    import datasets  # lazy: Hugging Face datasets is heavy

    try:
        return datasets.load_dataset(path, config, split=split, streaming=True)
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"cannot stream split '{split}' of {path}: {str(exc).splitlines()[0]}"
                        " — check data.path and data.params.splits") from None
    except ConnectionError as exc:
        raise DataError(f"cannot reach the hub for {path}: {exc} — use a local folder, or "
                        "go online") from None


class HFStream(EpochStream):
    """One split of a streamed ``datasets`` dataset: ``(transform(uint8 image), label)``."""

    streaming = True
    in_memory = False

    def __init__(self, source, count: int, classes: list, split: str, seed: int,
                 transform, params: dict):
        self.source, self.count, self.classes = source, count, classes
        self.split, self.seed, self.transform, self.epoch = split, seed, transform, 0
        self.image_column = params.get("image_column", "image")
        self.label_column = params.get("label_column", "label")
        self.shuffle_buffer = int(params.get("shuffle_buffer", 1000))
        self.warnings: list[str] = []
        self.sample_ids: list[str] = []
        self.targets = None

    def _stream(self, epoch_seed: int):
        from datasets.distributed import split_dataset_by_node  # lazy: datasets

        from zoo.engine import distributed  # lazy: imports torch.distributed

        ds = self.source
        if self.split == "train" and self.shuffle_buffer > 1:
            ds = ds.shuffle(seed=epoch_seed % 2**32, buffer_size=self.shuffle_buffer)
        if distributed.world_size() > 1:
            ds = split_dataset_by_node(ds, distributed.rank(), distributed.world_size())
        return ds

    def _quota(self) -> int | None:
        from zoo.engine import distributed  # lazy: imports torch.distributed

        world = distributed.world_size()
        if self.split != "train" or world == 1:
            return None
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        per_rank = self.count // world
        return per_rank // workers + (1 if worker < per_rank % workers else 0)

    def __iter__(self):
        epoch_seed = self.seed * 100_003 + self.epoch
        info = get_worker_info()
        worker = info.id if info else 0
        quota, yielded = self._quota(), 0
        while True:
            for k, row in enumerate(self._stream(epoch_seed)):
                if quota is not None and yielded >= quota:
                    return
                yield self._item(row, epoch_seed, worker * 1_000_000_007 + k)
                yielded += 1
            if quota is None or yielded >= quota or yielded == 0:
                return

    def _item(self, row: dict, epoch_seed: int, position: int):
        try:
            image, label = row[self.image_column], int(row[self.label_column])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"a row of the stream lacks '{self.image_column}' or an integer "
                            f"'{self.label_column}' ({exc}) — set data.params.image_column "
                            "and label_column") from None
        tensor = to_tensor(image)
        if self.transform is not None:
            tensor = seeded_call(self.transform, tensor, epoch_seed, position)
        return tensor, label


def _classes(source, label_column: str) -> list[str]:
    feature = (source.features or {}).get(label_column)
    names = getattr(feature, "names", None)
    if not names:
        raise DataError(f"the stream's '{label_column}' column has no class names (a "
                        "ClassLabel feature) — set data.params.label_column")
    return list(names)


def _count(source, split: str, label_column: str) -> int:
    """The split's length from the dataset's metadata, else one pass over its labels."""
    splits = getattr(getattr(source, "info", None), "splits", None) or {}
    known = getattr(splits.get(split), "num_examples", None) if split in splits else None
    if known:
        return int(known)
    try:
        light = source.select_columns([label_column])  # no image decoding while counting
    except Exception:  # noqa: BLE001 - an older datasets: count the full rows
        light = source
    return sum(1 for _ in light)


def build(spec, split: str, transform, seed: int) -> HFStream:
    if not spec.path:
        raise DataError("no dataset given — pass --data NAME_OR_FOLDER with --set "
                        "data.name=hf-stream")
    unknown = set(spec.params) - PARAMS
    if unknown:
        raise DataError(f"unknown hf-stream parameter '{sorted(unknown)[0]}' (it takes "
                        f"{', '.join(sorted(PARAMS))})")
    params = dict(spec.params)
    names = {**DEFAULT_SPLITS, **(params.get("splits") or {})}
    source = _open(spec.path, params.get("config"), names[split])
    classes = _classes(source, params.get("label_column", "label"))
    count = _count(source, names[split], params.get("label_column", "label"))
    return HFStream(source, count, classes, split, seed, transform, params)
