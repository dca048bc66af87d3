"""Built-in plugin: timm backbones (provider name ``timm``).

Importing this module and registering the provider imports neither torch nor timm: every
heavy import lives inside the provider's methods (see :mod:`zoo_timm.provider`).
"""
from zoo.hookspecs import hookimpl

from .provider import TimmProvider

__all__ = ["TimmProvider", "register_backbone_providers"]


@hookimpl
def register_backbone_providers(register):
    # default_model: what a job without `model` trains (first such provider in
    # registry.yaml's providers order)
    register("timm", TimmProvider(), default_model="resnet18",
             description="pytorch-image-models (timm) backbones")
