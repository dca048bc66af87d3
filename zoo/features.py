"""Feature caching: run a frozen backbone once, then train the head on its outputs.

Used by frozen-backbone phases whose inputs are deterministic (``data.augment: none`` or the
val/test splits) and by ``zoo rank``.  Features live in memory; past the job's
``train.cache_budget_mb`` the cache is refused (the loop then runs the backbone every step).
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset


@torch.inference_mode()
def extract_features(backbone, loader, device, precision: str = "fp32",
                     channels_last: bool = False, progress=None, label: str = "features"):
    """``(features float32 [N, D], targets long [N])`` of every sample in ``loader``."""
    from .loop import autocast_for

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
            import time

            start = time.perf_counter()
            loader = self.image_loaders[split]
            x, y = extract_features(self.backbone, loader, self.device,
                                    self.job.train.precision, self.job.train.channels_last,
                                    self.progress, f"caching {split} features")
            self.splits[split] = FeatureDataset(x, y, loader.dataset.classes)
            self.seconds += time.perf_counter() - start
        return self.splits[split]

    def loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        gen = torch.Generator().manual_seed(self.job.seed) if shuffle else None
        return DataLoader(self.dataset(split), batch_size=batch_size, shuffle=shuffle,
                          generator=gen)
