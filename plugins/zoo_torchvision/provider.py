"""The torchvision backbone provider (classification models of ``torchvision.models``).

- Names: ``list_models()`` gives architectures; ``list_models(pretrained=True)`` gives
  ``arch.TAG`` for every weights enum entry (``resnet18.IMAGENET1K_V1``).  Tags are matched
  case-insensitively; ``DEFAULT`` works too.
- ``create`` splits off the source classifier generically: the *last* ``nn.Linear`` in the
  module tree (``fc``, ``classifier.1``, ``classifier.6``, ``heads.head``, ``head``) is
  deep-copied as ``source_classifier``, its path kept as ``classifier_name``, and replaced by
  ``nn.Identity`` in the body.  Anything before it stays in the body (dropout, maxvit's
  ``Linear+Tanh`` pre-logits, mobilenet_v3's ``Linear+Hardswish``), as in timm.  SqueezeNet has
  no Linear (its classifier is a 1×1 conv before the pooling): its ``classifier`` becomes a
  global average pool, and there is no source classifier.
- Models without weights are built with the configuration of their ``DEFAULT`` weights
  (or of the requested tag): class count, ``image_size`` (ViT), ``input_size`` (MaxViT),
  ``transform_input`` (GoogLeNet, Inception v3).  So weights imported later into a
  ``pretrained=False`` model behave exactly as hub-loaded ones.  Auxiliary heads of GoogLeNet
  and Inception v3 are removed, so ``forward`` always returns one tensor.
- Weights: torch.hub's cache (``$TORCH_HOME/hub/checkpoints``) is used offline; otherwise the
  download host is probed first (:mod:`zoo.weights.network`) so offline runs fail fast.

Only this module's functions import torch/torchvision (lazy-import rule).
"""
from __future__ import annotations

import copy
import importlib.metadata as md
import os
from urllib.parse import urlsplit

from zoo.errors import (PluginError, UnknownComponentError, WeightsError, did_you_mean,
                        one_line)
from zoo.weights.network import unreachable_message, url_reachable

PROVIDER = "torchvision"
_AUX = {"googlenet": ("aux1", "aux2"), "inception_v3": ("AuxLogits",)}
_RESNETS = ("resnet", "resnext", "wide_resnet")


class TorchvisionProvider:
    """``zoo.backbones.BackboneProvider`` for torchvision classification models."""

    name = PROVIDER

    # -- listing ---------------------------------------------------------------------------
    def list_models(self, pretrained: bool = False) -> list[str]:
        import torchvision.models as tvm  # lazy: torchvision

        archs = tvm.list_models(module=tvm)
        if not pretrained:
            return list(archs)
        return [f"{arch}.{entry.name}" for arch in archs for entry in _weights_enum(arch) or ()]

    def version(self) -> str:
        return f"torchvision-{md.version('torchvision')}"

    def info(self, arch: str) -> dict:
        import torch  # lazy: torch

        arch, tag = _split(arch)
        self._check_known(arch)
        enum = _weights_enum(arch)
        entry = _entry(arch, enum, tag)
        try:
            with torch.device("meta"):  # sizes only: no memory, no init cost
                model = _build(arch, entry, weights=None)
        except NotImplementedError:  # RegNet computes its widths with tensors in __init__
            model = _build(arch, entry, weights=None)
        _, _, feature_dim, _ = _split_classifier(model)
        metrics = {e.name: _metrics(e) for e in enum or ()}
        default = enum.DEFAULT.name if enum is not None and "DEFAULT" in enum.__members__ else None
        chosen = entry.name if entry is not None else default
        return {
            "provider": PROVIDER,
            "arch": arch,
            "feature_dim": feature_dim,
            "params": sum(p.numel() for p in model.parameters()),
            "pretrained_tags": [e.name for e in enum or ()],
            "default_tag": default,
            "pretrained_cfg": _zoo_cfg(entry).as_dict(),
            "num_source_classes": len(entry.meta.get("categories") or []) if entry else 0,
            "acc1": (metrics.get(chosen) or {}).get("acc@1"),
            "acc5": (metrics.get(chosen) or {}).get("acc@5"),
            "metrics": metrics,
        }

    # -- building --------------------------------------------------------------------------
    def create(self, arch: str, tag: str | None = None, pretrained: bool = False):
        if tag is None and "." in arch:
            arch, tag = _split(arch)
        self._check_known(arch)
        enum = _weights_enum(arch)
        entry = _entry(arch, enum, tag)
        name = f"{PROVIDER}:{arch}" + (f".{entry.name}" if tag and entry is not None else "")
        if not pretrained:
            model = _build(arch, entry, weights=None)
        else:
            if entry is None:
                raise WeightsError(f"torchvision has no pretrained weights for {name} — use "
                                   "`--weights none` or a timm model")
            _check_download_possible(entry.url, name)
            try:
                model = _build(arch, entry, weights=entry)
            except Exception as exc:  # network, hash mismatch, corrupt cache file
                raise WeightsError(f"could not load torchvision weights for {name} from "
                                   f"{entry.url}: {one_line(exc)} — delete a corrupt file in "
                                   "$TORCH_HOME/hub/checkpoints, or use `--weights none` / "
                                   f"`zoo weights import FILE --model {name}`") from None
        return _wrap(model, arch, entry)

    def layer_groups(self, backbone) -> list[tuple[str, list[str]]]:
        """Named stages where the family is known, else ``default_layer_groups``.

        ResNet/ResNeXt/Wide-ResNet: ``stem`` (conv1, bn1), ``layer1`` … ``layer4``.
        ViT: ``stem`` (conv_proj, class_token, pos_embedding), ``encoder_layer_0`` …,
        ``final`` (encoder.ln, heads' pre-logits if any).  VGG/AlexNet: ``block1`` … (the
        convolutions between max-pools), then ``fc6``, ``fc7``.  Everything else:
        :func:`zoo.backbones.default_layer_groups` (``features.0``, ``features.1``, … for the
        ``features``-Sequential families; module paths as names).
        """
        from zoo.backbones import default_layer_groups  # lazy: imports torch

        body = backbone.body
        names = [n for n, _ in body.named_parameters()]
        arch = getattr(backbone, "name", "")
        if arch.startswith(_RESNETS):
            return _prefix_groups(names, [("stem", ("conv1.", "bn1.")),
                                          *[(f"layer{i}", (f"layer{i}.",)) for i in range(1, 5)]])
        if arch.startswith("vit_"):
            layers = sorted({n.split(".")[2] for n in names if n.startswith("encoder.layers.")},
                            key=lambda s: int(s.rsplit("_", 1)[1]))
            return _prefix_groups(names, [
                ("stem", ("conv_proj.", "class_token", "encoder.pos_embedding")),
                *[(layer, (f"encoder.layers.{layer}.",)) for layer in layers],
                ("final", ("encoder.ln.", "heads."))])
        if arch.startswith(("vgg", "alexnet")):
            return _vgg_groups(body)
        return default_layer_groups(body)

    def _check_known(self, arch: str) -> None:
        import torchvision.models as tvm  # lazy: torchvision

        archs = tvm.list_models(module=tvm)
        if arch not in archs:
            raise UnknownComponentError(f"unknown torchvision model '{arch}'"
                                        f"{did_you_mean(arch, archs)}")


# -- helpers ----------------------------------------------------------------------------------
def _split(name: str) -> tuple[str, str | None]:
    arch, _, tag = name.partition(".")
    return arch, tag or None


def _weights_enum(arch: str):
    import torchvision.models as tvm  # lazy: torchvision

    try:
        return tvm.get_model_weights(arch)
    except (KeyError, ValueError):
        return None


def _entry(arch: str, enum, tag: str | None):
    """The weights entry for ``tag`` (case-insensitive), else DEFAULT, else None."""
    if enum is None:
        if tag:
            raise UnknownComponentError(f"torchvision model '{arch}' has no pretrained tags "
                                        f"(asked for '{tag}')")
        return None
    members = enum.__members__
    if not tag:
        return members.get("DEFAULT")
    for key, value in members.items():
        if key.lower() == tag.lower():
            return value
    tags = [e.name for e in enum]
    raise UnknownComponentError(f"unknown tag '{tag}' for torchvision model '{arch}'"
                                + (did_you_mean(tag.upper(), tags) or f" (tags: {', '.join(tags)})"))


def _build(arch: str, entry, weights):
    """``torchvision.models.get_model`` with the builder arguments ``entry`` implies.

    With ``weights`` the builder sets them itself (and would reject conflicting values).
    """
    import torchvision.models as tvm  # lazy: torchvision

    kwargs: dict = {}
    if weights is None:
        if entry is not None:
            kwargs["num_classes"] = len(entry.meta["categories"])
            if arch.startswith("vit_"):
                kwargs["image_size"] = entry.meta["min_size"][0]
            if arch.startswith("maxvit"):
                kwargs["input_size"] = tuple(entry.meta["min_size"])
        if arch in _AUX:
            kwargs.update(aux_logits=False, init_weights=True,
                          transform_input=entry is not None)
    model = tvm.get_model(arch, weights=weights, **kwargs)
    if arch in _AUX:  # forward must return one tensor, also in train mode
        model.aux_logits = False
        for attr in _AUX[arch]:
            setattr(model, attr, None)
    return model


def _split_classifier(model):
    """``(path, classifier, feature_dim, replacement)`` of ``model``'s final classifier.

    The last ``nn.Linear`` in definition order is the classifier for every torchvision
    classification model; without one (SqueezeNet) the top-level child holding the last
    ``Conv2d`` becomes a global average pool and ``classifier`` is ``None``.
    """
    from torch import nn  # lazy: torch

    last_linear = None
    last_conv = None
    for path, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last_linear = (path, module)
        elif isinstance(module, nn.Conv2d):
            last_conv = (path, module)
    if last_linear is not None:
        path, linear = last_linear
        return path, linear, linear.in_features, nn.Identity()
    if last_conv is None:
        raise PluginError(f"cannot find the classifier of {type(model).__name__}")
    path, conv = last_conv
    top = path.split(".")[0]
    pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    return top, None, conv.in_channels, pool


def _set_submodule(model, path: str, module) -> None:
    parent_path, _, leaf = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, leaf, module)


def _wrap(model, arch: str, entry):
    from zoo.backbones import Backbone  # lazy: imports torch

    path, classifier, feature_dim, replacement = _split_classifier(model)
    source = copy.deepcopy(classifier) if classifier is not None else None
    num_classes = classifier.out_features if classifier is not None else 0
    _set_submodule(model, path, replacement)
    backbone = Backbone(model, feature_dim, name=arch, provider=PROVIDER,
                        source_classifier=source, classifier_name=path,
                        pretrained_cfg=_zoo_cfg(entry), num_source_classes=num_classes)
    backbone.tag = entry.name if entry is not None else None
    return backbone


def _zoo_cfg(entry):
    """PretrainedConfig from the entry's eval transforms (resize → center crop → normalize)."""
    from zoo.backbones import PretrainedConfig  # lazy: imports torch

    if entry is None:
        return PretrainedConfig()
    tf = entry.transforms()
    crop = _first(getattr(tf, "crop_size", None)) or 224
    resize = _first(getattr(tf, "resize_size", None)) or crop
    interp = getattr(tf, "interpolation", None)
    interp = getattr(interp, "value", None) or str(interp or "bilinear")
    return PretrainedConfig(input_size=int(crop),
                            mean=tuple(getattr(tf, "mean", PretrainedConfig.mean)),
                            std=tuple(getattr(tf, "std", PretrainedConfig.std)),
                            interpolation=str(interp).lower(),
                            crop_pct=round(float(crop) / float(resize), 4))


def _first(value):
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


def _metrics(entry) -> dict:
    for values in (entry.meta.get("_metrics") or {}).values():
        return {k: v for k, v in values.items() if isinstance(v, (int, float))}
    return {}


def _prefix_groups(names: list[str], spec) -> list[tuple[str, list[str]]]:
    groups = []
    claimed: set[str] = set()
    for group, prefixes in spec:
        members = [n for n in names if n not in claimed and n.startswith(prefixes)]
        claimed.update(members)
        if members:
            groups.append((group, members))
    rest = [n for n in names if n not in claimed]
    if rest:  # never drop a parameter: anything unforeseen joins the last group
        if groups:
            groups[-1] = (groups[-1][0], groups[-1][1] + rest)
        else:
            groups.append(("body", rest))
    return groups


def _vgg_groups(body) -> list[tuple[str, list[str]]]:
    from torch import nn  # lazy: torch

    groups, current = [], []
    for idx, layer in body.features.named_children():
        current += [f"features.{idx}.{p}" for p, _ in layer.named_parameters()]
        if isinstance(layer, nn.MaxPool2d) and current:
            groups.append((f"block{len(groups) + 1}", current))
            current = []
    if current:
        groups.append((f"block{len(groups) + 1}", current))
    fcs = [(idx, [f"classifier.{idx}.{p}" for p, _ in layer.named_parameters()])
           for idx, layer in body.classifier.named_children()]
    for i, (_, names) in enumerate([f for f in fcs if f[1]]):
        groups.append((f"fc{6 + i}", names))
    claimed = {n for _, ns in groups for n in ns}
    rest = [n for n, _ in body.named_parameters() if n not in claimed]
    if rest:  # never drop a parameter
        groups.append(("final", rest))
    return groups


def _check_download_possible(url: str, name: str) -> None:
    """Raise WeightsError fast when the file is not cached and its host is unreachable."""
    import torch.hub  # lazy: torch

    cached = os.path.join(torch.hub.get_dir(), "checkpoints",
                          os.path.basename(urlsplit(url).path))
    if os.path.isfile(cached):
        return  # torch.hub loads it without network
    if not url_reachable(url):
        raise WeightsError(unreachable_message(name, urlsplit(url).hostname or url))
