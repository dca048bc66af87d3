"""Public import path kept for plugins (``docs/hooks.md``); the code is :mod:`zoo.engine.features`."""
from zoo.engine.features import FeatureCache  # noqa: F401
