"""Classifiers built from class names: the text tower of a vision-language backbone turns
prompts into class embeddings (CLIP's zero-shot classifier, Radford et al. 2021).

Backbone capability (duck-typed; the ``openclip`` provider has it): ``encode_text(list[str])
-> Tensor (N, feature_dim)`` in the space of the image features, and ``logit_scale`` (a float,
the model's learned temperature).  Head capability: ``init_from_text(class_embeddings,
logit_scale)`` (``linear`` has it; see zoo_heads.fitted).

Each class row is the L2-normalised mean of its L2-normalised prompt embeddings (prompt
ensembling in embedding space, §3.1.4 of the CLIP paper).  Used by the ``zero-shot`` strategy
and by ``head.init: text`` for every head-training strategy (WiSE-FT's zero-shot-initialised
fine-tuning, Wortsman et al. 2022).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from zoo.engine.prompts import class_prompts, load_templates
from zoo.errors import ConfigError


def has_text_tower(backbone) -> bool:
    return callable(getattr(backbone, "encode_text", None))


def require_text_tower(backbone, why: str) -> None:
    if not has_text_tower(backbone):
        raise ConfigError(f"{why} needs a vision-language backbone with a text tower, but "
                          f"{backbone.provider}:{backbone.name} has none — use a model such "
                          "as openclip:ViT-B-32 (pip install -e plugins/zoo-openclip)")


def require_text_head(head, head_name: str | None) -> None:
    if not callable(getattr(head, "init_from_text", None)):
        raise ConfigError(f"head '{head_name or type(head).__name__}' cannot be initialised "
                          "from text (it has no init_from_text) — use --head linear, or "
                          "head.init: random")


@torch.no_grad()
def text_classifier(backbone, prompts: list[list[str]], batch_size: int = 256) -> torch.Tensor:
    """``(num_classes, D)``: per class, normalize(mean(normalize(encode_text(prompts))))."""
    flat = [p for per_class in prompts for p in per_class]
    chunks = [backbone.encode_text(flat[i:i + batch_size]).float()
              for i in range(0, len(flat), batch_size)]
    emb = F.normalize(torch.cat(chunks), dim=-1)
    rows, start = [], 0
    for per_class in prompts:
        rows.append(emb[start:start + len(per_class)].mean(0))
        start += len(per_class)
    return F.normalize(torch.stack(rows), dim=-1)


def data_folder(job) -> Path | None:
    """Where a ``classes.yaml`` may live: the folder dataset's path, else the data root."""
    folder = job.data.path or job.data.root
    return Path(folder).expanduser() if folder else None


def init_head_from_text(model, classes: list, job, templates=None, log=None) -> dict:
    """Fill ``model.head`` with the text classifier of ``classes``; what was done, as a dict.

    ``templates``: None → ``job.head.templates`` → CLIP's 80 ImageNet templates.
    """
    require_text_tower(model.backbone, "a text-initialised head")
    require_text_head(model.head, job.head.name)
    chosen = load_templates(templates if templates is not None else job.head.templates)
    prompts = class_prompts(classes, chosen, data_folder(job))
    weights = text_classifier(model.backbone, prompts)
    scale = float(getattr(model.backbone, "logit_scale", 100.0))
    model.head.init_from_text(weights, scale)
    info = {"classes": len(classes), "templates": len(chosen),
            "prompts": sum(len(p) for p in prompts), "logit_scale": round(scale, 4)}
    if log is not None:
        log(f"head from text: {info['classes']} classes × {info['templates']} templates, "
            f"logit scale {scale:.2f}")
    return info


def apply_head_init(model, classes: list, job, log=None) -> dict | None:
    """What the pipeline calls after building the model: ``head.init: text`` → the text
    head; ``random`` → nothing (``None``)."""
    if getattr(job.head, "init", "random") != "text":
        return None
    return init_head_from_text(model, classes, job, log=log)
