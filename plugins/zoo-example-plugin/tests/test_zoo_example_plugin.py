"""Tests of zoo-example-plugin, with zoo's plugin-testing kit (zoo.testing)."""
import pytest

import zoo_example_plugin as plugin
from zoo.errors import ConfigError
from zoo.testing import check_head, check_lazy_import


@pytest.fixture
def zoo_plugins():
    # zoo_catalog / zoo_run: zoo's built-ins + this plugin (installed or not)
    return [plugin]


def test_importing_imports_no_torch():
    check_lazy_import("zoo_example_plugin")


def test_head_contract():
    check_head(plugin.cosine_head)
    check_head(plugin.cosine_head, in_features=8, num_classes=5,
               scale=5.0, learn_scale=False)


def test_logits_are_scaled_cosines():
    import torch

    head = plugin.cosine_head(4, 2, scale=10.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, 0, 0, 0], [0, 1.0, 0, 0]]))
        x = torch.tensor([[1.0, 0, 0, 0]])
        expected = torch.tensor([[10.0, 0.0]])
        assert torch.allclose(head(x), expected, atol=1e-5)
        assert torch.allclose(head(3 * x), expected, atol=1e-5)


def test_bad_scale_is_a_one_line_error():
    with pytest.raises(ConfigError, match="scale must be positive"):
        plugin.cosine_head(4, 2, scale=0)


def test_registered(zoo_catalog):
    assert zoo_catalog.get("heads", "cosine").obj is plugin.cosine_head


def test_tiny_run(zoo_run):
    summary = zoo_run(head={"name": "cosine"}, train={"epochs": 2})
    assert summary["status"] == "completed"
