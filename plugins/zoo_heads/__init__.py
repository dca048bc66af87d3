"""Built-in heads: ``linear`` (the default), ``mlp``, and the fitted ``ncm`` / ``knn``
(:mod:`.fitted`: filled in closed form by the training-free strategies).

Factories build ``torch.nn`` modules, so torch is imported inside them (lazy-import rule).
Each factory checks its own params first (a component validates what it is given), so
``hidden: -5`` or ``dropout: 7`` is a one-line ConfigError before anything trains.
"""
import math

from zoo.errors import ConfigError
from zoo.hookspecs import hookimpl


def _dropout(head: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or not 0 <= value < 1:
        raise ConfigError(f"head '{head}': 'dropout' must be a number in [0, 1), got {value!r}"
                          " (head.params.dropout)")
    return float(value)


def _count(head: str, key: str, value, low: int, high: int) -> int:
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        value = int(value)  # 512.0 from a YAML written by hand
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"head '{head}': '{key}' must be a whole number in {low}..{high}, got "
                          f"{value!r} (head.params.{key})")
    return value


def linear_head(in_features: int, num_classes: int, dropout: float = 0.0,
                normalize: bool = False):
    """One linear layer on the pooled features (optional dropout before it; ``normalize``:
    L2-normalised features, as CLIP's zero-shot head).  Takes ``head.init: text``."""
    dropout = _dropout("linear", dropout)
    normalize = _flag("linear", "normalize", normalize)
    from torch import nn  # lazy: torch

    from .fitted import LinearHead  # lazy: torch

    layers = [nn.Dropout(dropout)] if dropout else []
    return LinearHead(*layers, nn.Linear(in_features, num_classes), normalize=normalize)


def _flag(head: str, key: str, value) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"head '{head}': '{key}' must be true or false, got {value!r} "
                          f"(head.params.{key})")
    return value


def _positive(head: str, key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value <= 0:
        raise ConfigError(f"head '{head}': '{key}' must be a positive number, got {value!r} "
                          f"(head.params.{key})")
    return float(value)


def ncm_head(in_features: int, num_classes: int, scale: float = 10.0):
    """Nearest class mean on centred, L2-normalised features (fitted by strategy ``ncm``)."""
    scale = _positive("ncm", "scale", scale)
    from .fitted import NCMHead  # lazy: torch

    return NCMHead(in_features, num_classes, scale)


def knn_head(in_features: int, num_classes: int, k: int = 20, temperature: float = 0.07):
    """k nearest train features, cosine, votes exp(sim/T) (fitted by strategy ``knn``)."""
    k = _count("knn", "k", k, 1, 100_000)
    temperature = _positive("knn", "temperature", temperature)
    from .fitted import KNNHead  # lazy: torch

    return KNNHead(in_features, num_classes, k, temperature)


def mlp_head(in_features: int, num_classes: int, hidden: int = 512, dropout: float = 0.2,
             layers: int = 1):
    """``layers`` hidden layers of width ``hidden`` (GELU, dropout), then a linear classifier."""
    hidden = _count("mlp", "hidden", hidden, 1, 1_000_000)
    layers = _count("mlp", "layers", layers, 0, 64)
    dropout = _dropout("mlp", dropout)
    from torch import nn  # lazy: torch

    blocks, width = [], in_features
    for _ in range(layers):
        blocks += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
        width = hidden
    return nn.Sequential(*blocks, nn.Linear(width, num_classes))


@hookimpl
def register_heads(register):
    register("linear", linear_head, default=True,
             description="linear classifier on pooled features")
    register("mlp", mlp_head, description="MLP: hidden layers (hidden, layers, dropout)")
    register("ncm", ncm_head, description="nearest class mean, centred + L2-normalised (scale)")
    register("knn", knn_head, description="k nearest neighbours, cosine, weighted (k, temperature)")
