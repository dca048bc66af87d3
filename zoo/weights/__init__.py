"""Source weights: resolution (file → store → plugins → hub), zoo's store, the network check.

The names below are public (``docs/hooks.md``): plugins import them from ``zoo.weights``.
"""
from zoo.weights.resolve import (ResolvedWeights, WeightStore, load_into_backbone,
                                 read_safetensors, resolve_and_load, sha256_file, zoo_home)

__all__ = ["ResolvedWeights", "WeightStore", "load_into_backbone", "read_safetensors",
           "resolve_and_load", "sha256_file", "zoo_home"]
