"""zoo-example-plugin: registers the ``cosine`` head.

Importing this module imports no torch (zoo's lazy-import rule): the head's
module is imported by the factory, when zoo builds a model.
"""
from zoo.hookspecs import hookimpl

__version__ = "0.1.0"


def cosine_head(in_features, num_classes, scale=10.0, learn_scale=True):
    """Cosine-similarity classifier: logits = scale * cos(features, class weights)."""
    from zoo.errors import ConfigError

    if float(scale) <= 0:
        raise ConfigError(f"head 'cosine': scale must be positive, got {scale}")
    from .cosine import CosineClassifier

    return CosineClassifier(in_features, num_classes, float(scale), bool(learn_scale))


@hookimpl
def register_heads(register):
    register("cosine", cosine_head,
             description="cosine-similarity classifier (scale, learn_scale)")
