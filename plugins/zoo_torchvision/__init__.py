"""Built-in plugin: torchvision classification backbones (provider name ``torchvision``).

Importing this module and registering the provider imports neither torch nor torchvision:
every heavy import lives inside the provider's methods (see :mod:`zoo_torchvision.provider`).
"""
from zoo.hookspecs import hookimpl

from .provider import TorchvisionProvider

__all__ = ["TorchvisionProvider", "register_backbone_providers"]


@hookimpl
def register_backbone_providers(register):
    register("torchvision", TorchvisionProvider(), description="torchvision.models classifiers")
