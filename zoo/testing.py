"""Public import path of the plugin authors' testing kit (``docs/hooks.md``).

The kit lives in :mod:`zoo.kit.testing`; this name is the stable one plugin authors import.
Its fixtures come from the ``pytest11`` entry point ``zoo`` (:mod:`zoo.kit.testing.fixtures`).
"""
from zoo.kit.testing import *  # noqa: F401,F403
from zoo.kit.testing import __all__  # noqa: F401
