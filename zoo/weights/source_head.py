"""The source classifier that comes with weights: kept when they hold one, dropped when not.

A provider builds its backbone's ``source_classifier`` for its *own* hub weights.  Weights
from a file or zoo's store may hold another one (a fine-tuned source task: another class
count), one the provider did not build (some keep a classifier only for hub weights), or
none at all (a headless export).  LwF and LEEP need the classifier *of the loaded weights*,
so it is rebuilt from the tensors (an ``nn.Linear`` shaped by them), and the provider's
random one is dropped when the weights have none: distilling a random classifier would look
like LwF without being it, so ``lwf`` says "has none" instead.

Functions take state dicts in either naming: the provider's (``fc.weight``, ``prefix`` =
``"fc."``) or the backbone's own (``source_classifier.weight``, ``prefix`` = :data:`LOCAL`).
"""
from __future__ import annotations

LOCAL = "source_classifier."


def classifier_prefix(backbone, state: dict, expected: dict, local: bool) -> str | None:
    """The key prefix of the classifier tensors in ``state``, or None when it has none.

    The provider's ``classifier_name`` when it has one; otherwise (a provider that names no
    classifier) the single ``X.weight``/``X.bias`` pair outside the body whose weight maps
    ``feature_dim`` features to classes (``fc``, ``head``, ``classifier``, ...).
    """
    if local:
        return LOCAL
    if backbone.classifier_name:
        return backbone.classifier_name + "."
    found = []
    for key, value in state.items():
        if key in expected or not key.endswith(".weight") or getattr(value, "dim", None) is None:
            continue
        prefix = key[:-len("weight")]
        if value.dim() != 2 or int(value.shape[1]) != backbone.feature_dim:
            continue
        if all(k in (prefix + "weight", prefix + "bias") for k in state if k.startswith(prefix)):
            found.append(prefix)
    return found[0] if len(found) == 1 else None


def fit_source_classifier(backbone, state: dict, prefix: str) -> bool:
    """Shape ``backbone.source_classifier`` after ``state``'s classifier tensors.

    Returns True when the classifier now takes those tensors as they are (already the right
    shapes, or rebuilt as an ``nn.Linear`` from them); False when ``state`` holds no
    classifier this backbone can use (none, not a linear map, or another feature width).
    Sets ``classifier_name`` when the prefix was found rather than named by the provider.
    """
    own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    weight, bias = own.get("weight"), own.get("bias")
    if weight is None:
        return False
    current = backbone.source_classifier
    if current is not None and _shapes(current.state_dict()) == _shapes(own):
        return True
    if set(own) - {"weight", "bias"} or weight.dim() != 2 or (
            int(weight.shape[1]) != backbone.feature_dim) or (
            bias is not None and tuple(bias.shape) != (int(weight.shape[0]),)):
        return False
    from torch import nn  # lazy: torch

    linear = nn.Linear(int(weight.shape[1]), int(weight.shape[0]), bias=bias is not None)
    linear.requires_grad_(False)  # frozen, as providers keep it
    backbone.source_classifier = linear
    backbone.num_source_classes = int(weight.shape[0])
    if prefix != LOCAL and not backbone.classifier_name:
        backbone.classifier_name = prefix[:-1]
    return True


def drop_source_classifier(backbone, reason: str) -> None:
    """Remove a classifier that does not belong to the loaded weights (``reason`` says why)."""
    backbone.source_classifier = None
    backbone.num_source_classes = 0
    backbone.no_source_reason = reason


def match_saved_classifier(backbone, tensors: dict, prefix: str) -> None:
    """Before a strict load of a saved model: make the source classifier what was saved.

    ``tensors`` is the whole saved state; ``prefix`` where the classifier lives in it
    (``"backbone.source_classifier."`` in a run's ``model.safetensors``).  A run trained
    from weights with another classifier, or none, then reloads with its provider alone.
    """
    own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not own:
        if backbone.source_classifier is not None:
            drop_source_classifier(backbone, "the saved model has no source classifier")
        return
    fit_source_classifier(backbone, {LOCAL + k: v for k, v in own.items()}, LOCAL)


def _shapes(state: dict) -> dict:
    return {k: tuple(v.shape) for k, v in state.items()}
