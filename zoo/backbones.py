"""Backbones as zoo sees them, whatever provider built them.

A provider (see :class:`BackboneProvider`) returns a :class:`Backbone`: a module whose
``forward`` gives pooled features of width ``feature_dim``, holding the provider's model as
``body`` and the source classifier it came with as ``source_classifier`` (kept, frozen: LwF,
LEEP and weight checks need the source model's outputs).  :class:`TransferModel` puts a head
on top.  Importing this module imports torch; providers import it only inside ``create``.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from zoo.errors import WeightsError


@dataclass
class PretrainedConfig:
    """Preprocessing the source weights expect (from timm's / torchvision's metadata)."""

    input_size: int = 224
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    crop_pct: float = 0.875
    channels: int = 3  # input channels; mean/std have one value each (zoo.engine.channels)

    def as_dict(self) -> dict:
        return {"input_size": self.input_size, "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "crop_pct": self.crop_pct,
                "channels": self.channels}


class BackboneProvider(Protocol):
    """What ``register(name, provider)`` in ``register_backbone_providers`` expects.

    Listing must be cheap (no model is built); ``create`` may import torch/timm.
    """

    def list_models(self, pretrained: bool = False) -> list[str]:
        """Architecture names; with ``pretrained`` only those with weights, as ``arch.tag``."""

    def info(self, arch: str) -> dict:
        """Metadata: feature_dim, params, pretrained tags, PretrainedConfig.as_dict(), ..."""

    def create(self, arch: str, tag: str | None = None, pretrained: bool = False) -> "Backbone":
        """Build the backbone; ``pretrained`` downloads/loads the provider's own weights."""

    def layer_groups(self, backbone: "Backbone") -> list[tuple[str, list[str]]]:
        """Ordered input → output: ``(group name, [parameter names of backbone.body])``."""

    def version(self) -> str:
        """Changes whenever the model list may change (e.g. the library's version)."""


class Backbone(nn.Module):
    """A feature extractor with its source classifier kept aside.

    :param body: module mapping images to features ``(N, feature_dim)``.
    :param feature_dim: width of those features.
    :param source_classifier: the source task's classifier (features → source logits).
    :param classifier_name: the classifier's attribute path in the provider's original
        model ("fc", "classifier.1", ...): maps original state-dict keys onto this module.
    """

    def __init__(self, body: nn.Module, feature_dim: int, *, name: str, provider: str,
                 source_classifier: nn.Module | None = None, classifier_name: str | None = None,
                 pretrained_cfg: PretrainedConfig | None = None, num_source_classes: int = 0):
        super().__init__()
        self.body = body
        self.source_classifier = source_classifier
        self.feature_dim = int(feature_dim)
        self.name = name
        self.provider = provider
        self.classifier_name = classifier_name
        self.pretrained_cfg = pretrained_cfg or PretrainedConfig()
        self.num_source_classes = num_source_classes
        if source_classifier is not None:
            source_classifier.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out.flatten(1) if out.dim() > 2 else out

    def source_logits(self, features: torch.Tensor) -> torch.Tensor:
        if self.source_classifier is None:
            raise WeightsError(f"{self.provider}:{self.name} has no source classifier")
        return self.source_classifier(features)

    # -- state dicts in the provider's original naming -------------------------------------
    def _to_local(self, key: str) -> str:
        cn = self.classifier_name
        if cn and (key.startswith(cn + ".")):
            return "source_classifier." + key[len(cn) + 1:]
        return "body." + key

    def load_source_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True):
        """Load weights named as in the provider's original model (``fc.weight``, ...)."""
        local = {self._to_local(k): v for k, v in state.items()}
        if self.source_classifier is None:
            local = {k: v for k, v in local.items() if not k.startswith("source_classifier.")}
        return self.load_state_dict(local, strict=strict)

    def source_state_dict(self) -> dict[str, torch.Tensor]:
        """The inverse of :meth:`load_source_state_dict`."""
        out = {}
        for key, value in self.state_dict().items():
            if key.startswith("body."):
                out[key[5:]] = value
            elif key.startswith("source_classifier.") and self.classifier_name:
                out[self.classifier_name + "." + key[len("source_classifier."):]] = value
        return out


class TransferModel(nn.Module):
    """Backbone + head: what zoo trains, saves and evaluates."""

    def __init__(self, backbone: Backbone, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


@dataclass
class LayerGroup:
    """Parameters of one stage of a backbone (input side first) plus the modules they live in."""

    name: str
    params: list[str]                     # names relative to the TransferModel
    modules: list[str] = field(default_factory=list)

    def numel(self, model: nn.Module) -> int:
        named = dict(model.named_parameters())
        return sum(named[p].numel() for p in self.params)


def default_layer_groups(body: nn.Module) -> list[tuple[str, list[str]]]:
    """Generic fallback: top-level children in order, expanding one big container.

    A model whose top level is mostly one ``Sequential`` (``features`` in VGG, MobileNet,
    EfficientNet, DenseNet) is split into that container's children instead.
    """
    def children_with_params(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
        return [(f"{prefix}{n}", m) for n, m in module.named_children()
                if any(True for _ in m.parameters())]

    items = children_with_params(body, "")
    for _ in range(3):
        total = sum(p.numel() for p in body.parameters()) or 1
        biggest = max(items, key=lambda nm: sum(p.numel() for p in nm[1].parameters()),
                      default=None)
        if biggest is None or len(items) >= 4:
            break
        share = sum(p.numel() for p in biggest[1].parameters()) / total
        inner = children_with_params(biggest[1], biggest[0] + ".")
        if share < 0.5 or len(inner) < 2:
            break
        idx = items.index(biggest)
        items = items[:idx] + inner + items[idx + 1:]
    groups = []
    owned = set()
    for name, module in items:
        names = [f"{name}.{p}" for p, _ in module.named_parameters()]
        owned.update(names)
        groups.append((name, names))
    rest = [n for n, _ in body.named_parameters() if n not in owned]
    if rest:  # parameters registered directly on the body (e.g. cls tokens)
        groups.insert(0, ("<root>", rest))
    return groups


def build_layer_groups(model: TransferModel, provider: BackboneProvider) -> list[LayerGroup]:
    """The backbone's groups from its provider, named relative to ``model``; then the head."""
    raw = provider.layer_groups(model.backbone)
    params = dict(model.named_parameters())
    groups: list[LayerGroup] = []
    seen: set[str] = set()
    for gname, names in raw:
        full = [f"backbone.body.{n}" for n in names]
        full = [n for n in full if n in params and n not in seen]
        seen.update(full)
        if full:
            groups.append(LayerGroup(str(gname), full, _owning_modules(full)))
    missing = [n for n in params if n.startswith("backbone.body.") and n not in seen]
    if missing:  # never silently leave parameters out of every group
        groups.append(LayerGroup("<other>", missing, _owning_modules(missing)))
    head = [n for n in params if n.startswith("head.")]
    groups.append(LayerGroup("head", head, _owning_modules(head)))
    return groups


def _owning_modules(param_names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(n.rsplit(".", 1)[0] for n in param_names))


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def describe(obj: Any) -> str:
    return (getattr(obj, "__doc__", "") or "").strip().splitlines()[0] if obj else ""
