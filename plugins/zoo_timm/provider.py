"""The timm backbone provider.

- Names: ``list_models()`` gives timm's architectures; ``list_models(pretrained=True)`` gives
  ``arch.tag`` for every pretrained weight set (timm's own naming).
- ``create`` keeps timm's model whole as ``Backbone.body`` after ``reset_classifier(0)`` (so it
  returns pooled, pre-logits features) and keeps a deep copy of the source classifier, named by
  its attribute path in the timm model (``fc``, ``classifier``, ``head.fc``): the original
  timm state dict therefore loads with ``Backbone.load_source_state_dict``.
- Weights: a copy already in the Hugging Face (or torch hub) cache is loaded without network;
  otherwise the hub is probed first (:mod:`zoo.weights.network`) so that offline runs fail in about a
  second with a :class:`~zoo.errors.WeightsError` instead of after ~46 s of hub retries.
- Layer groups come from timm's ``group_matcher(coarse=True)``; see :meth:`layer_groups`.

Only this module's functions import torch/timm (lazy-import rule).
"""
from __future__ import annotations

import copy
import importlib.metadata as md
import os
import re
from urllib.parse import urlsplit

from zoo import settings
from zoo.errors import UnknownComponentError, WeightsError, did_you_mean, one_line
from zoo.weights.local import hf_cached_file
from zoo.weights.network import offline_reason, unreachable_message, url_reachable

PROVIDER = "timm"


class TimmProvider:
    """``zoo.backbones.BackboneProvider`` for timm models."""

    name = PROVIDER

    # -- listing ---------------------------------------------------------------------------
    def list_models(self, pretrained: bool = False) -> list[str]:
        import timm  # lazy: timm

        return list(timm.list_models(pretrained=bool(pretrained)))

    def version(self) -> str:
        # importlib.metadata, not timm.__version__: computing the cache key must not import timm
        return f"timm-{md.version('timm')}"

    def info(self, arch: str) -> dict:
        import timm  # lazy: timm

        arch, tag = _split(arch)
        self._check_known(arch, tag)
        tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{arch}.*")]
        cfg = _pretrained_cfg_dict(f"{arch}.{tag}" if tag else arch)
        model = _build_cheap(f"{arch}.{tag}" if tag else arch)
        classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
        classifier = classifier if hasattr(classifier, "parameters") else None
        return {
            "provider": PROVIDER,
            "arch": arch,
            "feature_dim": _feature_dim(model, classifier),
            "params": sum(p.numel() for p in model.parameters()),
            "pretrained_tags": tags,
            "default_tag": tags[0] if tags else None,
            "pretrained_cfg": _zoo_cfg(cfg).as_dict(),
            "num_source_classes": int(getattr(model, "num_classes", 0) or 0),
            "classifier": _classifier_path(model, classifier, cfg),
            "license": cfg.get("license"),
            "paper": cfg.get("paper_ids") or cfg.get("paper_name"),
        }

    # -- building --------------------------------------------------------------------------
    def create(self, arch: str, tag: str | None = None, pretrained: bool = False):
        import timm  # lazy: timm

        if tag is None and "." in arch:
            arch, tag = _split(arch)
        self._check_known(arch, tag)
        name = f"{arch}.{tag}" if tag else arch
        if not pretrained:
            model = timm.create_model(name, pretrained=False)
            return _wrap(model, arch, tag)

        overlay, must_probe = _weights_source(name, arch)
        if must_probe is not None and not _reachable(must_probe):
            host = urlsplit(must_probe).hostname or must_probe
            raise WeightsError(unreachable_message(f"{PROVIDER}:{name}", host))
        try:
            model = timm.create_model(name, pretrained=True,
                                      **({"pretrained_cfg_overlay": overlay} if overlay else {}))
        except Exception as exc:  # network, cache, hash or format: all mean "no weights"
            if overlay is None and offline_reason():  # the offline HF client found no copy
                raise WeightsError(unreachable_message(f"{PROVIDER}:{name}", "the hub")) from None
            raise WeightsError(f"could not load timm weights for {PROVIDER}:{name}: "
                               f"{one_line(exc)} — use `--weights none` or "
                               f"`zoo weights import FILE --model {PROVIDER}:{name}`") from None
        return _wrap(model, arch, tag)

    def layer_groups(self, backbone) -> list[tuple[str, list[str]]]:
        """timm's coarse parameter groups, input → output, with readable names.

        Each group is named after the ``group_matcher`` key its first parameter matched
        (``stem``, ``blocks``, ...); a key spanning several groups gets an index
        (``blocks.0``, ``blocks.1``, ...).  Parameters no matcher entry claims (timm puts them
        last: the final norm / ``conv_head`` before the removed classifier) form ``final``.
        Models without ``group_matcher`` use :func:`zoo.backbones.default_layer_groups`.
        """
        from zoo.backbones import default_layer_groups  # lazy: imports torch

        body = backbone.body
        matcher_fn = getattr(body, "group_matcher", None)
        if matcher_fn is None:
            return default_layer_groups(body)
        try:
            matcher = matcher_fn(coarse=True)
            from timm.models import group_parameters  # lazy: optional dependency (timm)

            grouped = group_parameters(body, matcher)
        except Exception:  # a model whose matcher does not fit its modules
            return default_layer_groups(body)
        groups = [list(grouped[k]) for k in sorted(grouped)]
        names = _group_names(groups, matcher)
        return list(zip(names, groups))

    # -- helpers ---------------------------------------------------------------------------
    def _check_known(self, arch: str, tag: str | None) -> None:
        import timm  # lazy: timm

        if not timm.is_model(arch):
            hint = did_you_mean(arch, timm.list_models())
            raise UnknownComponentError(f"unknown timm model '{arch}'{hint}")
        if tag:
            tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{arch}.*")]
            if tag not in tags:
                hint = did_you_mean(tag, tags) or (f" (tags: {', '.join(tags)})" if tags else
                                                   " (it has no pretrained tags)")
                raise UnknownComponentError(f"unknown tag '{tag}' for timm model '{arch}'{hint}")


def _split(name: str) -> tuple[str, str | None]:
    arch, _, tag = name.partition(".")
    return arch, tag or None


def _pretrained_cfg_dict(name: str) -> dict:
    from timm.models import get_pretrained_cfg  # lazy: timm

    cfg = get_pretrained_cfg(name)
    return cfg.to_dict() if cfg is not None else {}


def _zoo_cfg(cfg: dict):
    from zoo.backbones import PretrainedConfig  # lazy: imports torch

    size = cfg.get("input_size") or (3, 224, 224)
    return PretrainedConfig(
        input_size=int(size[-1]),
        mean=tuple(cfg.get("mean") or PretrainedConfig.mean),
        std=tuple(cfg.get("std") or PretrainedConfig.std),
        interpolation=str(cfg.get("interpolation") or "bilinear"),
        crop_pct=float(cfg.get("crop_pct") or 0.875),
    )


def _build_cheap(name: str):
    """The model without weights, on the meta device when the model allows it (no memory)."""
    import timm  # lazy: timm
    import torch  # lazy: torch

    try:
        with torch.device("meta"):
            return timm.create_model(name, pretrained=False)
    except Exception:  # some models compute in __init__ (e.g. .item()), which meta cannot
        return timm.create_model(name, pretrained=False)


def _classifier_path(model, classifier, cfg: dict) -> str | None:
    """Attribute path of the classifier in ``model`` (found by identity; else timm's cfg)."""
    for path, module in model.named_modules():
        if path and module is classifier:
            return path
    name = cfg.get("classifier")
    return name if isinstance(name, str) else None


def _feature_dim(model, classifier) -> int:
    in_features = getattr(classifier, "in_features", None)
    if isinstance(in_features, int) and in_features > 0:
        return in_features
    # timm: head_hidden_size is the width forward_head gives once the classifier is removed
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


def _wrap(model, arch: str, tag: str | None):
    from zoo.backbones import Backbone  # lazy: imports torch

    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    if not hasattr(model, "reset_classifier"):
        # timm's multimodal "*_enc" encoders: token outputs, no pooled-feature API
        raise UnknownComponentError(
            f"timm model '{arch}' is an encoder without timm's classifier API "
            "(reset_classifier), so it cannot be a zoo backbone; pick a classification model")
    classifier = model.get_classifier()
    if not hasattr(classifier, "parameters"):  # distilled models return (head, head_dist)
        classifier = None
    classifier_name = _classifier_path(model, classifier, cfg) if classifier is not None else None
    has_params = classifier is not None and any(True for _ in classifier.parameters())
    source = copy.deepcopy(classifier) if has_params else None
    feature_dim = _feature_dim(model, classifier)
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    model.reset_classifier(0)
    backbone = Backbone(model, feature_dim, name=arch, provider=PROVIDER,
                        source_classifier=source, classifier_name=classifier_name,
                        pretrained_cfg=_zoo_cfg(cfg),
                        num_source_classes=num_classes if source is not None else 0)
    backbone.tag = tag or cfg.get("tag")
    return backbone


# -- weights --------------------------------------------------------------------------------
def _weights_source(name: str, arch: str) -> tuple[dict | None, str | None]:
    """``(pretrained_cfg_overlay, url_to_probe)`` for loading ``name``'s weights.

    A cached copy (HF hub cache, then torch hub cache) becomes a ``file`` overlay: timm then
    loads it without touching the network.  Otherwise the URL whose host must be reachable is
    returned (``None`` when timm should just be tried, e.g. HF_HUB_OFFLINE lets the hub
    client answer from its own cache quickly).
    """
    cfg = _pretrained_cfg_dict(name)
    hf_id, url = cfg.get("hf_hub_id"), cfg.get("url")
    if cfg.get("state_dict") is not None or cfg.get("file"):
        return None, None
    if not hf_id and not url:
        raise WeightsError(f"timm has no pretrained weights for {PROVIDER}:{name} — pick a "
                           f"tag from `zoo info {PROVIDER}:{arch}` or use `--weights none`")
    plain_load = not cfg.get("custom_load")
    if hf_id and _hf_available():
        cached = _hf_cached_file(hf_id, cfg.get("hf_hub_filename"))
        if cached and plain_load:
            return {"file": cached, "source": ""}, None

        if (offline_reason() or "").startswith("HF_HUB_OFFLINE") and _hf_client_offline():
            return None, None  # the offline HF client answers from its cache or fails fast
        return None, settings.text("HF_ENDPOINT", "https://huggingface.co")
    if url:
        cached = _torch_hub_cached_file(url)
        if cached and plain_load:
            return {"file": cached, "source": "", "hf_hub_id": None}, None
        return None, url
    return None, None


def _reachable(url: str) -> bool:
    return url_reachable(url)


def _hf_available() -> bool:
    try:
        import huggingface_hub  # noqa: F401  # lazy: optional dependency (huggingface_hub)
    except ImportError:
        return False
    return True


def _hf_client_offline() -> bool:
    # The HF client reads HF_HUB_OFFLINE once, at import: set later, it would still go online.
    from huggingface_hub import constants  # lazy: huggingface_hub

    return bool(constants.is_offline_mode())


def _hf_cached_file(hf_id: str, filename: str | None) -> str | None:
    """Path of the weights in the local HF cache, or None (never touches the network)."""
    repo, _, revision = hf_id.partition("@")
    candidates = [filename] if filename else ["model.safetensors", "pytorch_model.bin"]
    return hf_cached_file(repo, candidates, revision or None)


def _torch_hub_cached_file(url: str) -> str | None:
    import torch.hub  # lazy: torch

    path = os.path.join(torch.hub.get_dir(), "checkpoints",
                        os.path.basename(urlsplit(url).path))
    return path if os.path.isfile(path) else None


def _group_names(groups: list[list[str]], matcher) -> list[str]:
    if not isinstance(matcher, dict):
        return [f"group{i}" for i in range(len(groups))]
    patterns = []
    for key, spec in matcher.items():
        if spec is None:
            continue
        specs = [s[0] for s in spec] if isinstance(spec, (list, tuple)) else [spec]
        patterns += [(key, re.compile(s)) for s in specs]

    def key_of(param: str) -> str:
        for key, pattern in patterns:
            if pattern.match(param):
                return key
        return "final"

    keys = [key_of(g[0]) if g else "final" for g in groups]
    counts = {k: keys.count(k) for k in keys}
    seen: dict[str, int] = {}
    names = []
    for k in keys:
        if counts[k] == 1:
            names.append(k)
        else:
            names.append(f"{k}.{seen.get(k, 0)}")
            seen[k] = seen.get(k, 0) + 1
    return names
