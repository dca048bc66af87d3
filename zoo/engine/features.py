"""Feature caching: run a frozen backbone once, then train the head on its outputs.

Used by frozen-backbone phases whose inputs are deterministic (``data.augment: none`` or the
val/test splits) and by ``zoo rank``.  Features live in memory; past the job's
``train.cache_budget_mb`` the cache is refused (the loop then runs the backbone every step).
"""
from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from zoo.engine.data import make_loader


@torch.inference_mode()
def extract_features(backbone, loader, device, precision: str = "fp32",
                     channels_last: bool = False, progress=None, label: str = "features"):
    """``(features float32 [N, D], targets long [N])`` of every sample in ``loader``."""
    from zoo.engine.runtime import autocast_for  # lazy: torch

    backbone.eval()
    feats, targets = [], []
    task = (progress.add_task(label, total=len(loader), loss="-", ips="-")
            if progress else None)
    for inputs, y in loader:
        inputs = inputs.to(device, non_blocking=True)
        if channels_last and inputs.dim() == 4:
            inputs = inputs.to(memory_format=torch.channels_last)
        with autocast_for(device, precision):
            f = backbone(inputs)
        feats.append(f.float().cpu())
        targets.append(torch.as_tensor(y).cpu())
        if progress is not None:
            progress.update(task, advance=1)
    if progress is not None:
        progress.remove_task(task)
    if not feats:
        return torch.empty(0, backbone.feature_dim), torch.empty(0, dtype=torch.long)
    return torch.cat(feats), torch.cat(targets).long()


class FeatureDataset(TensorDataset):
    """Cached features with the source dataset's ``classes`` and ``targets``."""

    def __init__(self, features, targets, classes):
        super().__init__(features, targets)
        self.classes = list(classes)
        self.targets = targets.tolist()


def estimate_mb(num_samples: int, feature_dim: int) -> float:
    return num_samples * feature_dim * 4 / 2**20


class FeatureCache:
    """Features per split, computed on first use and shared by every phase that can use them."""

    def __init__(self, backbone, image_loaders: dict, device, job, progress=None):
        self.backbone = backbone
        self.image_loaders = image_loaders
        self.device = device
        self.job = job
        self.progress = progress
        self.splits: dict[str, FeatureDataset] = {}
        self.seconds = 0.0

    def fits_budget(self) -> bool:
        n = sum(len(l.dataset) for l in self.image_loaders.values() if l is not None)
        return estimate_mb(n, self.backbone.feature_dim) <= self.job.train.cache_budget_mb

    def dataset(self, split: str) -> FeatureDataset:
        if split not in self.splits:
            from zoo.engine import distributed  # lazy: imports torch

            start = time.perf_counter()
            image_loader = self.image_loaders[split]
            dataset = image_loader.dataset
            # features in dataset order; under torchrun each rank runs the backbone on its
            # shard only and the shards are gathered, so every rank holds the whole split
            loader = make_loader(dataset, image_loader.batch_size, False, self.job.seed,
                                 image_loader.num_workers, self.device.type)
            x, y = extract_features(self.backbone, loader, self.device,
                                    self.job.train.precision, self.job.train.channels_last,
                                    self.progress, f"caching {split} features")
            n = len(dataset)
            x, y = distributed.gather_rows(x, n), distributed.gather_rows(y, n)
            self.splits[split] = FeatureDataset(x, y, dataset.classes)
            self.seconds += time.perf_counter() - start
        return self.splits[split]

    def loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        """Cached features of ``split`` (this rank's shard of them under torchrun)."""
        return make_loader(self.dataset(split), batch_size, shuffle, self.job.seed, 0, "cpu")
