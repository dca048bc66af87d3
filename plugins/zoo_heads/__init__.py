"""Built-in heads: ``linear`` (the default) and ``mlp``.

Factories build ``torch.nn`` modules, so torch is imported inside them (lazy-import rule).
"""
from zoo.hookspecs import hookimpl


def linear_head(in_features: int, num_classes: int, dropout: float = 0.0):
    """One linear layer on the pooled features (optional dropout before it)."""
    from torch import nn

    layers = [nn.Dropout(dropout)] if dropout else []
    return nn.Sequential(*layers, nn.Linear(in_features, num_classes))


def mlp_head(in_features: int, num_classes: int, hidden: int = 512, dropout: float = 0.2,
             layers: int = 1):
    """``layers`` hidden layers of width ``hidden`` (GELU, dropout), then a linear classifier."""
    from torch import nn

    blocks, width = [], in_features
    for _ in range(int(layers)):
        blocks += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
        width = hidden
    return nn.Sequential(*blocks, nn.Linear(width, num_classes))


@hookimpl
def register_heads(register):
    register("linear", linear_head, description="linear classifier on pooled features")
    register("mlp", mlp_head, description="MLP: hidden layers (hidden, layers, dropout)")
