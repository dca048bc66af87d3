"""Name resolution: provider prefixes, registry order, aliases, did-you-mean, ambiguity."""
from __future__ import annotations

import importlib

import pytest

from plugin_fixtures import make_plugin
from zoo.catalog import Catalog
from zoo.errors import AmbiguousNameError, UnknownComponentError

FAKE_PROVIDERS = """
from zoo.hookspecs import hookimpl

class Fake:
    def __init__(self, names):
        self.names = names
    def list_models(self, pretrained=False):
        return [n + ".v1" for n in self.names] if pretrained else list(self.names)
    def version(self):
        return "1"

@hookimpl
def register_backbone_providers(register):
    register("alpha", Fake(["net1", "net2", "shared"]))
    register("beta", Fake(["shared", "betanet"]))
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
    make_plugin(tmp_path, "zoo-fake-providers", "zoo_fake_providers_mod", FAKE_PROVIDERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    monkeypatch.setenv("ZOO_LOAD_PLUGINS", "zoo-fake-providers")
    return Catalog()


def test_prefix_and_bare_names(fake):
    assert fake.resolve_model("alpha:net1").full == "alpha:net1"
    assert fake.resolve_model("betanet").provider == "beta"
    assert fake.resolve_model("net2.v1").tag == "v1"


def test_ambiguous_name_needs_prefix_when_registry_gives_no_order(fake):
    with pytest.raises(AmbiguousNameError, match="alpha:shared, beta:shared"):
        fake.resolve_model("shared")
    assert fake.resolve_model("beta:shared").provider == "beta"


def test_registry_order_resolves_ambiguity(fake, tmp_path):
    from zoo.registry import load_registry

    reg_file = tmp_path / "reg.yaml"
    reg_file.write_text("providers: [beta, alpha]\naliases: {n1: net1}\n")
    cat = Catalog(fake.pm, load_registry(reg_file))
    assert cat.resolve_model("shared").provider == "beta"
    assert cat.resolve_model("n1").full == "alpha:net1"


def test_unknown_model_did_you_mean(fake):
    with pytest.raises(UnknownComponentError, match=r"unknown model 'nett1'.*did you mean net1"):
        fake.resolve_model("nett1")
    with pytest.raises(UnknownComponentError, match="unknown provider 'gamma'"):
        fake.resolve_model("gamma:net1")


def test_list_models_pattern_and_pretrained(fake):
    names = [r.full for r in fake.list_models("net*")]
    assert names == ["alpha:net1", "alpha:net2"]
    pre = [r.full for r in fake.list_models("beta:*", pretrained=True)]
    assert pre == ["beta:shared.v1", "beta:betanet.v1"]


def test_real_providers_both_have_resnet18():
    cat = Catalog()
    assert cat.resolve_model("resnet18").provider == "timm"  # registry.yaml: timm first
    assert cat.resolve_model("torchvision:resnet18").provider == "torchvision"
    with pytest.raises(UnknownComponentError, match="did you mean resnet18"):
        cat.resolve_model("resnt18")
    provs = {r.provider for r in cat.list_models("resnet18")}
    assert provs == {"timm", "torchvision"}
