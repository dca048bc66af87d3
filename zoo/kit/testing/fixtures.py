"""The pytest plugin of zoo's testing kit (the ``pytest11`` entry point ``zoo``): fixtures
only, kept apart from the test utilities (as datasette keeps its pytest plugin apart from
``datasette.utils.testing``), so importing the utilities never registers fixtures.

Fixtures (available in every pytest session once zoo is installed)::

    zoo_plugins      the plugin objects under test; override it in your conftest/test file
                     (default: none)
    zoo_catalog      a Catalog with zoo's built-in plugins + ``zoo_plugins`` + the testing
                     components, and no other installed plugin
    zoo_run          ``zoo_run(**job) -> summary``: a tiny in-process ``zoo run`` on
                     ``zoo_catalog`` (run folders under ``tmp_path``)
    tiny_dataset     the train split of the ``tiny`` dataset (uint8 3×32×32 images, 3 classes)
    tiny_backbone    a tiny conv-net :class:`zoo.backbones.Backbone` (``testing:tiny_cnn``)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from zoo.catalog import Catalog
from zoo.jobspec import DataSpec
from zoo.kit.testing.components import (TINY_DATASET, TinyProvider, make_catalog, run_tiny,
                                        tiny_dataset_factory)


@pytest.fixture
def zoo_plugins() -> list:
    """The plugin objects under test; override in your tests, e.g.::

        @pytest.fixture
        def zoo_plugins():
            import my_zoo_plugin
            return [my_zoo_plugin]
    """
    return []


@pytest.fixture
def zoo_catalog(zoo_plugins: list) -> Catalog:
    """A Catalog of zoo's built-ins + ``zoo_plugins`` + the testing components (only)."""
    return make_catalog(*zoo_plugins)


@pytest.fixture
def zoo_run(zoo_catalog: Catalog, tmp_path: Path) -> Callable[..., dict]:
    """``zoo_run(**job) -> summary``: a tiny in-process run (see :func:`tiny_job`)."""
    def _run(**overrides: Any) -> dict:
        return run_tiny(zoo_catalog, tmp_path / "runs", **overrides)

    return _run


@pytest.fixture
def tiny_dataset() -> Any:
    """The train split of the ``tiny`` dataset (uint8 (3, 32, 32) images, 3 classes)."""
    return tiny_dataset_factory(DataSpec(name=TINY_DATASET), "train", None, 0)


@pytest.fixture
def tiny_backbone() -> Any:
    """``testing:tiny_cnn``: a conv-net Backbone with ``feature_dim`` 16, input 32×32."""
    return TinyProvider().create("tiny_cnn")
