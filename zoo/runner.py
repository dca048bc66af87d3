"""Public import path kept for plugins (``docs/hooks.md``); the code is :mod:`zoo.engine.pipeline`."""
from zoo.run_context import RunContext  # noqa: F401
from zoo.engine.pipeline import run  # noqa: F401
