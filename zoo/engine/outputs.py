"""The result files of a finished run: the model (safetensors + metadata) and the versions
block of ``summary.json`` (metric files are the metrics' own writers: zoo.engine.metric_files)."""
from __future__ import annotations

import importlib.metadata as md
import platform
from pathlib import Path

from zoo.io import atomic


def versions(catalog) -> dict:
    out = {"python": platform.python_version()}
    for dist in ("torch", "torchvision", "timm", "zoo"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    out["plugins"] = {name: rec.version for name, rec in catalog.pm.records.items()
                      if rec.status == "loaded"}
    return out


def save_model(path: Path, model, built, job, classes: list) -> None:
    # the head the model really carries: a model change (auto's ReplaceHead: ncm, knn) tags
    # its new head with its registered name and params; otherwise the job's head
    head = getattr(model.head, "zoo_head", None)
    if not (isinstance(head, dict) and isinstance(head.get("name"), str)):
        head = {"name": job.head.name, "params": job.head.params}
    meta = {"zoo": {"format": 1, "model": built.ref.full, "provider": built.ref.provider,
                    "arch": built.ref.arch, "tag": built.ref.tag,
                    "head": {"name": head["name"], "params": dict(head.get("params") or {})},
                    "num_classes": len(classes), "classes": classes,
                    "feature_dim": model.backbone.feature_dim,
                    "image_size": built.image_size,
                    "pretrained_cfg": model.backbone.pretrained_cfg.as_dict(),
                    "strategy": job.strategy.name}}
    unmerged = list(getattr(model, "zoo_unmerged", None) or [])
    if unmerged:  # changes that could not merge (VPT prompts): load_run re-applies them
        meta["zoo"]["unmerged"] = unmerged
    atomic.save_safetensors(path, model.state_dict(), meta)
