"""Public import path kept for plugins (``docs/hooks.md``); the code is :mod:`zoo.engine.loop`."""
from zoo.engine.loop import EpochResult, FitState, evaluate, fit  # noqa: F401
