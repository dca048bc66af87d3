"""The ``openclip`` backbone provider: listing, info, building, weights, layer groups.

Names: ``list_models()`` gives open_clip's architectures (``ViT-B-32``, ``RN50``, ...; also
configurations added at run time with ``open_clip.add_model_config``);
``list_models(pretrained=True)`` gives ``arch.tag`` for every pretrained weight set.  A bare
architecture with ``--weights auto|pretrained`` uses its first listed tag.

Weights (``create(pretrained=True)``): a copy already in the Hugging Face cache (or, for
URL-only tags, open_clip's ``~/.cache/clip``) is loaded without network; otherwise the hub is
probed first (:mod:`zoo.weights.network`) so that offline runs fail in about a second — open_clip
alone retries for ~46 s — and only then does ``open_clip.create_model_and_transforms(arch,
pretrained=tag)`` download.  Checkpoints load with ``weights_only=True`` (no pickle code).

Only this module's functions import torch / open_clip (lazy-import rule).
"""
from __future__ import annotations

import hashlib
import importlib.metadata as md
import logging
import os
import sys

from zoo import settings
from zoo.errors import UnknownComponentError, WeightsError, did_you_mean, one_line
from zoo.weights.local import hf_cached_file
from zoo.weights.network import offline_reason, unreachable_message, url_reachable

PROVIDER = "openclip"
HF_DEFAULT_FILE = "open_clip_pytorch_model.bin"


class OpenClipProvider:
    """``zoo.backbones.BackboneProvider`` for open_clip models."""

    name = PROVIDER

    # -- listing ---------------------------------------------------------------------------
    def list_models(self, pretrained: bool = False) -> list[str]:
        import open_clip  # lazy: open_clip imports torch

        if pretrained:
            return [f"{arch}.{tag}" for arch, tag in open_clip.list_pretrained()]
        return list(open_clip.list_models())

    def version(self) -> str:
        """open_clip's version; plus a digest of its configurations once open_clip is
        imported (``add_model_config`` may have added some: a cached list must not hide them)."""
        base = f"open_clip-{md.version('open_clip_torch')}"
        if "open_clip" not in sys.modules:  # nothing can have been added without importing it
            return base
        from open_clip import factory  # lazy: already imported (checked above)

        names = ",".join(sorted(getattr(factory, "_MODEL_CONFIGS", {})))
        return f"{base}-{hashlib.sha256(names.encode()).hexdigest()[:10]}"

    def info(self, arch: str) -> dict:
        import open_clip  # lazy: open_clip imports torch
        import torch  # lazy: torch

        arch, tag = _split(arch)
        self._check_known(arch, tag)
        tags = open_clip.list_pretrained_tags_by_model(arch)
        cfg = open_clip.get_model_config(arch) or {}
        try:
            with torch.device("meta"):  # count parameters without allocating them
                model = _build(arch, tag or (tags[0] if tags else None))
        except Exception:  # a tower that computes in __init__, which meta cannot
            model = _build(arch, tag or (tags[0] if tags else None))
        visual = sum(p.numel() for p in model.visual.parameters())
        total = sum(p.numel() for p in model.parameters())
        return {
            "provider": PROVIDER, "arch": arch,
            "feature_dim": int(cfg.get("embed_dim") or _embed_dim(model)),
            "params": visual, "text_params": total - visual,
            "pretrained_tags": tags, "default_tag": tags[0] if tags else None,
            "pretrained_cfg": _zoo_cfg(model, arch, tag or (tags[0] if tags else None)).as_dict(),
            "num_source_classes": 0, "classifier": None, "text_tower": True,
            "paper": "Radford et al. 2021 (CLIP); Cherti et al. 2023 (OpenCLIP)",
        }

    # -- building --------------------------------------------------------------------------
    def create(self, arch: str, tag: str | None = None, pretrained: bool = False):
        if tag is None and "." in arch:
            arch, tag = _split(arch)
        self._check_known(arch, tag)
        if not pretrained:
            return _wrap(_build(arch, tag), arch, tag)
        import open_clip  # lazy: open_clip imports torch

        if tag is None:
            tags = open_clip.list_pretrained_tags_by_model(arch)
            if not tags:
                raise WeightsError(f"open_clip has no pretrained weights for {PROVIDER}:{arch} "
                                   "— use `--weights none`")
            tag = tags[0]
        name = f"{PROVIDER}:{arch}.{tag}"
        cfg = open_clip.get_pretrained_cfg(arch, tag) or {}
        cached = _cached_checkpoint(cfg)
        if cached is not None:
            return _wrap(_build(arch, tag, checkpoint=cached), arch, tag)
        _check_network(cfg, name)
        try:
            model, _, _ = open_clip.create_model_and_transforms(
                arch, pretrained=tag, force_quick_gelu=bool(cfg.get("quick_gelu", False)))
        except Exception as exc:  # network, cache, hash or format: all mean "no weights"
            raise WeightsError(f"could not load open_clip weights for {name}: {one_line(exc)} "
                               f"— use `--weights none` or `zoo weights import FILE --model "
                               f"{PROVIDER}:{arch}`") from None
        return _wrap(model, arch, tag)

    def layer_groups(self, backbone) -> list[tuple[str, list[str]]]:
        """ViT towers: ``embed`` (patch embedding, class token, positions, ``ln_pre``), one
        group per transformer block (``blocks.0`` ...), ``post`` (``ln_post``, projection).
        Other towers (ResNets, timm towers) use :func:`zoo.backbones.default_layer_groups`."""
        from zoo.backbones import default_layer_groups  # lazy: zoo.backbones imports torch

        body = backbone.body
        blocks = getattr(getattr(body, "transformer", None), "resblocks", None)
        if blocks is None:
            return default_layer_groups(body)
        names = [n for n, _ in body.named_parameters()]
        block_groups = [(f"blocks.{i}", [n for n in names
                                         if n.startswith(f"transformer.resblocks.{i}.")])
                        for i in range(len(blocks))]
        in_blocks = {n for _, g in block_groups for n in g}
        post = [n for n in names if n not in in_blocks
                and n.split(".")[0] in ("ln_post", "proj", "attn_pool", "head")]
        embed = [n for n in names if n not in in_blocks and n not in post]
        return [("embed", embed), *block_groups, ("post", post)]

    # -- helpers ---------------------------------------------------------------------------
    def _check_known(self, arch: str, tag: str | None) -> None:
        import open_clip  # lazy: open_clip imports torch

        models = open_clip.list_models()
        if arch not in models:
            raise UnknownComponentError(f"unknown open_clip model '{arch}'"
                                        f"{did_you_mean(arch, models)}")
        if tag:
            tags = open_clip.list_pretrained_tags_by_model(arch)
            if tag not in tags:
                hint = did_you_mean(tag, tags) or (f" (tags: {', '.join(tags)})" if tags else
                                                   " (it has no pretrained tags)")
                raise UnknownComponentError(f"unknown tag '{tag}' for open_clip model "
                                            f"'{arch}'{hint}")


def _split(name: str) -> tuple[str, str | None]:
    arch, _, tag = name.partition(".")
    return arch, tag or None


def _build(arch: str, tag: str | None, checkpoint: str | None = None):
    """The CLIP model, random (``checkpoint`` None) or from a local checkpoint file."""
    import open_clip  # lazy: open_clip imports torch

    cfg = (open_clip.get_pretrained_cfg(arch, tag) or {}) if tag else {}
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # "No pretrained weights loaded": zoo reports weights itself
    try:
        # the openai tags were trained with QuickGELU: the architecture must match the weights
        return open_clip.create_model(arch, pretrained=checkpoint,
                                      force_quick_gelu=bool(cfg.get("quick_gelu", False)))
    finally:
        logging.disable(previous)


def _embed_dim(model) -> int:
    proj = getattr(model, "text_projection", None)
    if proj is not None and hasattr(proj, "shape"):
        return int(proj.shape[-1])
    return int(getattr(model, "embed_dim", 0) or 0)


def _zoo_cfg(model, arch: str, tag: str | None):
    """Preprocessing: the tag's mean/std/interpolation over the tower's own config.

    open_clip resizes the shortest side then center-crops (``crop_pct`` 1.0); ``squash``
    models (SigLIP) resize without cropping, which a square input makes the same."""
    import open_clip  # lazy: open_clip imports torch

    from zoo.backbones import PretrainedConfig  # lazy: zoo.backbones imports torch

    pre = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    if tag:
        pre.update({k: v for k, v in (open_clip.get_pretrained_cfg(arch, tag) or {}).items()
                    if k in ("mean", "std", "interpolation")})
    size = pre.get("size") or getattr(model.visual, "image_size", 224)
    size = size[0] if isinstance(size, (tuple, list)) else size
    return PretrainedConfig(
        input_size=int(size),
        mean=tuple(pre.get("mean") or open_clip.OPENAI_DATASET_MEAN),
        std=tuple(pre.get("std") or open_clip.OPENAI_DATASET_STD),
        interpolation=str(pre.get("interpolation") or "bicubic"), crop_pct=1.0)


def _wrap(model, arch: str, tag: str | None):
    from .backbone import ClipBackbone  # lazy: torch

    backbone = ClipBackbone(model, name=arch, provider=PROVIDER,
                            pretrained_cfg=_zoo_cfg(model, arch, tag))
    backbone.tag = tag
    return backbone


# -- weights --------------------------------------------------------------------------------
def _hf_parts(cfg: dict) -> tuple[str, str] | None:
    hub = cfg.get("hf_hub") or ""
    if not hub:
        return None
    repo, filename = os.path.split(hub)
    return repo, filename or HF_DEFAULT_FILE


def _cached_checkpoint(cfg: dict) -> str | None:
    """A local copy of the tag's checkpoint (HF cache, then ~/.cache/clip), or None."""
    parts = _hf_parts(cfg)
    if parts is not None:
        repo, filename = parts  # as open_clip: safetensors first
        return hf_cached_file(repo, [*_safe_alternatives(filename), filename])
    url = cfg.get("url") or ""
    if url:
        path = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        return path if os.path.isfile(path) else None
    return None


def _safe_alternatives(filename: str) -> list[str]:
    """The safetensors names open_clip tries before ``filename`` (its own rule)."""
    from open_clip import pretrained  # lazy: open_clip imports torch

    alternatives = getattr(pretrained, "_get_safe_alternatives", None)
    if alternatives is not None:
        return list(alternatives(filename))
    if filename == HF_DEFAULT_FILE:
        return ["open_clip_model.safetensors"]
    return [filename.rsplit(".", 1)[0] + ".safetensors"] if filename.endswith((".bin", ".pth")) \
        else []


def _check_network(cfg: dict, name: str) -> None:
    """Fail fast (well under a second offline) when the download could not work."""
    parts = _hf_parts(cfg)
    url = settings.text("HF_ENDPOINT", "https://huggingface.co") if parts else cfg.get("url")
    if not url:
        raise WeightsError(f"open_clip has no download location for {name} — use "
                           "`--weights none` or `zoo weights import FILE`")
    if offline_reason() is None and url_reachable(url):
        return
    host = "the Hugging Face hub" if parts else url
    files = " ".join(_safe_alternatives(parts[1]) or [parts[1]]) if parts else ""
    where = (f"`hf download {parts[0]} {files}` (fills the HF cache; copy it, or set "
             "HF_HUB_CACHE to it, here)" if parts else f"a download of {url} into ~/.cache/clip")
    raise WeightsError(unreachable_message(name, host) + f"; where there is network, run "
                       f"`zoo weights pull {name}` or {where}")
