"""Built-in plugin: timm backbones (provider name ``timm``).

Importing this module and registering the provider imports neither torch nor timm: every
heavy import lives inside the provider's methods (see :mod:`zoo_timm.provider`).
"""
from zoo.hookspecs import hookimpl

from .provider import TimmProvider

__all__ = ["TimmProvider", "register_backbone_providers"]


@hookimpl
def register_backbone_providers(register):
    register("timm", TimmProvider(), description="pytorch-image-models (timm) backbones")
