"""The prepare step shared by ``run``, ``rank``, ``eval`` and ``explain``: the data splits
are loaded once, the model is built on their number of classes, and the transforms the
backbone's pretrained config asks for are applied as views of the same splits.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zoo.engine import channels
from zoo.engine.build import BuiltModel, build_model
from zoo.engine.data import DataBundle, load_splits
from zoo.engine.resolution import fit_input_size
from zoo.engine.text_head import apply_head_init
from zoo.engine.transforms import build_transform
from zoo.jobspec import check_against_data
from zoo.names import job_uses, shadow_warnings


@dataclass
class Prepared:
    """A job ready to plan: its data (transformed views), its model, the warnings so far."""

    job: Any
    bundle: DataBundle
    built: BuiltModel
    transforms: dict
    source: DataBundle | None = None      # the source task (joint; UDA trains on it)
    target: DataBundle | None = None      # unlabeled target images (job.target_data)
    warnings: list = field(default_factory=list)

    @property
    def classes(self) -> list:
        return self.bundle.classes


def split_transforms(cfg, image_size: int, augment: str) -> dict:
    """``{"train", "val", "test"}`` transforms: ``augment`` applies to train only."""
    return {"train": build_transform(cfg, image_size, augment, True),
            "val": build_transform(cfg, image_size, augment, False),
            "test": build_transform(cfg, image_size, augment, False)}


def eval_view(bundle: DataBundle, cfg, image_size: int) -> DataBundle:
    """Every split through the deterministic evaluation transform (rank, eval, explain)."""
    tf = build_transform(cfg, image_size, "none", False)
    return bundle.with_transforms({"train": tf, "val": tf, "test": tf})


def prepare(catalog, job, warnings: list | None = None,
            check: Any = None) -> Prepared:
    """Load the splits once, build the model, apply the transforms.

    ``check(classes)`` runs right after the splits are known, before the model is built
    (``--resume`` refuses a run whose classes changed before anything is written).
    """
    warnings = [] if warnings is None else warnings
    raw = load_splits(catalog, job.data, job.seed)
    check_against_data(job, len(raw.classes))  # e.g. one class weight per class
    if check is not None:
        check(raw.classes)
    built = build_model(catalog, job, len(raw.classes), warnings)
    apply_head_init(built.model, raw.classes, job)  # head.init: text (zoo.engine.text_head)
    # a fixed-size ViT at another size: position embeddings resampled (zoo.engine.resolution)
    resized = fit_input_size(built.model.backbone, built.image_size)
    if resized:
        warnings.append(resized)
    # data.channels ≠ 3 or array files: stem adapted, the training split's own mean/std
    channels.configure(built, raw, job, warnings)
    cfg = built.model.backbone.pretrained_cfg
    transforms = split_transforms(cfg, built.image_size, job.data.augment)
    bundle = raw.with_transforms(transforms)
    warnings.extend(w for w in raw.warnings if w not in warnings)
    # a bare name another plugin also registers: say whose component runs (zoo.names)
    uses = job_uses(job, built.ref.provider)
    warnings.extend(w for w in shadow_warnings(catalog, uses) if w not in warnings)
    native = cfg.input_size
    if built.weights.get("source") not in ("none", "random-init") and \
            built.image_size * 4 <= native:
        warnings.append(f"image size {built.image_size} px is far below the {native} px the "
                        f"source weights were trained at; their features degrade — try "
                        f"--image-size {min(native, built.image_size * 4)} or more")
    source = target = None
    if job.source_data is not None:  # train and val: a UDA job trains and selects on it
        source = load_splits(catalog, job.source_data, job.seed).with_transforms(
            {"train": transforms["train"], "val": transforms["val"]})
    if getattr(job, "target_data", None) is not None:  # its train split, labels unused
        target = load_splits(catalog, job.target_data, job.seed,
                             labeled=False).with_transforms({"train": transforms["train"]})
    return Prepared(job, bundle, built, transforms, source, target=target, warnings=warnings)
