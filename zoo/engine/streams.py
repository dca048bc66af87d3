"""DataLoaders for streamed splits (``IterableDataset``\\ s with ``streaming = True``).

A stream orders, shuffles and shards itself from (seed, epoch) — set by the loop through
``set_epoch`` before each epoch — so its loader has no sampler.  Workers are not
persistent: each epoch's iterator pickles the dataset (with its new epoch) to fresh
workers, which is what makes every worker see the epoch.  A training stream drops a last
batch of one image (BatchNorm cannot train on it), as map-style training loaders do.
"""
from __future__ import annotations

from torch.utils.data import DataLoader


def stream_loader(dataset, batch_size: int, shuffle: bool, workers: int, device_type: str,
                  notes: list | None = None) -> DataLoader:
    per_epoch = len(dataset)
    drop_last = bool(shuffle and batch_size > 1 and per_epoch > 1
                     and per_epoch % batch_size == 1 and workers <= 1)
    if drop_last and notes is not None:
        notes.append(f"the last training batch would hold 1 image ({per_epoch} images, batch "
                     f"size {batch_size}) and BatchNorm cannot train on one; it is dropped "
                     "each epoch")
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                      persistent_workers=False, pin_memory=device_type == "cuda",
                      drop_last=drop_last)
